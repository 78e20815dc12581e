"""The attempt chain: try the decision's models in order until one answers.

An attempt that fails with an error whose `fallback` flag is set moves on to the next model; any other
error ends the chain at once (the upstream refused the request itself, so no model will take it).
When every model fails, `AllAttemptsFailed` keeps each attempt's error in order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from gateway.backends.base import Attempt, Backend, Reply, ReplyStream
from gateway.config.table import ModelRoute
from gateway.errors import AllAttemptsFailed, UpstreamError
from gateway.routing.decide import Decision
from gateway.routing.request import RoutedRequest

T = TypeVar("T")


@dataclass(slots=True)
class Answered(Generic[T]):
    model: ModelRoute
    result: T
    failures: list[UpstreamError] = field(default_factory=list)


async def call(decision: Decision, req: RoutedRequest, backends: Mapping[str, Backend]) -> Answered[Reply]:
    return await _run(decision, req, backends, lambda b, a: b.call(a))


async def open_stream(
    decision: Decision, req: RoutedRequest, backends: Mapping[str, Backend]
) -> Answered[ReplyStream]:
    return await _run(decision, req, backends, lambda b, a: b.stream(a))


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
