"""Routing datasets: JSONL, one prompt a line, each scored for two or more models (docs/router.md).

    {"id": "...", "task": "triage", "messages": [...], "scores": {"small-adapter": 1.0, "gpt-4o": 1.0}}
    {"prompt": "...", "scores": {"a": 0.0, "b": 1.0, "c": 0.5}}

`messages` (chat) or `prompt` (text) holds the prompt, `scores` each model's score from 0 (wrong) to 1
(right); `id` and `task` are optional, other keys are ignored. `nanoroute router dataset` writes this format
from the gateway's captures, rollout comparisons and feedback; an eval set with per-model correctness is
the same thing.

A row is held out by a hash of its prompt and the seed, so a prompt is on the same side however the file
grows or is reordered, and no prompt is both trained on and held out. With a group field (`router train
--group template`), by a hash of that field instead: rows that share it (prompts made from one template, one
conversation's turns, one customer's tickets) are all on one side, and the held-out figures say how the
router does on groups it has never seen.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


class DataError(ValueError):
    """A dataset that cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Row:
    body: dict[str, Any]
    """The row as read: the prompt is its `messages` or `prompt`, as in a request."""
    scores: dict[str, float]
    key: str
    """The prompt as canonical JSON: what the split is decided on."""


def read(path: Path) -> list[Row]:
    """Every row of a dataset file; raises DataError at the first line that is not a valid row."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise DataError(f"{path}: {exc.strerror or exc}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(parse(orjson.loads(line)))
        except (orjson.JSONDecodeError, DataError) as exc:
            raise DataError(f"{path}:{number}: {exc}") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def parse(obj: Any) -> Row:
    if not isinstance(obj, dict):
        raise DataError("a row must be a JSON object")
    messages, prompt = obj.get("messages"), obj.get("prompt")
    if isinstance(messages, list) and messages:
        key = orjson.dumps(messages, option=orjson.OPT_SORT_KEYS).decode()
    elif isinstance(prompt, str) and prompt:
        key = prompt
    else:
        raise DataError("a row needs 'messages' (a non-empty list) or 'prompt' (a non-empty string)")
    scores = obj.get("scores")
    if not isinstance(scores, dict) or len(scores) < 2:
        raise DataError("'scores' must give two or more models a score")
    for model, score in scores.items():
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0.0 <= score <= 1.0 \
                or not math.isfinite(score):
            raise DataError(f"the score of '{model}' must be a number from 0 to 1")
    return Row(obj, {m: float(s) for m, s in scores.items()}, key)


def split_key(row: Row, group: str | None = None) -> str:
    """What decides a row's side: its `group` field when it has one, else its prompt."""
    value = row.body.get(group) if group is not None else None
    return row.key if value is None else f"{group}\0{value}"


def held_out(row: Row, seed: int, fraction: float, group: str | None = None) -> bool:
    return unit(seed, split_key(row, group)) < fraction


def unit(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by the seed and the key."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
