"""Relaying an upstream event stream: pass bytes through, read usage on the way, strip it if asked.

`UsageTap` relays OpenAI's chat and completions streams; `TypedTap` the Responses and Messages APIs'
typed events, from a backend that speaks the client's API (`Backend.native`). Both are a `Tap`, which
the relay feeds: the translators of `gateway.protocols` are one too.

Bytes go to the client as soon as the events they hold are complete; only an incomplete event's tail
waits for its next chunk. Only an event that carries a usage object is parsed. A chunk costs one scan
for a usage object and one search from its end for the last blank line; CRLF separators are looked for
only in data that holds a `\r`, since each search for them runs through the whole chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from gateway.errors import NanorouteError

_USAGE_KEY = b'"usage":'
_MAX_PENDING = 1 << 20


class Tap(Protocol):
    """What the relay sends a stream through: upstream bytes in, the client's bytes out."""

    @property
    def usage(self) -> dict[str, Any] | None:
        """The upstream's usage object, once seen."""

    @property
    def done(self) -> bool:
        """The stream's last event (`[DONE]`, `message_stop`, `response.completed`) went out: the answer is whole."""

    @property
    def final(self) -> dict[str, Any] | None:
        """The whole answer in the client's API, where the stream ends with it (a Responses API response)."""

    def feed(self, data: bytes) -> bytes: ...

    def close(self) -> bytes:
        """The upstream ended: what is left to send."""

    def error_event(self, exc: NanorouteError) -> bytes:
        """An error after the stream started, as the client's API words it."""


class UsageTap:
    """OpenAI's chat and completions streams, relayed as they are."""

    def __init__(self, strip_usage: bool) -> None:
        self.strip_usage = strip_usage
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.final: dict[str, Any] | None = None
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """The bytes of `chunk` (with what was pending) that can go to the client now."""
        data = self._pending + chunk if self._pending else chunk
        end = _last_event_end(data)
        if end < 0:
            if len(data) > _MAX_PENDING:  # not SSE as we know it: never hold bytes back for long
                self._pending = b""
                return data
            self._pending = data
            return b""
        ready, self._pending = data[:end], data[end:]
        at = _find_usage(ready, 0)
        if at >= 0:
            ready = self._take_usage(ready, at)
        if b"[DONE]" in ready[-16:]:  # `data: [DONE]` and its blank line (LF or CRLF) end it
            self.done = True
        return ready

    def close(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest

    def error_event(self, exc: NanorouteError) -> bytes:
        return b"data: " + exc.envelope() + b"\n\n"

    def _read(self, obj: dict[str, Any]) -> bool:
        """Take the usage of an event that holds one; True when it is a usage-only event (to strip)."""
        usage = obj.get("usage")
        if not isinstance(usage, dict):
            return False
        self.usage = usage
        return not obj.get("choices")

    def _take_usage(self, ready: bytes, at: int) -> bytes:
        """Read the usage of the event(s) that carry one, the first at `at`; cut the usage-only event if
        asked. Only the events around a usage object are parsed, not the whole buffer."""
        while at >= 0:
            begin = _event_start(ready, at)
            end = _event_end(ready, at)
            event = ready[begin:end]
            obj = _data_of(event)
            if isinstance(obj, dict) and self._read(obj) and self.strip_usage:
                ready = ready[:begin] + ready[end:]
                at = _find_usage(ready, begin)
                continue
            at = _find_usage(ready, end)
        return ready


class TypedTap(UsageTap):
    """The typed events of OpenAI's Responses API or Anthropic's Messages API, relayed as they are, with
    the usage read from the events that carry it: Anthropic's `message_start` (input) and `message_delta`
    (output), the Responses API's `response.completed` (which also holds the whole response: `final`)."""

    def __init__(self, error_event: Callable[[NanorouteError], bytes]) -> None:
        super().__init__(strip_usage=False)
        self._error_event = error_event

    def feed(self, data: bytes) -> bytes:
        ready = super().feed(data)
        if b"message_stop" in ready and _ends_message(ready):
            self.done = True
        return ready

    def error_event(self, exc: NanorouteError) -> bytes:
        return self._error_event(exc)

    def _read(self, obj: dict[str, Any]) -> bool:
        kind = obj.get("type")
        if kind == "message_start" and isinstance(message := obj.get("message"), dict):
            usage = message.get("usage")
            if isinstance(usage, dict):
                self.usage = dict(usage)
        elif kind == "message_delta" and isinstance(usage := obj.get("usage"), dict):
            self.usage = {**(self.usage or {}), **{k: v for k, v in usage.items() if v is not None}}
        elif kind in ("response.completed", "response.incomplete") and isinstance(response := obj.get("response"),
                                                                                   dict):
            self.final, self.done = response, True
            if isinstance(usage := response.get("usage"), dict):
                self.usage = usage
        return False


def _ends_message(ready: bytes) -> bool:
    """Whether these whole events hold Messages' `message_stop`: its `event:` line, or its data however its JSON
    is spaced (text that merely mentions it is inside a JSON string, where it can be neither)."""
    return (ready.startswith(b"event: message_stop") or b"\nevent: message_stop" in ready
            or b'"type":"message_stop"' in ready or b'"type": "message_stop"' in ready)


def _find_usage(data: bytes, start: int) -> int:
    """Where the next `"usage":` that holds an object is; -1 when none. OpenAI sends `"usage":null` in
    every chunk of a stream that asked for usage: those are passed over."""
    while (at := data.find(_USAGE_KEY, start)) >= 0:
        start = at + len(_USAGE_KEY)
        after = data[start:start + 2]
        if after[:1] == b"{" or after == b" {":
            return at
    return -1


def _event_start(data: bytes, at: int) -> int:
    """Where the event holding position `at` begins: just after the blank line before it."""
    lf = data.rfind(b"\n\n", 0, at)
    begin = lf + 2 if lf >= 0 else 0
    if b"\r" in data:
        crlf = data.rfind(b"\r\n\r\n", 0, at)
        begin = max(begin, crlf + 4 if crlf >= 0 else 0)
    return begin


def _event_end(data: bytes, at: int) -> int:
    """Where the event holding position `at` ends, its blank line included."""
    lf = data.find(b"\n\n", at)
    crlf = data.find(b"\r\n\r\n", at) if b"\r" in data else -1
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf + 4
    return lf + 2 if lf >= 0 else len(data)


def _data_of(event: bytes) -> object:
    """The JSON of an event's `data:` field, or None."""
    for line in event.splitlines():
        if line.startswith(b"data:"):
            try:
                return orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return None
    return None


def _last_event_end(data: bytes) -> int:
    """Where the last complete event (with its blank line) ends; -1 when there is none."""
    lf = data.rfind(b"\n\n")
    end = lf + 2 if lf >= 0 else -1
    if b"\r" in data:
        crlf = data.rfind(b"\r\n\r\n")
        end = max(end, crlf + 4 if crlf >= 0 else -1)
    return end
