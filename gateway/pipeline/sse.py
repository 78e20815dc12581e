"""Relaying an upstream event stream: pass bytes through, read usage on the way, strip it if asked.

Bytes go to the client as soon as the events they hold are complete; only an incomplete event's tail
waits for its next chunk. Only an event that carries a usage object is parsed. A chunk costs one scan
for a usage object and one search from its end for the last blank line; CRLF separators are looked for
only in data that holds a `\r`, since each search for them runs through the whole chunk.
"""

from __future__ import annotations

from typing import Any

import orjson

_USAGE_KEY = b'"usage":'
_MAX_PENDING = 1 << 20


class UsageTap:
    def __init__(self, strip_usage: bool) -> None:
        self.strip_usage = strip_usage
        self.usage: dict[str, Any] | None = None
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
        return ready if at < 0 else self._take_usage(ready, at)

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest

    def _take_usage(self, ready: bytes, at: int) -> bytes:
        """Read the usage of the event(s) that carry one, the first at `at`; cut the usage-only event if
        asked. Only the events around a usage object are parsed, not the whole buffer."""
        while at >= 0:
            begin = _event_start(ready, at)
            end = _event_end(ready, at)
            event = ready[begin:end]
            obj = _data_of(event)
            if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
                self.usage = obj["usage"]
                if self.strip_usage and not obj.get("choices"):
                    ready = ready[:begin] + ready[end:]
                    at = _find_usage(ready, begin)
                    continue
            at = _find_usage(ready, end)
        return ready


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
