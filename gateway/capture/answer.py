"""The assistant's answer of a captured request, as one chat message: from a JSON reply, or put together
from the events of a stream (content pieces joined, tool calls merged by index). The first choice only.

Runs off the request path: in the capture writer's thread, and in a rollout's comparison.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.record import MAX_KEPT_BYTES, RequestRecord

Answer = tuple[dict[str, Any], str | None]
"""(the assistant message, its finish_reason)"""

_EVENT_END = re.compile(rb"\r?\n\r?\n")


def kept(rec: RequestRecord) -> Answer | None:
    """The answer as the request's record kept it (`rec.keep`): from its JSON reply, or from its stream's
    events; None when it kept none, or only part of one (over `MAX_KEPT_BYTES`)."""
    if rec.reply is not None:
        return from_reply(rec.reply)
    if rec.events and rec.kept_bytes <= MAX_KEPT_BYTES:
        return from_stream(b"".join(rec.events))
    return None


def from_reply(reply: dict[str, Any]) -> Answer:
    choice = _first_choice(reply)
    message = choice.get("message") if choice is not None else None
    if not isinstance(message, dict):
        return {"role": "assistant", "content": None}, None
    out: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        out["tool_calls"] = message["tool_calls"]
    return out, choice.get("finish_reason") if choice is not None else None


def from_stream(data: bytes) -> Answer:
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for event in _EVENT_END.split(data):
        for line in event.splitlines():
            if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                continue
            try:
                obj = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                continue
            choice = _first_choice(obj) if isinstance(obj, dict) else None
            if choice is None:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                content.append(delta["content"])
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    _merge_call(calls, call)
            finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) if content or not calls else None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message, finish


def _first_choice(obj: dict[str, Any]) -> dict[str, Any] | None:
    for choice in obj.get("choices") or ():
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    return None


def _merge_call(calls: dict[int, dict[str, Any]], piece: dict[str, Any]) -> None:
    index = piece.get("index", 0)
    call = calls.setdefault(index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    if piece.get("id"):
        call["id"] = piece["id"]
    if piece.get("type"):
        call["type"] = piece["type"]
    fn = piece.get("function") or {}
    if fn.get("name"):
        call["function"]["name"] += fn["name"]
    if isinstance(fn.get("arguments"), str):
        call["function"]["arguments"] += fn["arguments"]
