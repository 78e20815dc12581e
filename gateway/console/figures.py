"""What each page of the console shows, as plain data: the overview (from this pod's series, or from
Prometheus), the policies, the rollouts, the vLLM replicas and adapters, the health of models and replicas.

The templates only lay these out; everything here is read from the gateway's own objects, as the admin API
reads them, and nothing here changes anything.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.api.deps import GatewayView
from gateway.api.keys import ledger_sums
from gateway.config.table import PolicyRoute, RoutingTable
from gateway.console.series import Series
from gateway.governance.counters import ledger_day
from gateway.pipeline.context import Snapshot
from gateway.reliability.breaker import CLOSED, HALF_OPEN, OPEN, clock
from gateway.rollout.state import upper_bound

BREAKER = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half-open"}

Values = Sequence[float | None]


@dataclass
class Overview:
    """The overview's figures, from one source; `data()` is what the page's charts are drawn from."""

    scope: str
    """`pod`: this pod's own series; `cluster`: every replica, from Prometheus."""
    source: str
    step_s: float
    times: list[float]
    charts: list[dict[str, Any]]
    models: list[dict[str, Any]]
    """Per model: requests per second (last minute), requests and error rate (last hour), p50 and p95 (ms)."""
    since: float
    """When today's totals start: midnight UTC, or this process's start if later (pod scope)."""
    cost: list[dict[str, Any]]
    savings: list[dict[str, Any]]
    note: str | None = None
    """Why the figures are not what was asked for (Prometheus did not answer: this pod's instead)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def data(self) -> dict[str, Any]:
        return {"scope": self.scope, "step_s": self.step_s, "t": self.times, "charts": self.charts}

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


def chart(chart_id: str, title: str, unit: str, series: Mapping[Any, Values]) -> dict[str, Any]:
    """One chart: a line per series, named by its key (a label value, or a tuple of them joined by a space)."""
    lines = [{"label": key if isinstance(key, str) else " ".join(key), "values": list(values)}
             for key, values in sorted(series.items(), key=lambda kv: str(kv[0]))]
    return {"id": chart_id, "title": title, "unit": unit, "series": lines}


def share(counts: Mapping[Any, Values]) -> dict[Any, list[float | None]]:
    """Each series as a percentage of their sum at each point (None where the sum is 0)."""
    keys = list(counts)
    n = max((len(v) for v in counts.values()), default=0)
    out: dict[Any, list[float | None]] = {k: [None] * n for k in keys}
    for i in range(n):
        total = sum(v[i] or 0.0 for v in counts.values())
        if total > 0:
            for k in keys:
                out[k][i] = 100 * (counts[k][i] or 0.0) / total
    return out


def today_rows(by_policy: Mapping[str, float]) -> list[dict[str, Any]]:
    return [{"policy": p, "usd": usd} for p, usd in sorted(by_policy.items(), key=lambda kv: -kv[1]) if usd > 0]


def _sums(series: Iterable[Values], n: int) -> list[float]:
    out = [0.0] * n
    for values in series:
        for i, v in enumerate(values):
            out[i] += v or 0.0
    return out


def local_overview(s: Series) -> Overview:
    """This pod's overview, from its in-memory series."""
    n = len(s.times)
    models = sorted({model for _, model in s.requests})
    policies = sorted({policy for policy, _ in s.requests if policy != "none"})
    requests = {m: _sums((v for (_, model), v in s.requests.items() if model == m), n) for m in models}
    errors = {m: _sums((v for (_, model), v in s.errors.items() if model == m), n) for m in models}
    rps = {m: [c / s.step_s for c in requests[m]] for m in models}
    error_rate: dict[str, list[float | None]] = {
        m: [100 * e / r if r else None for e, r in zip(errors[m], requests[m], strict=True)] for m in models}
    all_requests, all_errors = _sums(requests.values(), n), _sums(errors.values(), n)
    error_rate["all"] = [100 * e / r if r else None for e, r in zip(all_errors, all_requests, strict=True)]
    ms = {name: {m: [None if v is None else 1000 * v for v in values] for m, values in table.items()}
          for name, table in (("p50", s.p50), ("p95", s.p95))}
    charts = [chart("rps", "Requests per second, by model", "req/s", rps),
              chart("errors", "Error rate, by model (%)", "%", error_rate),
              chart("p50", "p50 latency, by model (ms)", "ms", ms["p50"]),
              chart("p95", "p95 latency, by model (ms)", "ms", ms["p95"])]
    for policy in policies:
        counts = {model: list(v) for (p, model), v in s.requests.items() if p == policy}
        charts.append(chart(f"split-{policy}", f"Traffic split of policy {policy} (%)", "%", share(counts)))
    latency = s.recent_latency()
    minute = max(1, min(n, round(60 / s.step_s)))
    rows = []
    for m in models:
        total, failed = sum(requests[m]), sum(errors[m])
        p50, p95 = latency.get(m, (None, None))
        rows.append({"model": m, "rps": sum(requests[m][-minute:]) / (s.step_s * minute),
                     "requests": total, "error_rate": 100 * failed / total if total else None,
                     "p50_ms": None if p50 is None else 1000 * p50, "p95_ms": None if p95 is None else 1000 * p95})
    return Overview(scope="pod", source="this pod's own counters", step_s=s.step_s, times=list(s.times),
                    charts=charts, models=rows, since=s.since, cost=today_rows(s.cost_today),
                    savings=today_rows(s.savings_today))


async def spend_today(gw: GatewayView, now: float | None = None) -> dict[str, Any]:
    """Today's ledger (UTC), by team and by key: every governed key's spend, as the store keeps it for every
    replica."""
    day = ledger_day(now if now is not None else time.time())
    entries = await gw.governor.counters.spend(day, day)
    names = {key_id: p.name for key_id in gw.registry.ids if (p := gw.registry.by_id(key_id)) is not None}
    keys = [{**row, "name": names.get(str(row["key"]))} for row in ledger_sums(entries, ("key",))]
    return {"day": day, "by_team": ledger_sums(entries, ("team",)), "by_key": keys,
            "total": ledger_sums(entries, ())[0]}


# -- policies ------------------------------------------------------------------------------------------------


def policies(table: RoutingTable) -> list[dict[str, Any]]:
    return [_policy(p) for p in table.policies]


def _policy(p: PolicyRoute) -> dict[str, Any]:
    match = p.match.model_dump(exclude_none=True)
    return {
        "name": p.name,
        "match": match,
        "strategy": p.strategy,
        "candidates": [m.name for m in p.candidates],
        "fallback": [m.name for m in p.fallback],
        "require": p.require.model_dump(exclude_none=True),
        "on_unmet": p.on_unmet,
        "weights": dict(zip((m.name for m in p.candidates), p.weights, strict=False)) if p.weights else None,
        "capture": None if p.capture is None else {"sample": p.capture.sample},
        "rollout": None if p.rollout is None else p.rollout.model.name,
        "deadline_s": p.reliability.deadline_s,
        "retries": p.reliability.retries,
    }


# -- rollouts ------------------------------------------------------------------------------------------------


def rollouts(gw: GatewayView) -> list[dict[str, Any]]:
    """Each rollout as `GET /admin/rollouts` describes it, with the live score's 95% bounds and the moves its
    buttons make."""
    table = gw.state.table
    settings = {p.name: p.rollout.settings for p in table.policies if p.rollout is not None}
    out = []
    for r in gw.rollouts.describe():
        s = settings.get(r["policy"])
        steps = list(s.canary_steps) if s is not None else []
        n = min(r["scored_in_stage"], s.window) if s is not None else 0
        score = r["score"]
        bounds = None if score is None or n == 0 else (1 - upper_bound(1 - score, n), upper_bound(score, n))
        out.append({**r, "window_scores": n, "bounds": bounds, "canary_steps": steps,
                    "promote": _next(r["stage"], r["canary_step"], len(steps)),
                    "history": list(reversed(r["history"]))})
    return out


def _next(stage: str, step: int | None, steps: int) -> dict[str, Any] | None:
    """The stage `promote` pins: shadow -> canary[0] -> ... -> canary[last] -> primary; None from primary and
    stopped (resume starts a stopped one again from shadow)."""
    if stage == "shadow":
        return {"stage": "canary", "step": 0}
    if stage == "canary" and step is not None and step + 1 < steps:
        return {"stage": "canary", "step": step + 1}
    if stage == "canary":
        return {"stage": "primary", "step": 0}
    return None


# -- replicas and adapters -----------------------------------------------------------------------------------


def replicas(state: Snapshot) -> list[dict[str, Any]]:
    """Each vLLM backend's replicas (what the gateway polls from them) and which adapters each has loaded."""
    table = state.table
    out = []
    for name, backend in state.backends.items():
        described = backend.describe()
        if described is None:
            continue
        adapters = sorted({m.upstream_name for m in table.models.values()
                           if m.backend == name and m.adapter_path is not None})
        models = {m.upstream_name: m.name for m in table.models.values() if m.backend == name}
        out.append({"backend": name, "queue_wait_s": state.signals.queue_wait(name), "replicas": described,
                    "adapters": [{"adapter": a, "model": models.get(a),
                                  "loaded_on": [r["replica"] for r in described if a in r["adapters"]]}
                                 for a in adapters]})
    return out


# -- health --------------------------------------------------------------------------------------------------


def health(state: Snapshot) -> dict[str, Any]:
    """Each model's breakers on each replica, and each replica's health checks (this process's view)."""
    now = clock()
    models = []
    for name in state.table.models:
        mh = state.health.model(name)
        if mh is None:
            continue
        models.append({"model": name, "open": mh.open, "in_flight": mh.in_flight, "slots": [
            {"replica": s.index, "breaker": BREAKER.get(s.breaker.state, "?"), "wait_s": s.breaker.wait(now),
             "rate_limited": s.limited, "replica_out": s.replica.out} for s in mh.slots]})
    backends = []
    for name in state.table.config.backends:
        backends.append({"backend": name, "replicas": [
            {"replica": r.replica.index, "url": r.replica.url, "down": r.down, "saturated": r.saturated,
             "check_failures": r.check_failures, "breaker": BREAKER.get(r.breaker.state, "?"), "out": r.out,
             "in_flight": r.replica.in_flight} for r in state.health.replicas(name)]})
    return {"models": models, "backends": backends}
