"""Relaying an upstream event stream: pass bytes through, read usage on the way, strip it if asked.

Bytes go to the client as soon as the events they hold are complete; only an incomplete event's tail
waits for its next chunk. Only an event that carries a usage object is parsed.
"""

from __future__ import annotations

from typing import Any

import orjson

_USAGE_MARKERS = (b'"usage":{', b'"usage": {')
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
        if _USAGE_MARKERS[0] in ready or _USAGE_MARKERS[1] in ready:
            ready = self._take_usage(ready)
        return ready

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest

    def _take_usage(self, ready: bytes) -> bytes:
        """Read the usage of the event(s) that carry one; cut the usage-only event if asked. Only the
        events around a usage marker are parsed, not the whole buffer."""
        start = 0
        while True:
            at = _find_usage(ready, start)
            if at < 0:
                return ready
            begin = _event_start(ready, at)
            end = _event_end(ready, at)
            event = ready[begin:end]
            obj = _data_of(event)
            if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
                self.usage = obj["usage"]
                if self.strip_usage and not obj.get("choices"):
                    ready = ready[:begin] + ready[end:]
                    start = begin
                    continue
            start = end


def _find_usage(data: bytes, start: int) -> int:
    found = [i for i in (data.find(m, start) for m in _USAGE_MARKERS) if i >= 0]
    return min(found) if found else -1


def _event_start(data: bytes, at: int) -> int:
    """Where the event holding position `at` begins: just after the blank line before it."""
    lf, crlf = data.rfind(b"\n\n", 0, at), data.rfind(b"\r\n\r\n", 0, at)
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def _event_end(data: bytes, at: int) -> int:
    """Where the event holding position `at` ends, its blank line included."""
    lf, crlf = data.find(b"\n\n", at), data.find(b"\r\n\r\n", at)
    ends = [e for e in (lf + 2 if lf >= 0 else -1, crlf + 4 if crlf >= 0 else -1) if e >= 0]
    return min(ends) if ends else len(data)


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
    lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else -1, crlf + 4 if crlf >= 0 else -1)
