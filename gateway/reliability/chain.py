"""The attempt chain: try the decision's models in order until one answers.

An attempt that fails with an error whose `fallback` flag is set moves on to the next model; any other
error ends the chain at once (the upstream refused the request itself, so no model will take it).
When every model fails, `AllAttemptsFailed` keeps each attempt's error in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from gateway.backends.base import Attempt, Backend, Reply, ReplyStream
from gateway.config.table import ModelRoute
from gateway.errors import AllAttemptsFailed, UpstreamError
from gateway.reliability.inflight import InFlight
from gateway.routing.decide import Decision
from gateway.routing.request import RoutedRequest

T = TypeVar("T")


@dataclass(slots=True)
class Answered(Generic[T]):
    model: ModelRoute
    result: T
    failures: list[UpstreamError] = field(default_factory=list)


async def call(
    decision: Decision, req: RoutedRequest, backends: Mapping[str, Backend], inflight: InFlight
) -> Answered[Reply]:
    async def send(backend: Backend, attempt: Attempt) -> Reply:
        inflight.enter(attempt.model.name)
        try:
            return await backend.call(attempt)
        finally:
            inflight.leave(attempt.model.name)

    return await _run(decision, req, backends, send)


async def open_stream(
    decision: Decision, req: RoutedRequest, backends: Mapping[str, Backend], inflight: InFlight
) -> Answered[ReplyStream]:
    """The first model that answers 200 opens the stream; it counts as in flight until `aclose()`."""

    async def send(backend: Backend, attempt: Attempt) -> ReplyStream:
        name = attempt.model.name
        inflight.enter(name)
        try:
            stream = await backend.stream(attempt)
        except BaseException:
            inflight.leave(name)
            raise
        return _Counted(stream, inflight, name)

    return await _run(decision, req, backends, send)


async def _run(
    decision: Decision,
    req: RoutedRequest,
    backends: Mapping[str, Backend],
    send: Callable[[Backend, Attempt], Awaitable[T]],
) -> Answered[T]:
    failures: list[UpstreamError] = []
    for model in decision.chain:
        attempt = Attempt(req.op, model, req.body_for(model.upstream_name), req.request_id)
        try:
            result = await send(backends[model.backend], attempt)
        except UpstreamError as exc:
            failures.append(exc)
            if not exc.fallback:
                break
            continue
        return Answered(model, result, failures)
    raise AllAttemptsFailed(decision.policy, failures)


class _Counted:
    """A stream that leaves the in-flight count when closed."""

    def __init__(self, stream: ReplyStream, inflight: InFlight, model: str) -> None:
        self._stream, self._inflight, self._model = stream, inflight, model
        self._open = True

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            self._inflight.leave(self._model)
        await self._stream.aclose()
