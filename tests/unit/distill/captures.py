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
    folder = root / "tasks" / task
    folder.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (folder / f"20261125T000000000000Z-{name}.jsonl").write_text("".join(line + "\n" for line in lines))


def write_feedback(root: Path, entries: list[dict[str, Any]]) -> None:
    folder = root / "feedback"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "20261125T000000000000Z-1.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
