"""Reading an upstream's server-sent events: hold them until the first content, then relay with bounded waits.

`hold()` reads until the first event that carries content (a token, a tool call, a finish reason, the
end), so that a stream which fails before it (a stall, a cut, an error event, bytes that are not SSE)
fails inside `Backend.stream()`, where another model can still answer without the client noticing. A
role-only first chunk, as vLLM sends, is not content: a stall right after it still falls back.

`UpstreamStream` then yields what was held and every later chunk as it arrives. One timer per stream,
armed before the request goes out, bounds it: until the first content, the first-token limit (it
cancels the opening task, as `asyncio.timeout` would); then the idle time while waiting on the
upstream (not while the client is slow to take bytes) and the attempt's hard limit (the backend's
total, or the request's deadline). The timer is re-armed at most once per idle period rather than per
chunk, so a chunk costs a clock read and two stores, and a stream one timer rather than two and a
timeout context (about 25,000 instructions, 2% of a streamed request).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from gateway.errors import UpstreamError, UpstreamTimeout

MAX_HOLD = 1 << 20
"""Bytes read without any complete event before the stream is declared not to be SSE."""

_CONTENT_KEYS = ("content", "tool_calls", "function_call", "refusal", "reasoning_content", "reasoning")
_IGNORED_FIELDS = (b"event", b"id", b"retry")


class NotEventStream(Exception):
    """What the upstream sent is not OpenAI's SSE; translated into UpstreamMalformed by the caller."""


class ErrorEvent(Exception):
    """The upstream sent `data: {"error": ...}` before any content; `obj` is that event's JSON."""

    def __init__(self, obj: dict[str, Any]) -> None:
        super().__init__("error event")
        self.obj = obj


async def hold(content: aiohttp.StreamReader) -> bytes:
    """Read until the first event with content; return every byte read so far (relayed later, as is)."""
    buf = b""
    scanned = 0
    cr = False  # CRLF separators are searched for only once a \r was seen: each search runs to the end
    while True:
        chunk = await content.readany()
        if not chunk:
            raise NotEventStream("the upstream ended the stream before sending any content")
        buf += chunk
        cr = cr or b"\r" in chunk
        while True:
            end, sep = _event_end(buf, scanned, cr)
            if end < 0:
                break
            if has_content(buf[scanned:end]):
                return buf
            scanned = end + sep
        if len(buf) - scanned > MAX_HOLD:
            raise NotEventStream(f"no complete event in the first {MAX_HOLD} bytes")


def _event_end(buf: bytes, start: int, cr: bool) -> tuple[int, int]:
    lf = buf.find(b"\n\n", start)
    crlf = buf.find(b"\r\n\r\n", start) if cr else -1
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, 4
    return lf, 2


def has_content(event: bytes) -> bool:
    """Whether one event (without its blank line) carries content; raises for what is not OpenAI's SSE."""
    payload: bytes | None
    if event.startswith(b"data: ") and b"\n" not in event and b"\r" not in event:
        payload = event[6:]  # one data line: what servers send
    elif event.startswith(b"event:") and (named := _named(event)) is not None:
        return named  # a typed event that says by its name alone, without parsing its data
    else:
        payload = _data_of(event)
        if payload is None:
            return False
    if payload.strip() == b"[DONE]":
        return True
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise NotEventStream(f"the upstream sent an event whose data is not JSON: {payload[:80]!r}") from None
    if not isinstance(obj, dict):
        raise NotEventStream("the upstream sent an event whose data is not a JSON object")
    if "error" in obj and obj["error"] is not None and "type" not in obj:
        raise ErrorEvent(obj)
    choices = obj.get("choices")
    if not choices:
        kind = obj.get("type")
        if isinstance(kind, str):  # Responses or Messages events, from a backend that speaks them
            return _typed_content(kind, obj)
        return "usage" in obj  # a usage-only chunk comes last
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        if choice.get("finish_reason") is not None or choice.get("text"):
            return True
        delta = choice.get("delta")
        if isinstance(delta, dict) and any(delta.get(k) for k in _CONTENT_KEYS):
            return True
    return False


_TYPED_CONTENT = frozenset({"content_block_delta", "message_delta", "message_stop", "response.completed",
                            "response.incomplete"})
_TYPED_CONTENT_NAMES = frozenset(kind.encode() for kind in _TYPED_CONTENT)


_TYPED_OPENING = frozenset({b"response.created", b"response.in_progress", b"response.queued",
                            b"response.output_item.added", b"response.content_part.added", b"message_start",
                            b"content_block_start", b"ping"})


def _named(event: bytes) -> bool | None:
    """Whether a Responses or Messages event carries content, by its `event:` name (which both APIs send
    with every event); None when its data must be read (an error, a name not known here)."""
    end = event.find(b"\n")
    name = (event[6:] if end < 0 else event[6:end]).strip()
    if name in _TYPED_OPENING:
        return False
    if name.endswith(b".delta") or name in _TYPED_CONTENT_NAMES:
        return True
    return None


def _typed_content(kind: str, obj: dict[str, Any]) -> bool:
    """Whether an event of OpenAI's Responses or Anthropic's Messages API carries content: a delta of text,
    arguments or thinking, or the end. An error event (either API's, or a failed response) raises."""
    if kind == "error":
        err = obj.get("error")  # Anthropic's: {"type": "error", "error": {"type", "message"}}
        raise ErrorEvent({"error": err if isinstance(err, dict) else {"message": obj.get("message"),
                                                                        "code": obj.get("code")}})
    if kind == "response.failed":
        response = obj.get("response")
        err = response.get("error") if isinstance(response, dict) else None
        raise ErrorEvent({"error": err if isinstance(err, dict) else {"message": "the response failed"}})
    return kind.endswith(".delta") or kind in _TYPED_CONTENT


def _data_of(event: bytes) -> bytes | None:
    """The data of an event, its `data:` lines joined; None when it has none (a comment, say)."""
    data: list[bytes] = []
    for line in event.splitlines():
        if not line or line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if name == b"data":
            data.append(value[1:] if value.startswith(b" ") else value)
        elif name not in _IGNORED_FIELDS:
            raise NotEventStream(f"the upstream sent a line that is not server-sent events: {line[:80]!r}")
    return b"\n".join(data) if data else None


class UpstreamStream:
    """An upstream stream, made by the task that opens it before the request goes out. That task calls
    `opened()` once the first content is held, or `stop_opening()` when opening fails; then iterate the
    raw bytes, and `aclose()`."""

    __slots__ = ("_backend", "_cancelling", "_content", "_expired", "_fired", "_first", "_hard", "_hard_phase",
                 "_held", "_idle", "_loop", "_model", "_resp", "_task", "_timer", "_translate", "_waiting")

    _content: aiohttp.StreamReader

    def __init__(self, *, first: float, idle_s: float, hard: float, hard_phase: str, model: str, backend: str,
                 translate: Callable[[BaseException, str, str], UpstreamError]) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(self._loop)
        assert task is not None, "a stream is opened from a task"
        self._task, self._cancelling, self._fired = task, task.cancelling(), False
        self._resp: aiohttp.ClientResponse | None = None
        """None while opening."""
        self._held = b""
        self._first = first
        self._idle = idle_s
        self._hard, self._hard_phase = hard, hard_phase
        self._model, self._backend = model, backend
        self._translate = translate
        self._waiting = 0.0
        """When the current read began (loop clock); 0 while no read is pending."""
        self._expired: UpstreamTimeout | None = None
        # Never later than an idle period from now: a read that starts once the stream is open is then
        # checked in time.
        due = min(first, self._loop.time() + idle_s)
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(due, self._check)

    def opened(self, resp: aiohttp.ClientResponse, held: bytes) -> None:
        """The first content is held: from now on the timer bounds idle time and the hard limit."""
        self._resp, self._content, self._held = resp, resp.content, held

    def stop_opening(self, exc: BaseException) -> bool:
        """Opening failed with `exc`: stop the timer; True when `exc` is the cancel of the first-token limit
        (and nobody else's), which is then taken back so that the caller raises a timeout instead."""
        self._stop_timer()
        if not self._fired:
            return False
        return self._task.uncancel() <= self._cancelling and isinstance(exc, asyncio.CancelledError)

    def __aiter__(self) -> UpstreamStream:
        return self

    async def __anext__(self) -> bytes:
        held = self._held
        if held:
            self._held = b""
            return held
        if self._expired is not None:
            raise self._expired
        self._waiting = self._loop.time()
        try:
            chunk = await self._content.readany()
        except UpstreamError:
            raise
        except Exception as exc:
            raise (self._expired or self._translate(exc, self._model, self._backend)) from None
        finally:
            self._waiting = 0.0
        if chunk:
            return chunk
        if self._expired is not None:
            raise self._expired
        self._stop_timer()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._stop_timer()
        assert self._resp is not None, "closed before it was opened"
        # Closing (not releasing) drops the connection, which is what cancels generation upstream
        # when the stream did not finish.
        if self._content.at_eof():
            self._resp.release()
        else:
            self._resp.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        now = self._loop.time()
        if self._resp is None:  # still opening
            if now >= self._first:
                self._timer, self._fired = None, True
                self._task.cancel()
            else:
                self._timer = self._loop.call_at(min(self._first, now + self._idle), self._check)
            return
        if now >= self._hard:
            self._expire(self._hard_phase)
            return
        waiting = self._waiting
        if waiting and now - waiting >= self._idle:
            self._expire("idle")
            return
        self._timer = self._loop.call_at(min(self._hard, (waiting or now) + self._idle), self._check)

    def _expire(self, phase: str) -> None:
        self._timer = None
        if phase == "idle":
            why = f"upstream stalled in the middle of the stream (timeouts.idle_s: {self._idle:g} s)"
        elif phase == "deadline":
            why = "the request's deadline ran out during the stream (reliability.deadline_ms)"
        else:
            why = "upstream did not finish the stream in time (timeouts.total_s)"
        self._expired = UpstreamTimeout(why, model=self._model, backend=self._backend, phase=phase)
        # Wakes a pending read with the timeout, and drops the connection so the upstream stops generating.
        self._content.set_exception(self._expired)
        assert self._resp is not None
        self._resp.close()
