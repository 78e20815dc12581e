"""Chat completion chunks as Messages stream events."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import NanorouteError
from gateway.protocols.anthropic.answer import _stop_reason, _usage, error_event
from gateway.protocols.anthropic.request import _is_int

# -- stream: chat completion chunks -> Messages events -------------------------------------------------------


_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class StreamTranslator:
    """Chat completion SSE bytes, split anywhere, in; Messages stream events out.

    `message_start` and a `ping` go out with the first chunk. Each run of text and each tool call is a
    content block, numbered from 0 in order; a block stops when the next one starts or the message ends.
    The finish reason comes before the usage chunk, so `message_delta` (with the stop reason and usage)
    waits for that chunk, `[DONE]` or `close()`, whichever comes first, then `message_stop` follows.
    """

    def __init__(self, message_id: str, model: str) -> None:
        self.done = False
        self.usage: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None  # a Messages stream does not end with the whole message
        self._id = message_id
        self._model = model
        self._pending = b""
        self._data: list[bytes] = []
        self._started = False
        self._blocks = 0
        self._open: int | None = None
        self._open_is_text = False
        self._tools: dict[object, int] = {}
        self._last_tool: object = None
        self._stop: str | None = None  # the chat finish reason
        self._refused = False

    def feed(self, data: bytes) -> bytes:
        """The Messages events that the complete lines of `data` (with what was pending) make."""
        if self.done:
            return b""
        data = self._pending + data if self._pending else data
        end = data.rfind(b"\n")
        if end < 0:
            self._pending = data
            return b""
        self._pending = data[end + 1:]
        out: list[bytes] = []
        for line in data[:end].split(b"\n"):
            self._line(line, out)
        return b"".join(out)

    def error_event(self, exc: NanorouteError) -> bytes:
        """An error after the stream started: Anthropic's `error` event."""
        return error_event(exc)

    def close(self) -> bytes:
        """The upstream ended: the events still owed, through `message_stop`; nothing once that was sent."""
        out: list[bytes] = []
        if not self.done:
            for line in (self._pending, b""):  # the unterminated last line, and the blank line its event lacks
                self._line(line, out)
            self._finish(out)
        self._pending = b""
        return b"".join(out)

    def _line(self, line: bytes, out: list[bytes]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.startswith(b"data:"):
            self._data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif not line and self._data and not self.done:
            payload = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            self._data = []
            self._event(payload, out)

    def _event(self, payload: bytes, out: list[bytes]) -> None:
        if payload.strip() == b"[DONE]":
            self._finish(out)
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return  # not a chunk; the stream's own checks (backends) decide whether that is fatal
        if isinstance(chunk, dict):
            self._chunk(chunk, out)

    def _chunk(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        self._start(chunk.get("model"), out)
        if isinstance(usage := chunk.get("usage"), dict):
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            if self.usage is not None and self._stop is not None:
                self._finish(out)
            return
        for choice in choices:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)

    def _choice(self, choice: dict[str, Any], out: list[bytes]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = delta.get("content") or delta.get("refusal")
            if isinstance(text, str) and text:
                self._refused = self._refused or text is delta.get("refusal")
                self._text(text, out)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else []:
                if isinstance(call, dict):
                    self._tool(call, out)
        if isinstance(reason := choice.get("finish_reason"), str):
            self._stop = reason

    def _start(self, model: Any, out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        if isinstance(model, str) and model:
            self._model = model
        message: dict[str, Any] = {
            "id": self._id, "type": "message", "role": "assistant", "model": self._model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        out.append(_sse("message_start", {"type": "message_start", "message": message}))
        out.append(_PING)

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open is None or not self._open_is_text:
            self._open_block({"type": "text", "text": ""}, True, out)
        delta = {"type": "text_delta", "text": text}
        out.append(_sse("content_block_delta", {"type": "content_block_delta", "index": self._open, "delta": delta}))

    def _tool(self, call: dict[str, Any], out: list[bytes]) -> None:
        """One tool call delta. Calls are told apart by `index`; a server that sends none gives each call
        its own `id`, and fragments without either belong to the last call."""
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        key = call.get("index")
        if not _is_int(key):
            key = call.get("id") or self._last_tool
        if key not in self._tools:
            block: dict[str, Any] = {"type": "tool_use", "id": call.get("id") or f"{self._id}_tool_{self._blocks}",
                     "name": function.get("name") or "", "input": {}}
            self._tools[key] = self._open_block(block, False, out)
        self._last_tool = key
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            # Upstreams send calls one after another; a late fragment still goes to its own block.
            delta = {"type": "input_json_delta", "partial_json": arguments}
            index = self._tools[key]
            out.append(_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))

    def _open_block(self, block: dict[str, Any], is_text: bool, out: list[bytes]) -> int:
        self._close_block(out)
        index = self._open = self._blocks
        self._blocks += 1
        self._open_is_text = is_text
        out.append(_sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
        return index

    def _close_block(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": self._open}))
            self._open = None

    def _finish(self, out: list[bytes]) -> None:
        if self.done:
            return
        self._start(None, out)
        self._close_block(out)
        delta = {"stop_reason": _stop_reason(self._stop, bool(self._tools), self._refused), "stop_sequence": None}
        out.append(_sse("message_delta", {"type": "message_delta", "delta": delta, "usage": _usage(self.usage)}))
        out.append(_MESSAGE_STOP)
        self.done = True


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


