"""Relaying an upstream event stream: pass bytes through, read usage on the way, strip it if asked.

Bytes go to the client as soon as the events they hold are complete; only an incomplete event's tail
waits for its next chunk. Only an event that carries a usage object is parsed.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_USAGE_MARKERS = (b'"usage":{', b'"usage": {')
_MAX_PENDING = 1 << 20
_EVENT_SEPARATOR = re.compile(rb"(\r\n\r\n|\n\n)")


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
        kept = []
        parts = _EVENT_SEPARATOR.split(ready)  # event, separator, event, separator, ..., b""
        for event, sep in zip(parts[0::2], [*parts[1::2], b""], strict=True):
            if event.startswith(b"data:") and (_USAGE_MARKERS[0] in event or _USAGE_MARKERS[1] in event):
                try:
                    obj = orjson.loads(event[5:])
                except orjson.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
                    self.usage = obj["usage"]
                    if self.strip_usage and not obj.get("choices"):
                        continue
            kept.append(event + sep)
        return b"".join(kept)


def _last_event_end(data: bytes) -> int:
    """Where the last complete event (with its blank line) ends; -1 when there is none."""
    lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else -1, crlf + 4 if crlf >= 0 else -1)
