"""One function decides where a request goes: `decide(table, request) -> Decision`.

First matching policy wins. Its strategy only ranks the candidates that meet the policy's
constraints; this module turns that ranking into the attempt chain: the ranked candidates, then the
policy's `fallback` list, each model once. A request that matches no policy and names a catalog model
goes straight to it; anything else is `model_not_found`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.config.table import DIRECT, ModelRoute, PolicyRoute, RoutingTable
from gateway.errors import ModelNotFound
from gateway.routing.estimate import Estimate, estimate
from gateway.routing.request import RoutedRequest


@dataclass(frozen=True, slots=True)
class Decision:
    policy: str
    chain: tuple[ModelRoute, ...]
    reason: str
    """A short fixed code: ordered, cheapest, fastest, direct, best_effort."""
    candidates: tuple[ModelRoute, ...]
    """The policy's candidates: the most expensive one is the baseline that savings are counted against."""


def decide(table: RoutingTable, req: RoutedRequest) -> Decision:
    for policy in table.policies:
        if policy.matches(req.model, req.task):
            return _apply(policy, req)
    model = table.models.get(req.model)
    if model is None:
        raise ModelNotFound(req.model)
    return Decision(DIRECT, (model,), DIRECT, (model,))


def _apply(policy: PolicyRoute, req: RoutedRequest) -> Decision:
    estimates = [estimate(m, req) for m in policy.candidates]
    eligible = [e for e in estimates if _meets(e, policy, req.task)]
    if eligible:
        ranked, reason = _STRATEGIES[policy.strategy](eligible), policy.strategy
    else:
        ranked, reason = _STRATEGIES[policy.strategy](estimates), "best_effort"
    chain = dict.fromkeys([*(e.model for e in ranked), *policy.fallback])
    return Decision(policy.name, tuple(chain), reason, policy.candidates)


def _meets(e: Estimate, policy: PolicyRoute, task: str | None) -> bool:
    """Unknown figures (no price, no latency prior) do not fail a constraint; they rank last instead."""
    req = policy.require
    if req.min_quality is not None:
        quality = e.model.quality_for(task)
        if quality is None or quality < req.min_quality:
            return False
    if req.min_context is not None and e.model.context_window is not None and e.model.context_window < req.min_context:
        return False
    if req.max_cost_usd is not None and e.cost_usd is not None and e.cost_usd > req.max_cost_usd:
        return False
    return not (req.p95_latency_ms is not None and e.latency_ms is not None and e.latency_ms > req.p95_latency_ms)


def _ordered(estimates: Sequence[Estimate]) -> list[Estimate]:
    return list(estimates)


def _by(key: Callable[[Estimate], float | None]) -> Callable[[Sequence[Estimate]], list[Estimate]]:
    def rank(estimates: Sequence[Estimate]) -> list[Estimate]:
        # Stable sort: ties keep the policy's order; unknown figures go last.
        return sorted(estimates, key=lambda e: (key(e) is None, key(e) or 0.0))

    return rank


_STRATEGIES: dict[str, Callable[[Sequence[Estimate]], list[Estimate]]] = {
    "ordered": _ordered,
    "cheapest": _by(lambda e: e.cost_usd),
    "fastest": _by(lambda e: e.latency_ms),
}
