"""Capture files as the gateway writes them, for the distill tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SYSTEM = {"role": "system", "content": "Reply with one queue name only."}


def row(prompt: str, answer: str | None, *, request_id: str, model: str = "teacher", tools: list[Any] | None = None,
        tool_calls: list[Any] | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"model": "gpt-x", "messages": [SYSTEM, {"role": "user", "content": prompt}]}
    if tools:
        request["tools"] = tools
    answer_msg: dict[str, Any] = {"role": "assistant", "content": answer}
    if tool_calls:
        answer_msg["tool_calls"] = tool_calls
    return {"ts": "2026-11-25T00:00:00.000Z", "request_id": request_id, "task": "triage", "policy": "triage",
            "model": model, "upstream_model": f"up-{model}", "stream": False, "request": request,
            "answer": answer_msg, "finish_reason": "stop", "usage": {"prompt_tokens": 9, "completion_tokens": 1}}


def write_captures(root: Path, rows: Sequence[dict[str, Any] | str], task: str = "triage", name: str = "a") -> None:
    write_set(root / "tasks" / task, rows, name)


def write_feedback(root: Path, entries: list[dict[str, Any]]) -> None:
    write_set(root / "feedback", entries)


def write_comparisons(root: Path, entries: Sequence[dict[str, Any] | str]) -> None:
    write_set(root / "comparisons", entries)


def write_set(folder: Path, entries: Sequence[dict[str, Any] | str], name: str = "1") -> None:
    """One file of a file set, as the gateway writes it (a string is written as it is: a torn line)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [e if isinstance(e, str) else json.dumps(e) for e in entries]
    (folder / f"20261125T000000000000Z-{name}.jsonl").write_text("".join(line + "\n" for line in lines))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
