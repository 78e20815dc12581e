"""A chat completion as a Message, and the gateway's errors in Anthropic's envelope."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import NanorouteError
from gateway.protocols.anthropic.request import _is_int

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# -- answer: chat completion -> Message ----------------------------------------------------------------------


def from_chat(reply: dict[str, Any], message_id: str) -> dict[str, Any]:
    """A chat completion as a Messages response (its first choice)."""
    choices = reply.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    content: list[dict[str, Any]] = []
    refusal = _reply_text(message.get("refusal"))
    if text := _reply_text(message.get("content")) or refusal:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for i, call in enumerate(calls if isinstance(calls, list) else []):
        if isinstance(call, dict):
            content.append(_tool_use(call, f"{message_id}_tool_{i}"))
    usage = reply.get("usage")
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": reply.get("model") or "",
        "content": content,
        "stop_reason": _stop_reason(choice.get("finish_reason"), any(b["type"] == "tool_use" for b in content),
                                    bool(refusal)),
        "stop_sequence": None,
        "usage": _usage(usage if isinstance(usage, dict) else None),
    }


def _reply_text(content: Any) -> str:
    """A message's text: a string, or (some servers) a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _tool_use(call: dict[str, Any], fallback_id: str) -> dict[str, Any]:
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    return {
        "type": "tool_use",
        "id": call.get("id") or fallback_id,
        "name": function.get("name") or "",
        "input": _arguments(function.get("arguments")),
    }


def _arguments(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as an object; `{}` when they are not one (empty, cut short, or not an object)."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str | bytes):
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _stop_reason(finish_reason: Any, called: bool, refused: bool = False) -> str:
    """Anthropic's stop reason for a chat finish reason. An answer that calls a tool stopped for `tool_use`
    even where chat says `stop`: OpenAI and vLLM say so for a tool named in `tool_choice`. One that holds a
    refusal (OpenAI's `refusal`) stopped for `refusal`, as Anthropic's own do."""
    reason = _STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"
    if reason != "end_turn":
        return reason
    return "tool_use" if called else "refusal" if refused else reason


def _usage(usage: dict[str, Any] | None) -> dict[str, int]:
    """Anthropic's usage from OpenAI's; cached prompt tokens are moved out of `input_tokens`."""
    usage = usage or {}
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    result = {"input_tokens": prompt if _is_int(prompt) else 0,
              "output_tokens": completion if _is_int(completion) else 0}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if _is_int(cached):
        cached = min(cached, result["input_tokens"])
        result["input_tokens"] -= cached
        result["cache_read_input_tokens"] = cached
    return result



# -- errors --------------------------------------------------------------------------------------------------


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def status_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(exc: NanorouteError) -> bytes:
    """A gateway error in Anthropic's envelope: `{"type": "error", "error": {"type", "message"}}`."""
    return orjson.dumps({"type": "error", "error": {"type": status_type(exc.status), "message": exc.public}})


def error_event(exc: NanorouteError) -> bytes:
    """A gateway error as a Messages stream `error` event."""
    return b"event: error\ndata: " + error_body(exc) + b"\n\n"

