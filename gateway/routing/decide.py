"""One function decides where a request goes: `decide(table, req, signals) -> Decision`.

1. A request that pins a model (X-Nanoroute-Model, for keys allowed to) goes to that model alone.
2. Otherwise the first policy whose `match` holds wins. Every candidate is estimated and checked
   against the policy's `require` constraints; the strategy ranks the ones that meet them (all of them,
   `best_effort`, when none does and the policy allows it). The attempt chain is that ranking, then the
   policy's `fallback` list, each model once.
3. A request that matches no policy and names a catalog model goes straight to it (`direct`, unless
   the config turns that off); anything else is `model_not_found`.

A client key that the config's `keys` limits passes over the policies it may not match, and its chain
keeps only the models it may use (`model_not_allowed` when none is left).

Strategies only rank; this module applies constraints and turns rankings into chains. `explain()`
returns the same decision with every candidate's figures, for /admin/explain.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.config.table import DIRECT, KeyAccess, LearnedRoute, ModelRoute, PolicyRoute, RoutingTable
from gateway.errors import ModelNotAllowed, ModelNotFound, PermissionDenied, PolicyUnmet
from gateway.routing.estimate import Estimate, estimate_with, output_tokens, prompt_tokens
from gateway.routing.request import RoutedRequest
from gateway.routing.signals import Signals

# Constraint -> the reason code given when it is what kept the strategy's first choice out.
QUALITY_FLOOR, LATENCY_SLO, COST_CAP, CONTEXT_WINDOW = "quality_floor", "latency_slo", "cost_cap", "context_window"


@dataclass(frozen=True, slots=True)
class Decision:
    policy: str
    chain: tuple[ModelRoute, ...]
    reason: str
    """A short fixed code: ordered, weighted, cheapest, fastest, cascade, learned, direct, pinned, best_effort, rollout,
    or the constraint that kept the strategy's own first choice out (quality_floor, latency_slo,
    cost_cap, context_window)."""
    candidates: tuple[ModelRoute, ...]
    """The policy's candidates: the most expensive one is the baseline that savings are counted against."""
    route: PolicyRoute | None = None
    """The matched policy (None for `direct` and pinned requests), for what the attempt chain needs of it."""
    cascade_depth: int = 0
    """`cascade`: how many models at the head of the chain have their answers checked before they count."""
    allowed: frozenset[str] | None = None
    """The catalog models the client's key may use (None: any): a rollout sends its prompt to no other."""


@dataclass(slots=True)
class Candidate:
    """One candidate as the policy saw it: its estimate and the constraints it failed."""

    estimate: Estimate
    failed: tuple[str, ...]
    quality: float | None
    predicted: float | None = None
    """`learned`: the router's predicted score of this model for this prompt."""


@dataclass(frozen=True, slots=True)
class Explained:
    decision: Decision
    candidates: tuple[Candidate, ...] = field(default=())
    prompt_tokens: int | None = None


def decide(table: RoutingTable, req: RoutedRequest, signals: Signals) -> Decision:
    return explain(table, req, signals).decision


def explain(table: RoutingTable, req: RoutedRequest, signals: Signals) -> Explained:
    access = req.access
    if req.pin is not None:
        return Explained(_pinned(table, req, access))
    for policy in table.policies:
        if (access is None or access.may_match(policy.name)) and _matches(policy, req, signals):
            found = _apply(policy, req, signals)
            return found if access is None else _restrict(found, access)
    model = table.models.get(req.model)
    if model is None:
        raise ModelNotFound(req.model)
    if not table.direct:
        raise ModelNotFound(req.model, "no policy routes it (requests straight to catalog models are turned off)")
    if access is not None and not access.may_use(model.name):
        raise ModelNotAllowed(f"This key may not use the model '{model.name}'")
    return Explained(Decision(DIRECT, (model,), DIRECT, (model,), allowed=_allowed(access)))


def _allowed(access: KeyAccess | None) -> frozenset[str] | None:
    return access.models if access is not None else None


def _restrict(found: Explained, access: KeyAccess) -> Explained:
    """The decision with its chain cut to the models the key may use."""
    d = found.decision
    if access.models is None:
        return found
    chain = tuple(m for m in d.chain if m.name in access.models)
    if not chain:
        raise ModelNotAllowed(f"This key may use none of the models that policy '{d.policy}' routes to")
    # The cascade checks the head of the chain; the models cut out no longer take part in it.
    depth = sum(1 for m in d.chain[:d.cascade_depth] if m.name in access.models)
    decision = Decision(d.policy, chain, d.reason, d.candidates, d.route, min(depth, len(chain) - 1), access.models)
    return Explained(decision, found.candidates, found.prompt_tokens)


def _pinned(table: RoutingTable, req: RoutedRequest, access: KeyAccess | None) -> Decision:
    allowed = table.pin_keys
    if "*" not in allowed and (req.key_id is None or req.key_id not in allowed):
        raise PermissionDenied("This key may not pin a model with X-Nanoroute-Model", param="X-Nanoroute-Model")
    model = table.models.get(req.pin or "")
    if model is None:
        raise ModelNotFound(req.pin or "")
    if access is not None and not access.may_use(model.name):
        raise ModelNotAllowed(f"This key may not use the model '{model.name}'")
    return Decision("pinned", (model,), "pinned", (model,), allowed=_allowed(access))


def client_models(table: RoutingTable, access: KeyAccess | None) -> list[str]:
    """The model names a client whose key may use `access` may send: catalog models it may use (when direct
    routing is on, or a policy it may match routes any name), and the literal names of the policies it may match."""
    policies = [p for p in table.policies if access is None or access.may_match(p.name)]
    any_name = any(p.model_pattern is None for p in policies)
    names = [m for m in table.models if (table.direct or any_name) and (access is None or access.may_use(m))]
    for p in policies:
        names += [n for n in p.literal_models if n not in names]
    return names


def _matches(p: PolicyRoute, req: RoutedRequest, signals: Signals) -> bool:
    m = p.match
    if p.model_pattern is not None and p.model_pattern.fullmatch(req.model) is None:
        return False
    if p.tasks is not None and req.task not in p.tasks:
        return False
    if p.keys is not None and req.key_id not in p.keys:
        return False
    if m.has_tools is not None and m.has_tools != req.has_tools:
        return False
    if m.json_mode is not None and m.json_mode != req.json_mode:
        return False
    if m.stream is not None and m.stream != req.stream:
        return False
    if m.min_prompt_tokens is not None or m.max_prompt_tokens is not None:
        n = prompt_tokens(req, signals)
        if m.min_prompt_tokens is not None and n < m.min_prompt_tokens:
            return False
        if m.max_prompt_tokens is not None and n > m.max_prompt_tokens:
            return False
    return True


def _apply(policy: PolicyRoute, req: RoutedRequest, signals: Signals) -> Explained:
    pin = prompt_tokens(req, signals) if policy.needs_tokens else None
    pout = output_tokens(req, policy.name, signals)
    cands = tuple(_check(estimate_with(m, pin, pout, signals), policy, req, signals) for m in policy.candidates)
    if policy.learned is not None:
        _predict(policy.learned, req, cands)
    eligible = [c for c in cands if not c.failed]
    rank = _STRATEGIES[policy.strategy]
    if eligible:
        ranked = rank(policy, req, eligible)
        reason = _reason(policy, req, cands, ranked[0])
    elif policy.on_unmet == "reject":
        detail = "; ".join(f"{c.estimate.model.name}: {', '.join(c.failed)}" for c in cands)
        raise PolicyUnmet(f"No candidate of policy '{policy.name}' meets its requirements ({detail})")
    else:
        ranked, reason = rank(policy, req, cands), "best_effort"
    chain = tuple(dict.fromkeys([*(c.estimate.model for c in ranked), *policy.fallback]))
    depth = len(ranked) - 1 if policy.strategy == "cascade" else 0
    decision = Decision(policy.name, chain, reason, policy.candidates, policy, depth)
    return Explained(decision, cands, req.prompt_tokens)


def _check(e: Estimate, policy: PolicyRoute, req: RoutedRequest, signals: Signals) -> Candidate:
    """Unknown figures (no price, no latency, no window) do not fail a constraint; rankings put them last.
    Quality measured live (a rollout's score) wins over the catalog's."""
    r = policy.require
    failed = []
    quality = signals.quality(e.model.name, req.task)
    if quality is None:
        quality = e.model.quality_for(req.task)
    # `learned`: the floor is met by the mix of routed prompts (the calibrated threshold), not by each model.
    if r.min_quality is not None and policy.learned is None and (quality is None or quality < r.min_quality):
        failed.append(QUALITY_FLOOR)
    if r.p95_latency_ms is not None and e.latency_p95_ms is not None and e.latency_p95_ms > r.p95_latency_ms:
        failed.append(LATENCY_SLO)
    if r.max_cost_usd is not None and e.cost_usd is not None and e.cost_usd > r.max_cost_usd:
        failed.append(COST_CAP)
    window = e.model.context_window
    if window is not None:
        needed = max(r.min_context or 0, e.prompt_tokens + e.output_tokens if e.prompt_tokens is not None else 0)
        if needed > window:
            failed.append(CONTEXT_WINDOW)
    return Candidate(e, tuple(failed), quality)


def _reason(policy: PolicyRoute, req: RoutedRequest, cands: Sequence[Candidate], chosen: Candidate) -> str:
    """The strategy's name, unless a constraint kept out the model it would have chosen without constraints."""
    if policy.strategy in ("cheapest", "fastest"):
        key = _cost if policy.strategy == "cheapest" else _latency
        unconstrained = min(cands, key=lambda c: _unknown_last(key(c.estimate)))
        if unconstrained is not chosen and unconstrained.failed:
            return unconstrained.failed[0]
    elif policy.strategy == "ordered" and cands[0] is not chosen and cands[0].failed:
        return cands[0].failed[0]
    return policy.strategy


Rank = Callable[[PolicyRoute, RoutedRequest, Sequence[Candidate]], list[Candidate]]


def _predict(learned: LearnedRoute, req: RoutedRequest, cands: Sequence[Candidate]) -> None:
    """The router's prediction for the prompt, once per request: well under a millisecond, and bounded
    (gateway/learned/features.py reads at most its last 16 KiB), so it runs on the event loop."""
    if req.predicted is None:
        req.predicted = learned.router.predict(req.body)
    models = learned.router.models
    for c in cands:
        c.predicted = req.predicted[models.index(c.estimate.model.name)]


def _learned(policy: PolicyRoute, req: RoutedRequest, cands: Sequence[Candidate]) -> list[Candidate]:
    """The cheapest candidate whose predicted score reaches the policy's calibrated threshold, else the dearest;
    then the dearer ones (as good a fallback or better), then the cheaper ones, dearest first."""
    learned = policy.learned
    assert learned is not None
    ordered = sorted(cands, key=lambda c: learned.rank(c.estimate.model.name))
    t = learned.threshold.value
    at = next((i for i, c in enumerate(ordered[:-1]) if c.predicted is not None and c.predicted >= t),
              len(ordered) - 1)
    return [ordered[at], *ordered[at + 1:], *reversed(ordered[:at])]


def _ordered(policy: PolicyRoute, req: RoutedRequest, cands: Sequence[Candidate]) -> list[Candidate]:
    return list(cands)


def _unknown_last(v: float | None) -> float:
    return float("inf") if v is None else v


def _cost(e: Estimate) -> float | None:
    return e.cost_usd


def _latency(e: Estimate) -> float | None:
    return e.latency_ms


def _by(key: Callable[[Estimate], float | None]) -> Rank:
    def rank(policy: PolicyRoute, req: RoutedRequest, cands: Sequence[Candidate]) -> list[Candidate]:
        # Stable: ties keep the policy's order; unknown figures go last.
        return sorted(cands, key=lambda c: _unknown_last(key(c.estimate)))

    return rank


def _weighted(policy: PolicyRoute, req: RoutedRequest, cands: Sequence[Candidate]) -> list[Candidate]:
    """One candidate drawn by weight (among those given), then the others in the policy's order."""
    weight = dict(zip(policy.candidates, policy.weights, strict=True))
    total = sum(weight[c.estimate.model] for c in cands)
    sticky = req.user if policy.sticky == "user" else req.key_id if policy.sticky == "key" else None
    point = _unit(f"{policy.name}\0{sticky}") if sticky is not None else random.random()
    point *= total
    for i, c in enumerate(cands):
        point -= weight[c.estimate.model]
        if point < 0:
            return [c, *cands[:i], *cands[i + 1:]]
    return list(cands)


def _unit(key: str) -> float:
    """A stable number in [0, 1) for a key: the same user or client key lands on the same model."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


_STRATEGIES: dict[str, Rank] = {
    "ordered": _ordered,
    "weighted": _weighted,
    "cheapest": _by(_cost),
    "fastest": _by(_latency),
    "cascade": _by(_cost),
    "learned": _learned,
}
