"""How the HTTP server treats connections: the limits that keep slow and oversized clients from exhausting it.

uvicorn's httptools protocol bounds neither the size of a request's head nor the time a client takes to send
its head or its body: a few dozen connections trickling bytes hold the server indefinitely, and one endless
header is read into memory. `GuardedHttpToolsProtocol` adds those bounds and a cap on connections:

    request line + headers   over `max_header_bytes`: 431, connection closed
    head not complete        `header_timeout_s` after the connection opened (first request) or after the head's
                             first bytes (later requests): 408 (closed without an answer if nothing came)
    body not complete        `body_timeout_s` after the head: 408 in OpenAI's error envelope, connection closed;
                             the application sees the client go away
    connections              past `max_connections` (per process), a new one gets 503 and is closed at once

The idle time between requests on a keep-alive connection is uvicorn's own `timeout_keep_alive`.

The cost is mostly per connection: one timer, armed when a connection opens and cancelled once its first head
is complete. A later request arms one only when its head or body spans more than one read; a request that
arrives in one read costs a few attribute checks after uvicorn's own parsing (docs/performance.md has figures).

`uvicorn_options(settings)` is the one place the server's options are set, for `nanoroute serve` (one
worker or several) and for the tests' gateways alike.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from gateway.errors import error_body

if TYPE_CHECKING:
    from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the gateway, less where it listens, its event loop and its log level."""
    limits = ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_connections=settings.max_connections,
    )
    return {
        # A partial of a module-level class, so that it pickles into each worker process.
        "http": functools.partial(GuardedHttpToolsProtocol, limits=limits, refusals=_Refusals()),
        "ws": "none",  # no WebSocket routes: an upgrade is an ordinary request
        "timeout_keep_alive": settings.keep_alive_s,
        "lifespan": "on",
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
        "timeout_graceful_shutdown": 30,
    }


def _canned(status: HTTPStatus, body: bytes, *extra: str) -> bytes:
    """A whole response, written straight to the transport, that closes the connection."""
    head = [f"HTTP/1.1 {status.value} {status.phrase}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close", *extra, "", ""]
    return "\r\n".join(head).encode() + body


_HEAD_TOO_LARGE = _canned(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, error_body(
    "The request line and headers are over the gateway's limit", "invalid_request_error",
    "request_header_fields_too_large"))
_HEAD_TIMEOUT = _canned(HTTPStatus.REQUEST_TIMEOUT, error_body(
    "The request's headers did not arrive in time", "invalid_request_error", "request_timeout"))
_BODY_TIMEOUT = _canned(HTTPStatus.REQUEST_TIMEOUT, error_body(
    "The request's body did not arrive in time", "invalid_request_error", "request_timeout"))
_OVER_CAPACITY = _canned(HTTPStatus.SERVICE_UNAVAILABLE, error_body(
    "The gateway has too many open connections; retry shortly", "server_error", "too_many_connections"),
    "retry-after: 1")


class _Refusals:
    """Connections refused at the cap, logged at most once a second (a flood of them must not flood the log)."""

    def __init__(self) -> None:
        self.count = 0
        self.logged = 0.0

    def note(self, logger: logging.Logger, limit: int) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.logged >= 1.0:
            logger.warning("Refused %d connection(s): %d are open, the limit", self.count, limit)
            self.count, self.logged = 0, now


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on the head's size, the head's and body's time, and connections.

    Of what runs per request only `data_received` is overridden, since each parser callback overridden in
    Python would cost 2,000-3,500 instructions per request: the state is read after each read from what
    uvicorn keeps. `self.scope` is the latest
    request begun and `self.cycle` the latest whose head is complete (with that scope); `cycle.more_body`
    stays true until its body is complete.
    """

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, limits: ConnectionLimits,
                 refusals: _Refusals) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._refusals = refusals
        self._max_head = limits.max_header_bytes
        self._deadline: asyncio.TimerHandle | None = None
        # What the deadline is for: (the cycle before the head, True) or (the cycle, False) for its body;
        # None when nothing is incomplete.
        self._phase: tuple[RequestResponseCycle | None, bool] | None = None
        self._head_bytes = 0  # bytes read while the head under way was incomplete
        self._seen: RequestResponseCycle | None = None  # the latest cycle whose head was accounted for

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport  # connection_lost closes it again; it was never counted
            transport.write(_OVER_CAPACITY)
            transport.close()
            self._refusals.note(self.logger, self.limits.max_connections)
            return
        super().connection_made(transport)
        self._phase = (None, True)  # the first head's deadline runs from the connection, not its first byte
        self._deadline = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        HttpToolsProtocol.data_received(self, data)
        cycle = self.cycle
        # The common case costs these few checks: the read held whole requests, nothing was incomplete
        # before it, and it was too small to hold an oversized head.
        if (self._phase is not None or len(data) > self._max_head or cycle is None
                or cycle.scope is not self.scope or cycle.more_body):
            self._after_read(cycle, len(data))

    def _after_read(self, cycle: RequestResponseCycle | None, read: int) -> None:
        if self.transport.is_closing():
            return
        phase = self._phase
        if cycle is not None and cycle is not self._seen:  # a head completed in this read
            under_way = self._head_bytes if phase == (self._seen, True) else 0
            self._seen = cycle
            if under_way + read > self._max_head and _head_size(cycle) > self._max_head:
                self._cut_off(_HEAD_TOO_LARGE)
                return
        if self.scope is not None and (cycle is None or cycle.scope is not self.scope):  # a head is incomplete
            if phase != (cycle, True):
                self._arm((cycle, True), self.limits.header_timeout_s, self._head_timed_out)
                self._head_bytes = 0
            self._head_bytes += read  # may count the end of the previous request too: never less than the head
            if self._head_bytes > self._max_head:
                self._cut_off(_HEAD_TOO_LARGE)
        elif cycle is not None and cycle.more_body:  # the body is incomplete
            if phase != (cycle, False):
                self._arm((cycle, False), self.limits.body_timeout_s, self._body_timed_out)
        else:
            self._cancel_deadline()

    def _arm(self, phase: tuple[RequestResponseCycle | None, bool], delay: float, callback: Callable[[], None]) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._phase = phase
        self._deadline = self.loop.call_later(delay, callback)

    def _cancel_deadline(self) -> None:
        self._phase = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = self._phase = None
        # A connection that sent nothing gets no answer: a client that opened it ahead of need would
        # take a 408 for the answer to the request it sends next.
        self._cut_off(_HEAD_TIMEOUT if self.scope is not None else b"")

    def _body_timed_out(self) -> None:
        self._deadline = self._phase = None
        self._cut_off(_BODY_TIMEOUT)

    def _cut_off(self, response: bytes) -> None:
        """Answer `response` unless a response has begun (it would corrupt it), tell the application its
        client is gone, and close the connection."""
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self.transport.write(response)
        if cycle is not None and not cycle.response_complete:
            # Its sends are dropped from now on and a waiting receive() returns http.disconnect.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


def _head_size(cycle: RequestResponseCycle) -> int:
    """A complete head's size as parsed: the target, the headers, and the method, version and line ends."""
    scope = cycle.scope
    target = len(scope["raw_path"]) + len(scope["query_string"])
    return target + 16 + sum(len(name) + len(value) + 4 for name, value in scope["headers"])
