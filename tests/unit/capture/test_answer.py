"""The answer of a captured request (gateway/capture/answer.py): from a JSON reply and from stream events."""

from __future__ import annotations

import json
from typing import Any

from gateway.capture.answer import from_reply, from_stream


def events(*chunks: dict[str, Any], crlf: bool = False) -> bytes:
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    return b"".join(b"data: " + json.dumps(c).encode() + sep for c in chunks) + b"data: [DONE]" + sep


def delta(d: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": index, "delta": d, "finish_reason": finish}]}


def test_json_reply() -> None:
    reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "billing", "refusal": None},
                          "finish_reason": "stop"}]}
    assert from_reply(reply) == ({"role": "assistant", "content": "billing"}, "stop")


def test_json_reply_with_tool_calls() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": calls},
                          "finish_reason": "tool_calls"}]}
    assert from_reply(reply) == ({"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls")


def test_a_reply_without_choices() -> None:
    assert from_reply({"error": "x"}) == ({"role": "assistant", "content": None}, None)


def test_stream_text_is_joined_and_other_choices_ignored() -> None:
    data = events(delta({"role": "assistant", "content": ""}), delta({"content": "Hel"}),
                  delta({"content": "other"}, index=1), delta({"content": "lo"}), delta({}, "stop"),
                  {"choices": [], "usage": {"prompt_tokens": 1}}, crlf=True)
    assert from_stream(data) == ({"role": "assistant", "content": "Hello"}, "stop")


def test_stream_tool_calls_are_merged_by_index() -> None:
    data = events(
        delta({"role": "assistant", "tool_calls": [
            {"index": 0, "id": "c1", "type": "function", "function": {"name": "look", "arguments": ""}}]}),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"q": '}}]}),
        delta({"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "other", "arguments": "{}"}}]}),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}),
        delta({}, "tool_calls"))
    message, finish = from_stream(data)
    assert finish == "tool_calls"
    assert message == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "look", "arguments": '{"q": "x"}'}},
        {"id": "c2", "type": "function", "function": {"name": "other", "arguments": "{}"}}]}


def test_events_that_are_not_json_are_skipped() -> None:
    data = b"data: {not json\n\n: a comment\n\n" + events(delta({"content": "ok"}))
    assert from_stream(data)[0] == {"role": "assistant", "content": "ok"}
