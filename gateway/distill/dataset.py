"""`nanoroute distill export`: a task's captures, joined with their feedback, as a chat SFT dataset.

    <out>/train.jsonl   {"messages": [...the request's messages, the answer that served it]} a line
    <out>/eval.jsonl    the held-out split, the same format (its answers are what `eval` scores against)
    <out>/stats.json    what was read, dropped and kept, and why

One example per prompt (the request's messages and tools): the newest answer wins. Whether a prompt is
held out is decided by a hash of the prompt and the seed, so a prompt stays in its split however the
data grows, and export is deterministic. Filters drop answers before deduplication, so a prompt whose
newest answer was rated badly keeps an older, good one.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.capture.sink import FEEDBACK, files_in, task_set, write_private
from gateway.errors import DistillError
from gateway.files import private_dir


@dataclass(frozen=True)
class Export:
    task: str
    capture_dir: Path
    out: Path
    eval_fraction: float = 0.2
    seed: int = 0
    models: frozenset[str] = frozenset()
    """Only answers from these models (catalog or upstream names); all when empty."""
    min_score: float | None = None
    """Drop answers whose feedback score is below this (answers without a score stay)."""
    drop_labels: frozenset[str] = frozenset()
    """Drop answers whose feedback label is one of these."""


@dataclass
class Stats:
    records: int = 0
    unreadable: int = 0
    no_answer: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    models: Counter[str] = field(default_factory=Counter)
    with_feedback: int = 0


def read_jsonl(folder: Path) -> Iterator[dict[str, Any] | None]:
    """Each line of a file set's files, oldest first; None for a line that is not a JSON object (a file
    being written may end in half a line)."""
    for path in files_in(folder):
        with path.open("rb") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                yield row if isinstance(row, dict) else None


Owner = tuple[str | None, str]
"""A request as feedback names it: the client key id that made it (None with no keys), and its request id."""


def feedback(capture_dir: Path) -> dict[Owner, dict[str, Any]]:
    """The latest score and label each client gave each of its request ids (a later entry overrides an
    earlier one's fields). Feedback counts for a request only when the key that made it gave it: another
    key naming the same request id, or sending a request with the same X-Request-Id, changes nothing."""
    found: dict[Owner, dict[str, Any]] = {}
    for row in read_jsonl(capture_dir / FEEDBACK):
        if row is None or not isinstance(row.get("request_id"), str):
            continue
        entry = found.setdefault((row.get("client"), row["request_id"]), {})
        entry.update({k: row[k] for k in ("score", "label") if row.get(k) is not None})
    return found


def prompt(row: dict[str, Any]) -> dict[str, Any] | None:
    """A captured request's prompt: `{"messages": [...]}`, with its `"tools"` when it has some; None when it
    has no messages."""
    request = row.get("request")
    if not isinstance(request, dict):
        return None
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return None
    out: dict[str, Any] = {"messages": messages}
    if request.get("tools"):
        out["tools"] = request["tools"]
    return out


def example(row: dict[str, Any]) -> dict[str, Any] | None:
    """The SFT example of a captured request: its messages, then the answer; None when it has no answer."""
    asked, answer = prompt(row), row.get("answer")
    if asked is None or not isinstance(answer, dict):
        return None
    reply: dict[str, Any] = {"role": "assistant"}
    if answer.get("content"):
        reply["content"] = answer["content"]
    if answer.get("tool_calls"):
        reply["tool_calls"] = answer["tool_calls"]
    if len(reply) == 1:
        return None
    return {**asked, "messages": [*asked["messages"], reply]}


def prompt_key(ex: dict[str, Any]) -> str:
    """The key of an example's prompt: its messages but the answer, and its tools."""
    return request_key({"messages": ex["messages"][:-1], "tools": ex.get("tools")})


def request_key(asked: dict[str, Any]) -> str:
    """The key of a prompt (`prompt`'s): a hash of its messages and tools, the same however it is spelled."""
    found = {"messages": asked["messages"], "tools": asked.get("tools")}
    return hashlib.sha256(json.dumps(found, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def held_out(key: str, seed: int, fraction: float) -> bool:
    """Whether a prompt is in the eval split: a uniform hash of it and the seed, under `fraction`."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _kept(row: dict[str, Any], opts: Export, notes: dict[Owner, dict[str, Any]], stats: Stats) -> bool:
    if opts.models and row.get("model") not in opts.models and row.get("upstream_model") not in opts.models:
        stats.dropped["model"] += 1
        return False
    note = notes.get((row.get("client"), row.get("request_id") or ""))
    if note is None:
        return True
    stats.with_feedback += 1
    score = note.get("score")
    if opts.min_score is not None and isinstance(score, int | float) and score < opts.min_score:
        stats.dropped["score"] += 1
        return False
    if note.get("label") in opts.drop_labels:
        stats.dropped["label"] += 1
        return False
    return True


def export(opts: Export) -> dict[str, Any]:
    """Write train.jsonl, eval.jsonl and stats.json into `opts.out`; returns the stats."""
    if not 0 <= opts.eval_fraction < 1:
        raise DistillError("--eval-fraction must be at least 0 and below 1")
    folder = opts.capture_dir / task_set(opts.task)
    if not files_in(folder):
        raise DistillError(f"no captures for task '{opts.task}' in {folder}: is capture on for its policy "
                           "(docs/configuration.md), and is NANOROUTE_CAPTURE_DIR or --capture-dir this folder?")
    notes = feedback(opts.capture_dir)
    stats = Stats()
    newest: dict[str, tuple[dict[str, Any], str]] = {}
    for row in read_jsonl(folder):
        stats.records += 1
        if row is None:
            stats.unreadable += 1
            continue
        ex = example(row)
        if ex is None:
            stats.no_answer += 1
            continue
        if not _kept(row, opts, notes, stats):
            continue
        key = prompt_key(ex)
        if key in newest:
            stats.duplicates += 1
        newest[key] = (ex, str(row.get("model")))  # a prompt's newest answer wins
    train: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    # In the order of the prompts' keys, not of their arrival: concurrent requests are captured in whatever
    # order they end, and the same captures must make the same dataset (and the same training run).
    for key, (ex, model) in sorted(newest.items()):
        stats.models[model] += 1
        (held if held_out(key, opts.seed, opts.eval_fraction) else train).append(ex)
    if not train:
        raise DistillError(f"no training examples left for task '{opts.task}' (of {stats.records} captured); "
                           "see the filters")
    private_dir(opts.out)  # the examples are captured prompts and answers, kept like the captures
    for name, rows in (("train.jsonl", train), ("eval.jsonl", held)):
        write_private(opts.out / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    summary = {
        "task": opts.task, "captures": str(folder), "exported_at": _now(),
        "records": stats.records, "unreadable": stats.unreadable, "no_answer": stats.no_answer,
        "dropped": dict(stats.dropped), "duplicates": stats.duplicates, "with_feedback": stats.with_feedback,
        "examples": len(newest), "train": len(train), "eval": len(held),
        "eval_fraction": opts.eval_fraction, "seed": opts.seed, "models": dict(stats.models),
        "filters": {"models": sorted(opts.models), "min_score": opts.min_score,
                    "drop_labels": sorted(opts.drop_labels)},
    }
    (opts.out / "stats.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    return summary


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
