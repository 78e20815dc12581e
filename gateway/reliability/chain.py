"""The attempt chain: try the decision's models in order until one answers, all within one deadline.

For each model of `decision.chain` (the policy's ranked candidates, then its fallback list, each once):

1. **Skip** it without a call when it cannot or should not take the request: its context window is too
   small (a pre-check on the prompt estimate plus `max_tokens`, or a smaller-or-equal window than one that
   already said the prompt does not fit), it is at its `max_in_flight` cap, or every replica is out
   (circuit breakers, health checks). A skip is recorded as a `Skipped` error and costs no time.
2. **Call** it. An error a retry may fix (`retryable`) first moves to the model's next ready replica at
   once (each replica once); then it is retried up to `retries.max` times (0 by default) after an
   exponential backoff with jitter, or the upstream's Retry-After when short. Then the next model.
3. An error that no model can fix (`fallback` False: the upstream refused the request itself, or the
   deadline ran out) ends the chain at once.

When the chain runs out, `AllAttemptsFailed` keeps every error in order; when no model was even called
because each was open or saturated, `AllCandidatesUnavailable` answers 503 with Retry-After at once (or,
with `on_all_open: least_recently_failed`, the model that failed longest ago is tried anyway).

Streams: `open_stream` returns once a model has sent its first content (see `backends.stream`), so every
failure before it falls back invisibly; after it, the caller relays and no other model may answer.

`_Run.run` takes an optional `accept` hook, called with each answer before it counts: returning an
`UpstreamError` records it as a failure and moves on to the next model (for a cascade's checks).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from gateway.backends.base import Attempt, Backend, Reply, ReplyStream
from gateway.backends.replica import Replica
from gateway.config.table import DEFAULT_CHAIN, ModelRoute
from gateway.errors import (
    AllAttemptsFailed,
    AllCandidatesUnavailable,
    CircuitOpen,
    ContextLengthExceeded,
    ContextWindowTooSmall,
    NotTranslatable,
    Overloaded,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from gateway.reliability import limits
from gateway.reliability.breaker import clock
from gateway.reliability.health import Health, ModelHealth, Slot
from gateway.routing import tokens
from gateway.routing.decide import Decision
from gateway.routing.request import RoutedRequest

if TYPE_CHECKING:
    from gateway.tracing.otel import RequestTrace

T = TypeVar("T")

PRECHECK_SLACK = 0.9
"""The context pre-check skips a model only when 90% of the prompt estimate plus max_tokens is over its
window: the estimate is not the model's own tokenizer, and a wrong skip costs more than a wasted call."""



@dataclass(slots=True)
class Answered(Generic[T]):
    model: ModelRoute
    result: T
    failures: list[UpstreamError] = field(default_factory=list)


def speaks(req: RoutedRequest, backend: Backend) -> bool:
    """Whether `backend` gets the request in the client's own API (and answers in it): see `Native`."""
    native = req.native
    return native is not None and native.passthrough and native.op in backend.native


Accept = Callable[[ModelRoute, T], Awaitable[UpstreamError | None]]


async def call(decision: Decision, req: RoutedRequest, backends: Mapping[str, Backend], health: Health, *,
               accept: Accept[Reply] | None = None, trace: RequestTrace | None = None) -> Answered[Reply]:
    """The first model's JSON answer. `trace`: the request's spans, when traces are on (each call is one)."""
    # Annotated rather than called as _Run[Reply](...): a subscripted class's call costs 1.5 us per request.
    run: _Run[Reply] = _Run(decision, req, backends, health, trace)
    return await run.run(_send, accept)


async def open_stream(decision: Decision, req: RoutedRequest, backends: Mapping[str, Backend], health: Health, *,
                      accept: Accept[ReplyStream] | None = None,
                      trace: RequestTrace | None = None) -> Answered[ReplyStream]:
    """The first model that sends content opens the stream; it counts as in flight until `aclose()`.
    An `accept` hook that turns a stream down must `aclose()` it."""
    run: _Run[ReplyStream] = _Run(decision, req, backends, health, trace)
    return await run.run(_open, accept)


class _Free:
    """The slot of a model the health state does not know (a request that outlived a reload)."""

    index = None
    _nowhere = Replica("", -1, "")

    def enter(self) -> Replica:
        return self._nowhere  # the backend picks the replica; not counted

    def leave(self, replica: Replica) -> None:
        pass

    def succeeded(self, now: float) -> None:
        pass

    def failed(self, err: UpstreamError, now: float, probes: int, op: object = None) -> None:
        pass

    def release(self, probes: int) -> None:
        pass

    def hold(self, now: float, seconds: float) -> None:
        pass


_FREE = _Free()
AnySlot = Slot | _Free
Send = Callable[["_Run[T]", Backend, Attempt, AnySlot, int], Awaitable[T]]


class _Run(Generic[T]):
    """One request's way down the chain."""

    __slots__ = ("_needed", "_open", "_too_small", "backends", "deadline", "decision", "failures", "health",
                 "loop", "req", "settings", "stopped", "trace")

    def __init__(self, decision: Decision, req: RoutedRequest, backends: Mapping[str, Backend],
                 health: Health, trace: RequestTrace | None = None) -> None:
        self.decision, self.req, self.backends, self.health, self.trace = decision, req, backends, health, trace
        self.loop = asyncio.get_running_loop()
        self.settings = decision.route.reliability if decision.route is not None else DEFAULT_CHAIN
        self.deadline = limits.deadline(req, self.settings, self.loop.time())
        self.failures: list[UpstreamError] = []
        self.stopped = False
        self._open: list[ModelRoute] = []
        self._too_small = 0
        """The largest context window that a model said this prompt does not fit."""
        self._needed = -1
        """Tokens the request needs (prompt estimate plus max output); computed once, when needed."""

    async def run(self, send: Send[T], accept: Accept[T] | None = None) -> Answered[T]:
        for model in self.decision.chain:
            result = await self._try(model, send)
            if self.stopped:
                break
            if result is None:
                continue
            if accept is not None:
                rejected = await accept(model, result)
                if rejected is not None:
                    self.failures.append(rejected)
                    if self.trace is not None:
                        self.trace.turned_down(rejected)
                    continue
            return Answered(model, result, self.failures)
        return await self._ran_out(send)

    async def _ran_out(self, send: Send[T]) -> Answered[T]:
        policy = self.decision.policy
        if self.stopped or any(f.attempted for f in self.failures):
            raise AllAttemptsFailed(policy, self.failures)
        if self._open and self.settings.least_recently_failed:
            health = self.health
            model = min(self._open, key=lambda m: getattr(health.model(m.name), "last_failure", 0.0))
            result = await self._try(model, send, force=True)
            if result is not None:
                return Answered(model, result, self.failures)
        if not any(f.attempted for f in self.failures) and any(
                isinstance(f, CircuitOpen | Overloaded) for f in self.failures):
            raise AllCandidatesUnavailable(policy, self.failures)
        raise AllAttemptsFailed(policy, self.failures)

    async def _try(self, model: ModelRoute, send: Send[T], *, force: bool = False) -> T | None:
        """The model's answer, or None (with the reasons in `failures`) to move on."""
        if self._too_small_for(model):
            return None
        backend = self.backends[model.backend]
        health = self.health.model(model.name)
        native = self.req.native
        if native is not None and speaks(self.req, backend):
            op, body, headers = native.op, native.body_for(model.upstream_name), native.headers
        elif native is not None and native.untranslatable is not None:
            why = native.untranslatable
            self._fail(NotTranslatable(why.message, model=model.name, backend=model.backend, param=why.param))
            return None
        else:
            op, body, headers = self.req.op, self.req.body_for(model.upstream_name, usage=backend.stream_usage), ()
        tries = hops = 0
        avoid: Slot | None = None
        while (picked := self._admit(model, health, force, avoid)) is not None:
            slot, probes = picked
            attempt = Attempt(op, model, body, self.req.request_id, slot.index, self.deadline, headers)
            try:
                if self.trace is None:
                    return await send(self, backend, attempt, slot, probes)
                return await self._traced(send, backend, attempt, slot, probes)
            except UpstreamError as exc:
                err = exc
            self._fail(err)
            if self.stopped or not self._learn(err, model, slot):
                return None
            if err.retryable and isinstance(slot, Slot) and health is not None and hops < len(health.slots) - 1 \
                    and health.has_other(clock(), slot):
                hops += 1  # another replica of the same model, at once: not counted as a retry
                avoid = slot
                continue
            avoid = None
            delay = limits.retry_delay(err, tries, self.settings, self.deadline - self.loop.time())
            if delay is None:
                return None
            await asyncio.sleep(delay)
            tries += 1
        return None

    async def _traced(self, send: Send[T], backend: Backend, attempt: Attempt, slot: AnySlot, probes: int) -> T:
        """`send` inside the attempt's span, which adds its `traceparent` to the attempt's headers."""
        assert self.trace is not None

        async def call(traced: Attempt) -> T:
            return await send(self, backend, traced, slot, probes)

        return await self.trace.attempt(attempt, backend, call)

    def _admit(self, model: ModelRoute, health: ModelHealth | None, force: bool,
               avoid: Slot | None) -> tuple[AnySlot, int] | None:
        """A slot (and its probe marks) for the next call to `model`; None, with the reason recorded, when
        it may not be called now."""
        name, backend = model.name, model.backend
        if self.loop.time() >= self.deadline:
            self._fail(UpstreamTimeout(f"the request's deadline ran out before {name} could be tried "
                                       "(reliability.deadline_ms)", phase="deadline", model=name, backend=backend))
            return None
        cap = model.max_in_flight
        if cap is not None and health is not None and health.in_flight >= cap:
            self._fail(Overloaded(f"{cap} requests in flight already (max_in_flight)", retry_after=1.0, model=name,
                                  backend=backend))
            return None
        if health is None:
            return _FREE, 0
        now = clock()
        picked = health.force(now) if force else health.pick(now, avoid, self.backends[backend].prefer(model))
        if picked is not None:
            return picked
        if health.saturated(now):
            self._fail(Overloaded("every replica's queue is over health.max_waiting", retry_after=health.interval_s,
                                  model=name, backend=backend))
        elif health.rate_limited(now):
            self._fail(CircuitOpen("circuit open: the upstream is limiting the rate of requests",
                                   retry_after=health.retry_after(now), model=name, backend=backend, rate_limited=True))
            self._open.append(model)
        else:
            self._fail(CircuitOpen("circuit open: recent failures or failed health checks took every replica out",
                                   retry_after=health.retry_after(now), model=name, backend=backend))
            self._open.append(model)
        return None

    def _learn(self, err: UpstreamError, model: ModelRoute, slot: AnySlot) -> bool:
        """What a failure says about the rest of this request; False: do not ask this model again."""
        if isinstance(err, ContextLengthExceeded):
            self._too_small = max(self._too_small, model.context_window or 0)
            return False
        if isinstance(err, UpstreamRateLimited) and (err.retry_after or 0) > self.settings.retry_after_max_s:
            slot.hold(clock(), err.retry_after or 0)  # the upstream said when: skip it until then
            return False
        return True

    def _fail(self, err: UpstreamError) -> None:
        self.failures.append(err)
        if not err.fallback:
            self.stopped = True

    def _too_small_for(self, model: ModelRoute) -> bool:
        window = model.context_window
        if window is None:
            return False
        if window <= self._too_small:
            why = f"its context window ({window}) is no larger than one the prompt did not fit ({self._too_small})"
        elif self._overflows(window):
            why = (f"the prompt (about {self._needed} tokens with max_tokens) cannot fit its context window "
                   f"({window})")
        else:
            return False
        self._fail(ContextWindowTooSmall(f"not tried: {why}", model=model.name, backend=model.backend))
        return True

    def _overflows(self, window: int) -> bool:
        req = self.req
        out = _max_output(req.body)
        if len(req.raw) + out <= window:  # a token is at least a byte: surely fits, no need to count
            return False
        if self._needed < 0:
            prompt = req.prompt_tokens if req.prompt_tokens is not None else tokens.count(req.body, None)
            self._needed = int(prompt * PRECHECK_SLACK) + out
        return self._needed > window


def _max_output(body: dict[str, Any]) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


async def _send(run: _Run[Reply], backend: Backend, attempt: Attempt, slot: AnySlot, probes: int) -> Reply:
    replica = slot.enter()
    try:
        reply = await backend.call(attempt)
    except UpstreamError as exc:
        slot.failed(exc, clock(), probes, attempt.op)
        raise
    except BaseException:  # cancelled: the client went away; no verdict on the model
        slot.release(probes)
        raise
    finally:
        slot.leave(replica)
    slot.succeeded(clock())
    return reply


async def _open(run: _Run[ReplyStream], backend: Backend, attempt: Attempt, slot: AnySlot,
                probes: int) -> ReplyStream:
    replica = slot.enter()
    try:
        stream = await backend.stream(attempt)
    except BaseException as exc:
        slot.leave(replica)
        if isinstance(exc, UpstreamError):
            slot.failed(exc, clock(), probes, attempt.op)
        else:
            slot.release(probes)
        raise
    slot.succeeded(clock())  # content arrived: the model works (a later failure still counts against it)
    return _Tracked(stream, slot, replica)


class _Tracked:
    """An open stream, in flight on its model and replica until closed, that reports a failure in the
    middle of it to its slot. The one wrapper between a backend's stream and the relay."""

    __slots__ = ("_it", "_replica", "_slot", "_stream")

    def __init__(self, stream: ReplyStream, slot: AnySlot, replica: Replica) -> None:
        self._stream, self._slot, self._replica = stream, slot, replica
        self._it = stream.__aiter__()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._it.__anext__()
        except UpstreamError as exc:
            self._slot.failed(exc, clock(), 0)
            raise

    async def aclose(self) -> None:
        slot, self._slot = self._slot, _FREE
        if slot is not _FREE:
            slot.leave(self._replica)
        await self._stream.aclose()
