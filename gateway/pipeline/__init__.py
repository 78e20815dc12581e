"""The request pipeline: the stages every proxied request passes, in order, each owned by one module.

    stage       module                   owns
    ingress     pipeline/ingress/        the protocol (OpenAI's chat completions, completions and embeddings,
                                         its Responses API, Anthropic's Messages API): paths, the body -> a
                                         RoutedRequest, the answer and errors in its words
    admission   pipeline/admission/      whether it may go on: client keys (before the body is read); then,
                                         once routed, the key's and team's limits and budget
    route       pipeline/route.py        routing.decide (policy, chain), then rollout, capture, cascade
    relay       pipeline/relay.py        reliability.chain (attempts, fallback), the answer as JSON or SSE
    observers   pipeline/observers.py    usage and cost, settling limits and budgets, learning, metrics,
                                         access log, capture, rollout

A request carries a `RequestContext` (`context.py`): the snapshot of the gateway it started with, its
headers, what each stage made of it, and its record. `build()` below is where stages are registered: a
new protocol, admission check or observer is a module (or class) of its own and one line there.

With traces on (`gateway.tracing`), `handle` begins the request's span, the attempt chain wraps each upstream
call in a span of its own, and the `Traced` observer ends the request's.

Pure ASGI rather than a framework route, so a stream is relayed chunk by chunk as it arrives and no
per-request framework machinery runs. A client that disconnects cancels its upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable
from time import perf_counter
from typing import TYPE_CHECKING

from gateway.backends.base import Operation
from gateway.capture.capture import Capture
from gateway.errors import ClientError, MethodNotAllowed, NanorouteError, PolicyUnmet, StorageUnavailable
from gateway.governance.governor import Governor
from gateway.metrics import Metrics
from gateway.pipeline.admission import Admission
from gateway.pipeline.admission.keys import KeyCheck, Keys
from gateway.pipeline.admission.limits import Limits
from gateway.pipeline.context import Headers, Receive, RequestContext, Scope, Send, Snapshot
from gateway.pipeline.ingress import Ingress, read_body, request_id
from gateway.pipeline.ingress.anthropic import AnthropicIngress
from gateway.pipeline.ingress.openai import OpenAIIngress
from gateway.pipeline.ingress.responses import ResponsesIngress
from gateway.pipeline.observers import (
    AccessLog,
    Captured,
    Compared,
    Count,
    Learn,
    Learned,
    Observer,
    Settle,
    Stored,
    Traced,
    Usage,
)
from gateway.pipeline.relay import relay, send_error, send_json
from gateway.pipeline.route import Route
from gateway.predictions import Predictions
from gateway.record import Outcome, RequestRecord
from gateway.rollout import Rollouts
from gateway.routing.estimate import prompt_tokens
from gateway.store.turns import Turns

if TYPE_CHECKING:
    from gateway.tracing.otel import Tracing

log = logging.getLogger("nanoroute")


def build(*, keys: KeyCheck, governor: Governor, capture: Capture, rollouts: Rollouts, turns: Turns | None,
          predictions: Predictions, metrics: Metrics | None, access_log: bool,
          tracing: Tracing | None = None) -> Pipeline:
    """The stages, registered in order. `turns`: the Responses API's store of conversations, if on; `tracing`:
    OpenTelemetry's tracer, when the environment asks for traces (`gateway.tracing`)."""
    observers: list[Observer] = [Usage(), Settle(governor, metrics), Learn()]
    if metrics is not None:
        observers.append(Count(metrics))
    if access_log:
        observers.append(AccessLog())
    observers += [Captured(capture), Compared(rollouts), Learned(predictions)]
    if turns is not None:
        observers.append(Stored(turns))
    if tracing is not None:  # last: the gateway's own duties first, whatever a span does
        observers.append(Traced())
    return Pipeline(ingresses=[OpenAIIngress(), ResponsesIngress(turns), AnthropicIngress()],
                    admission=[Keys(keys), Limits(governor, metrics)], route=Route(rollouts, capture),
                    observers=observers, tracing=tracing)


class Pipeline:
    def __init__(self, *, ingresses: Iterable[Ingress], admission: Iterable[Admission], route: Route,
                 observers: Iterable[Observer], tracing: Tracing | None = None) -> None:
        self.routes: dict[str, tuple[Ingress, Operation]] = {
            path: (ingress, op) for ingress in ingresses for path, op in ingress.routes.items()}
        """Path -> the ingress that serves it and the operation it asks for."""
        checks = tuple(admission)
        self._on_headers = tuple(c for c in checks if c.before_body)
        self._on_route = tuple(c for c in checks if not c.before_body)
        self._route = route
        self._observers = tuple(observers)
        self._tracing = tracing

    async def handle(self, state: Snapshot, ingress: Ingress, op: Operation, scope: Scope, receive: Receive,
                     send: Send) -> None:
        headers = Headers(scope["headers"])
        rec = RequestRecord(request_id(headers.request_id), perf_counter(), op=op.name.lower())
        ctx = RequestContext(state, ingress, op, headers, rec)
        if self._tracing is not None:  # the one check traces cost when they are off
            ctx.trace = self._tracing.begin(scope, rec, op, state.table)
        try:
            await self._run(ctx, scope, receive, send)
        except Exception:
            # A bug, not a client or upstream problem: log it whole, answer in the protocol's shape if still possible.
            log.exception("internal error handling request %s", rec.request_id)
            rec.outcome, rec.status = Outcome.INTERNAL_ERROR, 500
            with contextlib.suppress(Exception):  # fails when the response had already started
                await send_error(ctx, NanorouteError("Internal error in the gateway"), send)
        finally:
            rec.duration_s = perf_counter() - rec.started
            for observer in self._observers:
                observer.observe(ctx)

    async def _run(self, ctx: RequestContext, scope: Scope, receive: Receive, send: Send) -> None:
        rec = ctx.record
        if scope["method"] != "POST":
            rec.outcome, rec.status = Outcome.CLIENT_ERROR, 405
            await send_error(ctx, MethodNotAllowed(f"Use POST for {scope['path']}"), send)
            return
        try:
            for check in self._on_headers:
                await check.admit(ctx)
            raw = await read_body(receive, ctx.headers.content_length, ctx.state.max_body_bytes)
            req = ctx.request = await ctx.ingress.parse(ctx, raw)
            if ctx.principal is not None:
                req.access = ctx.principal.access
            rec.task, rec.stream = req.task, req.stream
            self._route.decide(ctx)
            for check in self._on_route:
                await check.admit(ctx)
        except (ClientError, PolicyUnmet) as exc:
            rec.outcome, rec.status = Outcome.CLIENT_ERROR, exc.status
            await send_error(ctx, exc, send)
            return
        except StorageUnavailable as exc:  # the Responses API's conversations; limits with on_store_error: deny
            rec.outcome, rec.status, rec.error = Outcome.INTERNAL_ERROR, exc.status, exc.message
            await send_error(ctx, exc, send)
            return
        if ctx.op is Operation.COUNT_TOKENS:  # answered here: the model exists and the key may use it
            rec.status = 200
            count = prompt_tokens(req, ctx.state.signals)
            await send_json(ctx, ctx.ingress.count_body(count), send)
            return
        # The request runs to its end on the snapshot it started with, whatever a reload swaps in meanwhile.
        if not await _cancel_on_disconnect(receive, relay(ctx, send), rec):
            rec.outcome, rec.status = Outcome.CANCELLED, 499


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
