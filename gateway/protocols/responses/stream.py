"""Chat completion chunks as the Responses API's stream events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import NanorouteError, UpstreamError, UpstreamMalformed, UpstreamServerError
from gateway.protocols.responses.answer import (
    _INCOMPLETE,
    _call_id,
    _call_item,
    _error_event,
    _item_id,
    _logprobs,
    _message_item,
    _refusal_part,
    _response,
    _text_part,
    _usage,
)
from gateway.protocols.responses.request import _dict, _is_int, _str

_MAX_LINE = 1 << 20


# -- stream: chat completion chunks -> Responses events ------------------------------------------------------


@dataclass(slots=True)
class _Part:
    kind: str  # output_text or refusal
    index: int
    text: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False

    def whole(self) -> dict[str, Any]:
        text = "".join(self.text)
        return _text_part(text, self.logprobs) if self.kind == "output_text" else _refusal_part(text)


@dataclass(slots=True)
class _Message:
    id: str
    index: int
    parts: list[_Part] = field(default_factory=list)


@dataclass(slots=True)
class _Call:
    id: str
    index: int
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class StreamTranslator:
    """Chat completion chunks (SSE bytes, split anywhere) -> the Responses stream's events.

    `response.created` and `response.in_progress` go out with the first chunk; then each output item's
    events as its deltas arrive; the item is done when the next one begins or the choice finishes. The
    last event, `response.completed` (or `response.incomplete`), carries the whole Response with its usage,
    so it waits for the usage chunk that follows the finish reason, for `[DONE]`, or for `close()`.
    """

    def __init__(self, request: dict[str, Any], response_id: str, created_at: int) -> None:
        self.request = request
        self.response_id = response_id
        self.created_at = created_at
        self.done = False
        """The last event (`response.completed` or `response.incomplete`) was produced."""
        self.usage: dict[str, Any] | None = None
        """The last chat usage object seen."""
        self.final: dict[str, Any] | None = None
        """The whole Response, once done: what the store keeps."""
        self._model: Any = request.get("model")
        self._seq = 0
        self._out: list[bytes] = []
        self._unsent = b""
        self._buf = b""
        self._data: list[bytes] = []
        self._started = self._failed = False
        self._finish: str | None = None
        self._items: list[dict[str, Any]] = []
        self._open: _Message | _Call | None = None
        self._calls: dict[int, _Call] = {}
        self._next = 0

    def feed(self, data: bytes) -> bytes:
        """The events that `data` (with what was pending) completes."""
        if self.done or self._failed:
            return b""
        buf = self._buf + data if self._buf else data
        end = buf.rfind(b"\n")
        self._buf = buf[end + 1:]
        try:
            if len(self._buf) > _MAX_LINE:
                raise UpstreamMalformed(f"the upstream sent a line longer than {_MAX_LINE} bytes")
            if end >= 0:
                for line in buf[:end].split(b"\n"):
                    self._line(line)
        except UpstreamError:
            self._fail()
            raise
        return self._flush()

    def close(self) -> bytes:
        """The upstream ended: the events not sent yet, `response.completed` last. Idempotent."""
        if self.done or self._failed:
            return b""
        try:
            if self._buf:
                rest, self._buf = self._buf, b""
                self._line(rest)
            self._dispatch()
            if not self.done:
                self._complete()
        except UpstreamError:
            self._fail()
            raise
        return self._flush()

    def error_event(self, exc: NanorouteError) -> bytes:
        """The Responses stream's `error` event, numbered after the events sent; preceded by the events that
        the chunk which failed had produced, so that no sequence number is skipped."""
        out = self._unsent + _error_event(exc, self._seq)
        self._seq += 1
        self._unsent = b""
        return out

    def _flush(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _fail(self) -> None:
        self._failed = True
        self._unsent = self._flush()

    def _line(self, line: bytes) -> None:
        if line[-1:] == b"\r":
            line = line[:-1]
        if not line:
            self._dispatch()
        elif line.startswith(b"data:"):
            self._data.append(line[6:] if line[5:6] == b" " else line[5:])
        # `event:`, `id:` and `retry:` fields and `:` comments say nothing in a chat stream: skipped

    def _dispatch(self) -> None:
        """The event whose data lines were read: one chunk, parsed once."""
        if not self._data or self.done:
            self._data.clear()
            return
        payload = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        self._data.clear()
        if payload.startswith(b"[DONE]"):
            self._complete()
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamMalformed(f"the upstream sent an event whose data is not JSON: {payload[:80]!r}") from None
        if not isinstance(chunk, dict):
            raise UpstreamMalformed("the upstream sent an event whose data is not a JSON object")
        self._chunk(chunk)

    def _chunk(self, chunk: dict[str, Any]) -> None:
        if "choices" not in chunk and (chunk.get("error") is not None or chunk.get("object") == "error"):
            err = chunk.get("error") or chunk  # OpenAI's envelope, or vLLM's bare error object
            said = err.get("message") if isinstance(err, dict) else err
            raise UpstreamServerError(f"the upstream sent an error in the middle of the stream: {said}")
        if not self._started:
            self._start(chunk.get("model"))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = chunk.get("choices")
        if choices:
            for choice in choices if isinstance(choices, list) else ():
                if isinstance(choice, dict) and choice.get("index", 0) == 0:  # Responses has one answer
                    self._choice(choice)
        elif isinstance(usage, dict) and self._finish is not None:
            self._complete()  # the usage chunk that follows the finish reason

    def _choice(self, choice: dict[str, Any]) -> None:
        # Role-only and empty deltas carry nothing to show. Reasoning deltas (`reasoning_content`,
        # `reasoning`) are left out: from_chat leaves them out too, so that the stream and the stored
        # response agree, and to_chat would drop a reasoning item on the next turn anyway.
        delta = choice.get("delta")
        if isinstance(delta, dict):
            if isinstance(content := delta.get("content"), str) and content:
                self._text("output_text", content, _logprobs(choice))
            if isinstance(refusal := delta.get("refusal"), str) and refusal:
                self._text("refusal", refusal, [])
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    self._tool_call(call)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and self._finish is None:
            self._finish = finish
            self._close_item("incomplete" if finish in _INCOMPLETE else "completed")

    def _start(self, model: Any) -> None:
        self._started = True
        if isinstance(model, str) and model:
            self._model = model
        response = _response(self.request, self.response_id, self.created_at, self._model, [], None, None,
                             status="in_progress")
        self._event("response.created", {"response": response})
        self._event("response.in_progress", {"response": response})

    def _text(self, kind: str, delta: str, logprobs: list[dict[str, Any]]) -> None:
        message = self._open if isinstance(self._open, _Message) else self._open_message()
        part = message.parts[-1] if message.parts else None
        if part is None or part.kind != kind or part.done:
            part = self._open_part(message, kind)
        part.text.append(delta)
        where = {"item_id": message.id, "output_index": message.index, "content_index": part.index}
        if kind == "output_text":
            part.logprobs += logprobs
            self._event("response.output_text.delta", {**where, "delta": delta, "logprobs": logprobs})
        else:
            self._event("response.refusal.delta", {**where, "delta": delta})

    def _open_message(self) -> _Message:
        self._close_item("completed")
        message = _Message(_item_id("msg", self.response_id, self._next), self._next)
        self._next += 1
        self._open = message
        item = _message_item(message.id, [], "in_progress")
        self._event("response.output_item.added", {"output_index": message.index, "item": item})
        return message

    def _open_part(self, message: _Message, kind: str) -> _Part:
        self._close_part(message)
        part = _Part(kind, len(message.parts))
        message.parts.append(part)
        self._event("response.content_part.added", {"item_id": message.id, "output_index": message.index,
                                                     "content_index": part.index, "part": _Part(kind, 0).whole()})
        return part

    def _close_part(self, message: _Message) -> None:
        if not message.parts or message.parts[-1].done:
            return
        part = message.parts[-1]
        part.done = True
        whole = part.whole()
        where = {"item_id": message.id, "output_index": message.index, "content_index": part.index}
        if part.kind == "output_text":
            self._event("response.output_text.done", {**where, "text": whole["text"], "logprobs": part.logprobs})
        else:
            self._event("response.refusal.done", {**where, "refusal": whole["refusal"]})
        self._event("response.content_part.done", {**where, "part": whole})

    def _tool_call(self, delta: dict[str, Any]) -> None:
        index = delta.get("index")
        if not _is_int(index):  # servers that leave it out send each call whole, or continue the last one
            index = len(self._calls) if delta.get("id") or not self._calls else max(self._calls)
        function = _dict(delta.get("function"))
        call = self._calls.get(index)
        if call is None:
            call = self._open_call(index, delta.get("id"), _str(function.get("name")))
        elif call is not self._open:
            raise UpstreamMalformed(f"the upstream went back to tool call {index} after the next output began")
        elif not call.name:
            call.name = _str(function.get("name"))
        if isinstance(arguments := function.get("arguments"), str) and arguments:
            call.arguments.append(arguments)
            self._event("response.function_call_arguments.delta", {"item_id": call.id, "output_index": call.index,
                                                                   "delta": arguments})

    def _open_call(self, index: int, call_id: Any, name: str) -> _Call:
        self._close_item("completed")
        n = self._next
        call = _Call(_item_id("fc", self.response_id, n), n, _call_id(call_id, self.response_id, n), name)
        self._next += 1
        self._calls[index] = self._open = call
        item = _call_item(call.id, call.call_id, name, "", "in_progress")
        self._event("response.output_item.added", {"output_index": n, "item": item})
        return call

    def _close_item(self, status: str) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        if isinstance(item, _Message):
            self._close_part(item)
            whole = _message_item(item.id, [part.whole() for part in item.parts], status)
        else:
            arguments = "".join(item.arguments)
            self._event("response.function_call_arguments.done", {"item_id": item.id, "output_index": item.index,
                                                                  "name": item.name, "arguments": arguments})
            whole = _call_item(item.id, item.call_id, item.name, arguments, status)
        self._items.append(whole)
        self._event("response.output_item.done", {"output_index": item.index, "item": whole})

    def _complete(self) -> None:
        if not self._started:
            self._start(None)
        self._close_item("completed")  # a stream that ended without a finish reason
        reason = _INCOMPLETE.get(self._finish or "")
        response = _response(self.request, self.response_id, self.created_at, self._model, self._items,
                             _usage(self.usage), reason)
        self._event("response.incomplete" if reason else "response.completed", {"response": response})
        self.final = response
        self.done = True

    def _event(self, kind: str, fields: dict[str, Any]) -> None:
        body = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        self._out.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n")
