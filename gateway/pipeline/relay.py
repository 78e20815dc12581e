"""The relay: run the attempt chain, then send its answer to the client, as JSON or as server-sent events.

Both encodings of an answer start the same way: the chain (`reliability.chain`) tries the decision's
models until one answers, or every one failed (the error goes back in the client's protocol, with the
route headers). Then a JSON answer goes out whole, and a stream chunk by chunk as the upstream sends it,
its usage read on the way (`sse.UsageTap`). The record ends up holding what observers read: the model
that answered, the failures before it, the upstream's usage, and, when asked (`rec.keep`), the answer.

A stream that fails after its first bytes reached the client cannot switch models: it ends with an
error event, worded by the request's ingress, so SDKs raise instead of returning a silently truncated
answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from time import perf_counter

from gateway.backends.base import Reply, ReplyStream
from gateway.config.table import ModelRoute
from gateway.errors import AllAttemptsFailed, CascadeEscalated, NanorouteError, UpstreamError, UpstreamRejected
from gateway.pipeline.context import RequestContext, Send
from gateway.pipeline.sse import Tap
from gateway.record import MAX_KEPT_BYTES, Outcome, RequestRecord
from gateway.reliability import chain

_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def relay(ctx: RequestContext, send: Send) -> None:
    """Answer the request: from the first model of its chain that answers, or with the chain's error."""
    req, decision, rec, state, gate = ctx.request, ctx.decision, ctx.record, ctx.state, ctx.gate
    assert req is not None and decision is not None
    t0 = perf_counter()
    try:
        if req.stream:
            streamed = await chain.open_stream(decision, req, state.backends, state.health,
                                               accept=gate.judge_stream if gate is not None else None, trace=ctx.trace)
            _answered(rec, streamed, t0)
            replay = gate.replay(streamed.model) if gate is not None else None
            native = _native(ctx, streamed.model)
            await _send_stream(ctx, streamed.result, replay, ctx.ingress.tap(ctx, native), send)
        else:
            replied = await chain.call(decision, req, state.backends, state.health,
                                       accept=gate.judge_reply if gate is not None else None, trace=ctx.trace)
            _answered(rec, replied, t0)
            await _send_json(ctx, replied.result, _native(ctx, replied.model), send)
    except AllAttemptsFailed as exc:
        rec.upstream_s = perf_counter() - t0
        rec.failures = list(exc.errors)
        rec.outcome = Outcome.UPSTREAM_REJECTED if isinstance(exc.errors[-1], UpstreamRejected) \
            else Outcome.UPSTREAM_ERROR
        rec.status, rec.error = exc.status, exc.message
        await send_error(ctx, exc, send, route=True)


def _native(ctx: RequestContext, model: ModelRoute) -> bool:
    """Whether the model answered in the client's own API (`Backend.native`). Such an answer is relayed
    and counted, but not kept: capture and rollouts read chat completions answers."""
    req = ctx.request
    assert req is not None
    if not chain.speaks(req, ctx.state.backends[model.backend]):
        return False
    rec = ctx.record
    rec.keep, rec.events, ctx.sample = False, None, None
    return True


def _answered(rec: RequestRecord, answered: chain.Answered[Reply] | chain.Answered[ReplyStream], t0: float) -> None:
    rec.upstream_s = perf_counter() - t0
    rec.model, rec.failures, rec.status = answered.model, answered.failures, 200
    if any(isinstance(f, CascadeEscalated) for f in answered.failures):
        rec.reason = "cascade_escalated"


async def _send_json(ctx: RequestContext, reply: Reply, native: bool, send: Send) -> None:
    rec = ctx.record
    usage = reply.parsed.get("usage")
    if isinstance(usage, dict):
        rec.usage = usage
    if rec.keep:
        rec.reply, rec.kept_bytes = reply.parsed, len(reply.body)
    body = ctx.ingress.answer(ctx, reply, native)
    headers = [_JSON, (b"content-length", str(len(body)).encode()), *route_headers(rec)]
    rec.first_byte_s = perf_counter() - rec.started
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_stream(ctx: RequestContext, upstream: ReplyStream, replay: bytes | None, tap: Tap,
                       send: Send) -> None:
    """Relay the stream through the ingress's tap (which reads usage, and translates when the model does
    not speak the client's API); keep the upstream's chat completion chunks when an observer reads them."""
    rec = ctx.record
    chunks: AsyncIterable[bytes] = upstream if replay is None else _once(replay)
    events = rec.events  # a list when an observer reads the answer, else None
    await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *route_headers(rec)]})
    waiting = perf_counter()
    try:
        async for chunk in chunks:
            if events is not None:
                _keep(rec, events, chunk)
            rec.stream_events += chunk.count(b"\n\n")
            out = tap.feed(chunk)
            if out:
                if rec.first_byte_s is None:
                    now = perf_counter()
                    rec.upstream_s += now - waiting  # the upstream's own time to first token
                    rec.first_byte_s = now - rec.started
                await send({"type": "http.response.body", "body": out, "more_body": True})
                rec.delivered = tap.done
        rest = tap.close()
        if rest:
            await send({"type": "http.response.body", "body": rest, "more_body": True})
            rec.delivered = tap.done
    except UpstreamError as exc:
        # Bytes already reached the client: no other model may answer now. End with an error event.
        rec.outcome, rec.error = Outcome.STREAM_ERROR, exc.message
        await send({"type": "http.response.body", "body": tap.error_event(exc), "more_body": True})
    finally:
        await upstream.aclose()
        rec.usage = tap.usage
        ctx.answer = tap.final
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _keep(rec: RequestRecord, events: list[bytes], data: bytes) -> None:
    rec.kept_bytes += len(data)
    if rec.kept_bytes <= MAX_KEPT_BYTES:
        events.append(data)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def route_headers(rec: RequestRecord) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-request-id", rec.request_id.encode()),
        (b"x-nanoroute-policy", rec.policy.encode()),
        (b"x-nanoroute-reason", rec.reason.encode()),
    ]
    if rec.model is not None:
        headers.append((b"x-nanoroute-model", rec.model.name.encode()))
    headers.append((b"x-nanoroute-fallbacks", str(len(rec.failures)).encode()))
    if rec.limit_headers:
        headers += rec.limit_headers
    return headers


async def send_json(ctx: RequestContext, body: bytes, send: Send) -> None:
    """A JSON answer the gateway makes itself (a token count), with the request id."""
    headers = [_JSON, (b"content-length", str(len(body)).encode()), (b"x-request-id", ctx.record.request_id.encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(ctx: RequestContext, exc: NanorouteError, send: Send, *, route: bool = False) -> None:
    """The error as the request's protocol words it, with the request id (and the route, once there is one)."""
    rec = ctx.record
    body = ctx.ingress.error_body(exc)
    extra = route_headers(rec) if route else [(b"x-request-id", rec.request_id.encode())]
    headers = [_JSON, (b"content-length", str(len(body)).encode()), *extra, *exc.headers()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
