"""A chat completion as a Response object, and the gateway's errors as the Responses API words them."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import NanorouteError
from gateway.protocols.responses.request import _dict, _is_int, _str

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


# -- answer: chat completion -> Response ---------------------------------------------------------------------


def from_chat(reply: dict[str, Any], request: dict[str, Any], response_id: str, created_at: int) -> dict[str, Any]:
    """A chat completion as a Response object; `request` is the Responses request, whose settings it echoes."""
    choices = reply.get("choices")
    choice = _dict(choices[0]) if isinstance(choices, list) and choices else {}
    message = _dict(choice.get("message"))
    output: list[dict[str, Any]] = []
    parts = []
    if isinstance(content := message.get("content"), str) and content:
        parts.append(_text_part(content, _logprobs(choice)))
    if isinstance(refusal := message.get("refusal"), str) and refusal:
        parts.append(_refusal_part(refusal))
    if parts:
        output.append(_message_item(_item_id("msg", response_id, 0), parts, "completed"))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        n = len(output)
        function = _dict(_dict(call).get("function"))
        output.append(_call_item(_item_id("fc", response_id, n), _call_id(_dict(call).get("id"), response_id, n),
                                 _str(function.get("name")), _str(function.get("arguments")), "completed"))
    reason = _INCOMPLETE.get(_str(choice.get("finish_reason")))
    if reason is not None and output:
        output[-1]["status"] = "incomplete"
    model = reply.get("model") or request.get("model")
    return _response(request, response_id, created_at, model, output, _usage(reply.get("usage")), reason)


def _response(request: dict[str, Any], response_id: str, created_at: int, model: Any, output: list[dict[str, Any]],
              usage: dict[str, Any] | None, reason: str | None, status: str | None = None) -> dict[str, Any]:
    """A Response object, echoing the request's settings as OpenAI does."""
    reasoning = _dict(request.get("reasoning"))
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status or ("incomplete" if reason else "completed"),
        "background": bool(request.get("background")),
        "error": None,
        "incomplete_details": {"reason": reason} if reason else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "metadata": request.get("metadata") or {},
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": request.get("safety_identifier"),
        "service_tier": request.get("service_tier"),
        "store": request.get("store") is not False,
        "temperature": request.get("temperature"),
        "text": {"format": {"type": "text"}, **_dict(request.get("text"))},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "top_logprobs": request.get("top_logprobs"),
        "top_p": request.get("top_p"),
        "truncation": request.get("truncation") or "disabled",
        "usage": usage,
        "user": request.get("user"),
    }


def _usage(usage: Any) -> dict[str, Any] | None:
    """Chat usage as Responses usage; None when the upstream reported none."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    cached = _dict(usage.get("prompt_tokens_details"))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": _count(cached.get("cached_tokens")),
                                 "cache_write_tokens": _count(cached.get("cache_write_tokens"))},
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": _count(_dict(usage.get("completion_tokens_details")).get("reasoning_tokens"))},
        "total_tokens": _count(usage.get("total_tokens")) or prompt + completion,
    }


def _logprobs(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat choice's token logprobs as Responses logprobs (which need each token's bytes)."""
    content = _dict(choice.get("logprobs")).get("content")
    return [_logprob(lp) for lp in content if isinstance(lp, dict)] if isinstance(content, list) else []


def _logprob(lp: dict[str, Any]) -> dict[str, Any]:
    top = lp.get("top_logprobs")
    tops = top if isinstance(top, list) else []
    return {**_token(lp), "top_logprobs": [_token(t) for t in tops if isinstance(t, dict)]}


def _token(lp: dict[str, Any]) -> dict[str, Any]:
    token = _str(lp.get("token"))
    return {"token": token, "bytes": lp.get("bytes") or list(token.encode()), "logprob": lp.get("logprob", 0.0)}


def _message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _text_part(text: str, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}


def _refusal_part(refusal: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": refusal}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "arguments": arguments, "call_id": call_id,
            "name": name}


def _item_id(prefix: str, response_id: str, index: int) -> str:
    return f"{prefix}_{response_id.removeprefix('resp_')}_{index}"


def _call_id(given: Any, response_id: str, index: int) -> str:
    return given if isinstance(given, str) and given else _item_id("call", response_id, index)


def _count(value: Any) -> int:
    return value if _is_int(value) else 0


# -- errors --------------------------------------------------------------------------------------------------


def error_body(exc: NanorouteError) -> bytes:
    """OpenAI's error envelope: the Responses API answers errors as chat completions does."""
    return exc.envelope()


def error_event(exc: NanorouteError) -> bytes:
    """The Responses stream's `error` event, for a stream that was not translated (sequence number 0).
    OpenAI's Python SDK does not raise on it: it yields it as a `ResponseErrorEvent`."""
    return _error_event(exc, 0)


def _error_event(exc: NanorouteError, sequence_number: int) -> bytes:
    body = {"type": "error", "code": exc.code, "message": exc.public, "param": exc.param,
            "sequence_number": sequence_number}
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
