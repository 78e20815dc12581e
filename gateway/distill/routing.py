"""`nanoroute router dataset`: a routing dataset from the gateway's own data: how well each model answered
a prompt, for the learned router to train on.

    {"id": "<request id>", "task": "...", "messages": [...], "tools": [...], "scores": {"<model>": 0..1, ...}}

one prompt a line (`tools` only when the request had some). Everything comes from the capture folder
(docs/configuration.md#capture), joined on the request's client key and request id, as `distill export`
joins feedback:

    tasks/<task>/   a captured request: the prompt, and the model that served it (`model`)
    comparisons/    a rollout's score of its model's answer to that request (the mean of several); the
                    model it was measured against (`reference`) scores `reference_score`
    feedback/       the client's `score` of the answer it was served, when in [0, 1]: it wins over both

A prompt asked more than once is one row (per task): each model's scores averaged over its requests, the
smallest request id its id. A row needs two models' scores; the others are dropped and counted. Rows are
sorted by task and id, so the same data makes the same file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from gateway.capture.sink import COMPARISONS, files_in, task_set, write_private
from gateway.distill.dataset import Owner, feedback, prompt, read_jsonl, request_key
from gateway.errors import DistillError
from gateway.files import private_dir
from gateway.settings import Settings


@dataclass
class Stats:
    records: int = 0
    unreadable: int = 0
    comparisons: Counter[str] = field(default_factory=Counter)
    feedback: Counter[str] = field(default_factory=Counter)
    dropped_one_model: int = 0
    models: Counter[str] = field(default_factory=Counter)


@dataclass
class Compared:
    """The comparisons of one request: each scored model's scores, and the models they were measured against."""
    scores: dict[str, list[float]] = field(default_factory=dict)
    references: set[str] = field(default_factory=set)
    records: int = 0
    joined: bool = False
    """A captured request has this client and request id."""


@dataclass
class Prompt:
    """One prompt of a task: its request ids and, per model, the score each request gave it."""
    asked: dict[str, Any]
    ids: list[str] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=dict)


def build(capture_dir: Path, out: Path, tasks: set[str] | None = None, reference_score: float = 1.0) -> dict[str, Any]:
    """Write the routing dataset of the captures in `capture_dir` (of `tasks`; all when None) to `out`;
    returns the stats. Raises DistillError when there is nothing to read, or it cannot be read or written."""
    if not 0 <= reference_score <= 1:
        raise DistillError("--reference-score must be between 0 and 1")
    stats = Stats()
    try:
        folders = task_folders(capture_dir, tasks)
        compared = comparisons(capture_dir, stats)
        prompts = collect(folders, compared, feedback(capture_dir), reference_score, stats)
    except OSError as exc:
        raise DistillError(f"cannot read the captures in {capture_dir}: {exc}") from None
    rows = finish(prompts, stats)
    try:
        private_dir(out.parent)  # the rows hold captured prompts, kept like the captures
        write_private(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    except OSError as exc:
        raise DistillError(f"cannot write {out}: {exc}") from None
    stats.comparisons["joined"] = sum(c.records for c in compared.values() if c.joined)
    stats.comparisons["unmatched"] = sum(c.records for c in compared.values() if not c.joined)
    return {
        "captures": str(capture_dir), "out": str(out), "tasks": [task for task, _ in folders],
        "reference_score": reference_score, "records": stats.records, "unreadable": stats.unreadable,
        "comparisons": {k: stats.comparisons[k] for k in ("read", "joined", "unmatched", "invalid")},
        "feedback": {k: stats.feedback[k] for k in ("used", "skipped")},
        "rows": len(rows), "dropped_one_model": stats.dropped_one_model, "models": dict(sorted(stats.models.items())),
    }


def task_folders(capture_dir: Path, tasks: set[str] | None) -> list[tuple[str, Path]]:
    """Each task's capture folder, by name; raises DistillError when one asked for, or all, have no captures."""
    if tasks is not None:
        found = [(task, capture_dir / task_set(task)) for task in sorted(tasks)]
        for task, folder in found:
            if not files_in(folder):
                raise DistillError(f"no captures for task '{task}' in {folder}")
        return found
    root = capture_dir / "tasks"
    found = [(unquote(p.name), p) for p in sorted(root.iterdir()) if files_in(p)] if root.is_dir() else []
    if not found:
        raise DistillError(f"no captures in {root}: is capture on for a policy (docs/configuration.md), and is "
                           "NANOROUTE_CAPTURE_DIR or --captures this folder?")
    return found


def comparisons(capture_dir: Path, stats: Stats) -> dict[Owner, Compared]:
    """The rollouts' comparisons, by request; one without a model, a reference or a score in [0, 1] is
    counted invalid."""
    found: dict[Owner, Compared] = {}
    for row in read_jsonl(capture_dir / COMPARISONS):
        stats.comparisons["read"] += 1
        score = score_of(row) if row is not None else None
        if row is None or score is None or not all(isinstance(row.get(k), str)
                                                   for k in ("request_id", "model", "reference")):
            stats.comparisons["invalid"] += 1
            continue
        entry = found.setdefault((row.get("client"), row["request_id"]), Compared())
        entry.scores.setdefault(row["model"], []).append(score)
        entry.references.add(row["reference"])
        entry.records += 1
    return found


def score_of(entry: dict[str, Any]) -> float | None:
    """`entry`'s `score` when it is a number in [0, 1], else None."""
    score = entry.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        return None
    return float(score)


def collect(folders: Iterable[tuple[str, Path]], compared: dict[Owner, Compared],
            notes: dict[Owner, dict[str, Any]], reference_score: float, stats: Stats) -> dict[tuple[str, str], Prompt]:
    """Every captured prompt of `folders`, by task and prompt, with the scores its requests gave each model."""
    prompts: dict[tuple[str, str], Prompt] = {}
    for task, folder in folders:
        for row in read_jsonl(folder):
            stats.records += 1
            asked = prompt(row) if row is not None else None
            if row is None or asked is None:
                stats.unreadable += 1
                continue
            owner: Owner = (row.get("client"), str(row.get("request_id")))
            scores = request_scores(row, compared.get(owner), notes.get(owner), reference_score, stats)
            entry = prompts.setdefault((task, request_key(asked)), Prompt(asked))
            entry.ids.append(owner[1])
            for model, score in scores.items():
                entry.scores.setdefault(model, []).append(score)
    return prompts


def request_scores(row: dict[str, Any], found: Compared | None, note: dict[str, Any] | None,
                   reference_score: float, stats: Stats) -> dict[str, float]:
    """One captured request's score of each model: its comparisons', the reference default, its feedback's."""
    scores: dict[str, float] = {}
    if found is not None:
        found.joined = True
        scores = {ref: reference_score for ref in sorted(found.references)}
        scores.update({model: mean(values) for model, values in found.scores.items()})
    if note is not None and "score" in note:
        score = score_of(note)
        if score is None:
            stats.feedback["skipped"] += 1
        elif isinstance(row.get("model"), str):
            stats.feedback["used"] += 1
            scores[row["model"]] = score
    return scores


def finish(prompts: dict[tuple[str, str], Prompt], stats: Stats) -> list[dict[str, Any]]:
    """The rows: prompts scored for two models or more, sorted by task, then id (then prompt)."""
    rows: list[tuple[tuple[str, str, str], dict[str, Any]]] = []
    for (task, key), entry in prompts.items():
        if len(entry.scores) < 2:
            stats.dropped_one_model += 1
            continue
        stats.models.update(entry.scores.keys())
        first = min(entry.ids)
        scores = {model: round(mean(entry.scores[model]), 6) for model in sorted(entry.scores)}
        rows.append(((task, first, key), {"id": first, "task": task, **entry.asked, "scores": scores}))
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


def mean(values: list[float]) -> float:
    """The mean of `values`, summed in order so that the same values give the same figure in any order."""
    return math.fsum(sorted(values)) / len(values)


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """`nanoroute router dataset`'s arguments."""
    parser.add_argument("--captures", type=Path, metavar="DIR",
                        help="the capture folder (default: NANOROUTE_CAPTURE_DIR, DATA_DIR/captures)")
    parser.add_argument("--task", action="append", dest="tasks", metavar="T",
                        help="only this task's captures (repeatable; default: every task)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="the JSONL file to write")
    parser.add_argument("--reference-score", type=float, default=1.0, metavar="F",
                        help="the score of the answer a rollout's comparison is measured against (default 1.0)")


def run_dataset(args: argparse.Namespace) -> int:
    """Build the dataset; print its stats (and where it went) as one JSON object. Exit 1 on a DistillError."""
    try:
        stats = build(args.captures or Settings().capture_path, args.out,
                      set(args.tasks) if args.tasks else None, args.reference_score)
    except DistillError as exc:
        print(f"nanoroute router dataset: {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(stats))
    return 0
