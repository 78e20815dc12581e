"""The hot path: chat completions, completions and embeddings, as a pure ASGI handler.

Read the body -> parse what routing needs -> decide -> run the attempt chain -> relay the answer.
Pure ASGI rather than a framework route, so a stream is relayed chunk by chunk as it arrives and no
per-request framework machinery runs. A client that disconnects cancels its upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from gateway.errors import (
    AllAttemptsFailed,
    InvalidRequest,
    NanorouteError,
    PayloadTooLarge,
    UpstreamError,
)
from gateway.reliability import chain
from gateway.routing.decide import decide
from gateway.routing.request import Operation, RoutedRequest, parse_request

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("nanoroute")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ROUTES: dict[str, Operation] = {
    "/v1/chat/completions": Operation.CHAT,
    "/v1/completions": Operation.COMPLETIONS,
    "/v1/embeddings": Operation.EMBEDDINGS,
}

_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class _Headers:
    """The few request headers the hot path reads, in one pass over the ASGI header list."""

    __slots__ = ("authorization", "content_length", "request_id", "task")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.authorization = self.content_length = self.request_id = self.task = None
        for name, value in raw:
            if name == b"authorization":
                self.authorization = value
            elif name == b"content-length":
                self.content_length = value
            elif name == b"x-request-id":
                self.request_id = value
            elif name == b"x-nanoroute-task":
                self.task = value


async def handle(gw: Gateway, op: Operation, scope: Scope, receive: Receive, send: Send) -> None:
    hdrs = _Headers(scope["headers"])
    request_id = _request_id(hdrs.request_id)
    try:
        await _handle(gw, op, hdrs, request_id, scope, receive, send)
    except Exception:
        # A bug, not a client or upstream problem: log it whole, answer in OpenAI's shape if still possible.
        log.exception("internal error handling request %s", request_id)
        with contextlib.suppress(Exception):
            await _send_error(send, request_id, NanorouteError("Internal error in the gateway"))


async def _handle(
    gw: Gateway, op: Operation, hdrs: _Headers, request_id: str, scope: Scope, receive: Receive, send: Send
) -> None:
    if scope["method"] != "POST":
        await _send_error(send, request_id, InvalidRequest(f"Use POST for {scope['path']}"), status=405)
        return
    state = gw.state
    try:
        key_id = state.auth.check(hdrs.authorization)
        raw = await _read_body(receive, hdrs.content_length, state.max_body_bytes)
        task = hdrs.task.decode("latin-1") if hdrs.task else None
        req = parse_request(op, raw, task_header=task, key_id=key_id, request_id=request_id)
        table = state.table
        decision = decide(table, req)
    except NanorouteError as exc:
        await _send_error(send, request_id, exc)
        return
    route = [
        (b"x-request-id", request_id.encode()),
        (b"x-nanoroute-policy", decision.policy.encode()),
    ]
    runner = _relay_stream if req.stream else _relay_json
    await _cancel_on_disconnect(receive, runner(gw, decision, req, route, send))


async def _relay_json(gw: Gateway, decision: Any, req: RoutedRequest, route: list[Any], send: Send) -> None:
    try:
        answered = await chain.call(decision, req, gw.state.backends)
    except NanorouteError as exc:
        await _send_error(send, req.request_id, exc, extra=route)
        return
    body = answered.result.body
    headers = [
        _JSON,
        (b"content-length", str(len(body)).encode()),
        *route,
        (b"x-nanoroute-model", answered.model.name.encode()),
        (b"x-nanoroute-fallbacks", str(len(answered.failures)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _relay_stream(gw: Gateway, decision: Any, req: RoutedRequest, route: list[Any], send: Send) -> None:
    try:
        answered = await chain.open_stream(decision, req, gw.state.backends)
    except NanorouteError as exc:
        await _send_error(send, req.request_id, exc, extra=route)
        return
    headers = [
        *_SSE_HEADERS,
        *route,
        (b"x-nanoroute-model", answered.model.name.encode()),
        (b"x-nanoroute-fallbacks", str(len(answered.failures)).encode()),
    ]
    upstream = answered.result
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    try:
        async for chunk in upstream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except UpstreamError as exc:
        # Bytes already reached the client: no other model may answer now. End with an error event
        # in OpenAI's shape so SDKs raise, instead of a silently truncated answer.
        event = b"data: " + exc.envelope() + b"\n\n"
        await send({"type": "http.response.body", "body": event, "more_body": True})
    finally:
        await upstream.aclose()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _cancel_on_disconnect(receive: Receive, work: Awaitable[None]) -> None:
    """Run `work`; if the client goes away first, cancel it, which closes the upstream request.

    The watcher cancels this very task rather than running `work` in a task of its own: one task
    per request instead of two.
    """
    me = asyncio.current_task()
    assert me is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        me.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        await work
    except asyncio.CancelledError:
        if not gone:
            raise
        me.uncancel()
    finally:
        watcher.cancel()


def _request_id(given: bytes | None) -> str:
    if given and len(given) <= 128 and given.isascii() and given.decode().isprintable():
        return given.decode()
    return uuid.uuid4().hex


async def _read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes:
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise PayloadTooLarge(f"The request body is over the gateway's limit of {limit} bytes")
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("The client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is over the gateway's limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def _send_error(
    send: Send, request_id: str, exc: NanorouteError, *, status: int | None = None, extra: list[Any] | None = None
) -> None:
    body = exc.envelope()
    headers = [
        _JSON,
        (b"content-length", str(len(body)).encode()),
        *(extra or [(b"x-request-id", request_id.encode())]),
        *exc.headers(),
    ]
    if isinstance(exc, AllAttemptsFailed):
        headers.append((b"x-nanoroute-fallbacks", str(len(exc.errors)).encode()))
    await send({"type": "http.response.start", "status": status or exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
