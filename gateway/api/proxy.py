"""The hot path: chat completions, completions and embeddings, as a pure ASGI handler.

Read the body -> parse what routing needs -> decide -> run the attempt chain -> relay the answer.
Pure ASGI rather than a framework route, so a stream is relayed chunk by chunk as it arrives and no
per-request framework machinery runs. A client that disconnects cancels its upstream request.
What happened is written into one `RequestRecord`, handed to the observers when the request ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import TYPE_CHECKING, Any

from gateway.api.sse import UsageTap
from gateway.backends.base import Operation
from gateway.config.table import ModelRoute
from gateway.errors import (
    AllAttemptsFailed,
    CascadeEscalated,
    ClientError,
    InvalidRequest,
    MethodNotAllowed,
    NanorouteError,
    PayloadTooLarge,
    PolicyUnmet,
    UpstreamError,
    UpstreamRejected,
)
from gateway.keys import presented
from gateway.record import Outcome, RequestRecord
from gateway.reliability import chain
from gateway.routing.cascade import Gate, strip_logprobs
from gateway.routing.decide import Decision, decide
from gateway.routing.estimate import usage_cost
from gateway.routing.request import RoutedRequest, parse_request

if TYPE_CHECKING:
    from gateway.app import Gateway, State

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

    __slots__ = ("api_key", "authorization", "content_length", "pin", "request_id", "task", "x_api_key")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.authorization = self.content_length = self.request_id = self.task = self.pin = None
        self.x_api_key = self.api_key = None
        for name, value in raw:
            if name == b"authorization":
                self.authorization = value
            elif name == b"x-api-key":
                self.x_api_key = value
            elif name == b"api-key":
                self.api_key = value
            elif name == b"content-length":
                self.content_length = value
            elif name == b"x-request-id":
                self.request_id = value
            elif name == b"x-nanoroute-task":
                self.task = value
            elif name == b"x-nanoroute-model":
                self.pin = value


async def handle(gw: Gateway, op: Operation, scope: Scope, receive: Receive, send: Send) -> None:
    hdrs = _Headers(scope["headers"])
    rec = RequestRecord(_request_id(hdrs.request_id), perf_counter(), op=op.name.lower())
    try:
        await _handle(gw, op, hdrs, rec, scope, receive, send)
    except Exception:
        # A bug, not a client or upstream problem: log it whole, answer in OpenAI's shape if still possible.
        log.exception("internal error handling request %s", rec.request_id)
        rec.outcome, rec.status = Outcome.INTERNAL_ERROR, 500
        with contextlib.suppress(Exception):  # fails when the response had already started
            await _send_error(send, rec, NanorouteError("Internal error in the gateway"))
    finally:
        rec.duration_s = perf_counter() - rec.started
        gw.observe(rec)


async def _handle(gw: Gateway, op: Operation, hdrs: _Headers, rec: RequestRecord,
                  scope: Scope, receive: Receive, send: Send) -> None:
    if scope["method"] != "POST":
        rec.outcome, rec.status = Outcome.CLIENT_ERROR, 405
        await _send_error(send, rec, MethodNotAllowed(f"Use POST for {scope['path']}"))
        return
    state = gw.state
    try:
        key = state.auth.check(presented(hdrs.authorization, hdrs.x_api_key, hdrs.api_key))
        rec.key_id = key.id if key is not None else None
        raw = await _read_body(receive, hdrs.content_length, state.max_body_bytes)
        task = hdrs.task.decode("latin-1") if hdrs.task else None
        pin = hdrs.pin.decode("latin-1") if hdrs.pin else None
        req = parse_request(op, raw, task_header=task, key_id=rec.key_id, request_id=rec.request_id, pin=pin)
        rec.task, rec.stream = req.task, req.stream
        decision = decide(state.table, req, gw.signals)
    except (ClientError, PolicyUnmet) as exc:
        rec.outcome, rec.status = Outcome.CLIENT_ERROR, exc.status
        await _send_error(send, rec, exc)
        return
    if decision.route is not None and decision.route.rollout is not None:
        decision, rec.rollout = gw.rollouts.route(decision, req)
    rec.policy, rec.reason, rec.chosen = decision.policy, decision.reason, decision.chain[0]
    if decision.route is not None and decision.route.capture is not None:
        rec.capture = gw.capture.sample(decision.route, req, state.table)
    gate = Gate(decision, req) if Gate.wanted(decision, req) else None
    if gate is not None and not req.stream and gate.policy.cascade and gate.policy.cascade.min_mean_logprob is not None:
        req.add_logprobs = not req.body.get("logprobs")
    runner = _relay_stream if req.stream else _relay_json
    # The request runs to its end on the state it started with, whatever a reload swaps in meanwhile.
    if not await _cancel_on_disconnect(receive, runner(gw, state, decision, req, rec, send, gate), rec):
        rec.outcome, rec.status = Outcome.CANCELLED, 499


async def _relay_json(gw: Gateway, state: State, decision: Decision, req: RoutedRequest, rec: RequestRecord,
                      send: Send, gate: Gate | None) -> None:
    t0 = perf_counter()
    accept = gate.judge_reply if gate is not None else None
    try:
        answered = await chain.call(decision, req, state.backends, gw.inflight, gw.health, accept=accept)
    except AllAttemptsFailed as exc:
        rec.upstream_s = perf_counter() - t0
        await _send_upstream_failure(send, rec, exc)
        return
    rec.upstream_s = perf_counter() - t0
    reply = answered.result
    if rec.capture is not None:
        rec.capture.answered(reply.parsed, len(reply.body))
    if rec.rollout is not None:
        rec.rollout.reply = reply.parsed
    _answered(rec, answered.model, answered.failures)
    usage = reply.parsed.get("usage")
    if isinstance(usage, dict):
        _account(rec, decision, usage)
    body = strip_logprobs(reply.parsed) if req.add_logprobs else reply.body
    headers = [
        _JSON,
        (b"content-length", str(len(body)).encode()),
        *_route_headers(rec),
    ]
    rec.first_byte_s = perf_counter() - rec.started
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _relay_stream(gw: Gateway, state: State, decision: Decision, req: RoutedRequest, rec: RequestRecord,
                        send: Send, gate: Gate | None) -> None:
    t0 = perf_counter()
    accept = gate.judge_stream if gate is not None else None
    try:
        answered = await chain.open_stream(decision, req, state.backends, gw.inflight, gw.health, accept=accept)
    except AllAttemptsFailed as exc:
        rec.upstream_s = perf_counter() - t0
        await _send_upstream_failure(send, rec, exc)
        return
    rec.upstream_s = perf_counter() - t0
    _answered(rec, answered.model, answered.failures)
    upstream = answered.result
    replay = gate.replay(answered.model) if gate is not None else None
    chunks: AsyncIterable[bytes] = upstream if replay is None else _once(replay)
    tap = UsageTap(strip_usage=req.add_usage)
    sample = rec.capture
    probe = rec.rollout
    await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *_route_headers(rec)]})
    waiting = perf_counter()
    try:
        async for chunk in chunks:
            out = tap.feed(chunk)
            if out:
                if sample is not None:
                    sample.feed(out)
                if probe is not None:
                    probe.feed(out)
                if rec.first_byte_s is None:
                    now = perf_counter()
                    rec.upstream_s += now - waiting  # the upstream's own time to first token
                    rec.first_byte_s = now - rec.started
                await send({"type": "http.response.body", "body": out, "more_body": True})
                if b"[DONE]" in out[-16:]:  # `data: [DONE]` and its blank line (LF or CRLF) end it
                    rec.delivered = True
        rest = tap.flush()
        if rest:
            if sample is not None:
                sample.feed(rest)
            if probe is not None:
                probe.feed(rest)
            await send({"type": "http.response.body", "body": rest, "more_body": True})
    except UpstreamError as exc:
        # Bytes already reached the client: no other model may answer now. End with an error event
        # in OpenAI's shape so SDKs raise, instead of a silently truncated answer.
        rec.outcome, rec.error = Outcome.STREAM_ERROR, exc.message
        event = b"data: " + exc.envelope() + b"\n\n"
        await send({"type": "http.response.body", "body": event, "more_body": True})
    finally:
        await upstream.aclose()
    if tap.usage is not None:
        _account(rec, decision, tap.usage)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _answered(rec: RequestRecord, model: ModelRoute, failures: list[UpstreamError]) -> None:
    rec.model, rec.failures, rec.status = model, failures, 200
    if any(isinstance(f, CascadeEscalated) for f in failures):
        rec.reason = "cascade_escalated"


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _account(rec: RequestRecord, decision: Decision, usage: dict[str, Any]) -> None:
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens") or 0
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return
    rec.prompt_tokens, rec.completion_tokens = prompt, completion
    assert rec.model is not None
    rec.cost_usd = usage_cost(rec.model, prompt, completion)
    if rec.cost_usd is not None:
        costs = [c for c in (usage_cost(m, prompt, completion) for m in decision.candidates) if c is not None]
        rec.savings_usd = max(0.0, max(costs, default=rec.cost_usd) - rec.cost_usd)


def _route_headers(rec: RequestRecord) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-request-id", rec.request_id.encode()),
        (b"x-nanoroute-policy", rec.policy.encode()),
        (b"x-nanoroute-reason", rec.reason.encode()),
    ]
    if rec.model is not None:
        headers.append((b"x-nanoroute-model", rec.model.name.encode()))
    headers.append((b"x-nanoroute-fallbacks", str(len(rec.failures)).encode()))
    return headers


async def _send_upstream_failure(send: Send, rec: RequestRecord, exc: AllAttemptsFailed) -> None:
    rec.failures = list(exc.errors)
    rejected = isinstance(exc.errors[-1], UpstreamRejected)
    rec.outcome = Outcome.UPSTREAM_REJECTED if rejected else Outcome.UPSTREAM_ERROR
    rec.status, rec.error = exc.status, exc.message
    await _send_error(send, rec, exc, route=True)


async def _cancel_on_disconnect(receive: Receive, work: Awaitable[None], rec: RequestRecord) -> bool:
    """Run `work`; if the client goes away first, cancel it (which closes the upstream request).

    Returns False when the client went away. A client that leaves once its stream's `[DONE]` reached it
    (`rec.delivered`) had its whole answer: `work` then runs to its end (the upstream's close, the usage),
    its last writes going nowhere. The watcher cancels this very task rather than running `work` in a
    task of its own: one extra task per request instead of two.
    """
    me = asyncio.current_task()
    assert me is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        if rec.delivered:
            return
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
    return not gone


def _request_id(given: bytes | None) -> str:
    if given and len(given) <= 128 and given.isascii() and given.decode().isprintable():
        return given.decode()
    return os.urandom(16).hex()  # 32 random hex digits like uuid4().hex, without a UUID object (2 us of 3)


async def _read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes:
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise PayloadTooLarge(f"The request body is over the gateway's limit of {limit} bytes")
    message = await receive()
    body: bytes = message.get("body", b"")
    # A chunked body has no content-length, and the server may hand it over whole in one message.
    if len(body) > limit:
        raise PayloadTooLarge(f"The request body is over the gateway's limit of {limit} bytes")
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
    send: Send, rec: RequestRecord, exc: NanorouteError, *, status: int | None = None, route: bool = False
) -> None:
    body = exc.envelope()
    extra = _route_headers(rec) if route else [(b"x-request-id", rec.request_id.encode())]
    headers = [_JSON, (b"content-length", str(len(body)).encode()), *extra, *exc.headers()]
    await send({"type": "http.response.start", "status": status or exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
