"""The console's in-memory series: read from real metric families, one point a step, bounded."""

from __future__ import annotations

import math

import pytest
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from gateway.console.figures import local_overview
from gateway.console.series import Series, quantile, read_metrics
from gateway.metrics import Metrics

DAY = 86400.0
T0 = 1_800_000_000.0 - 1_800_000_000.0 % DAY + 3600  # 01:00 UTC


def served(m: Metrics, policy: str, model: str, n: int = 1, seconds: float = 0.2, outcome: str = "success") -> None:
    m.requests.labels(policy, model, outcome, "chat").inc(n)
    for _ in range(n):
        m.duration.labels(policy, model, "false").observe(seconds)


def test_quantile_interpolates_within_the_bucket_as_prometheus_does() -> None:
    buckets = {0.1: 0.0, 0.2: 10.0, 0.5: 20.0, math.inf: 20.0}
    assert quantile(0.25, buckets) == pytest.approx(0.15)
    assert quantile(0.5, buckets) == pytest.approx(0.2)
    assert quantile(0.75, buckets) == pytest.approx(0.35)
    assert quantile(1.0, {0.1: 0.0, 0.2: 10.0, math.inf: 12.0}) == 0.2  # in +Inf: the highest finite bound
    assert quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert quantile(0.5, {}) is None


def test_each_step_becomes_a_point_of_each_series() -> None:
    m = Metrics()
    s = Series(lambda: read_metrics(m), step_s=10)
    s.sample(T0)  # the baseline: no point
    assert list(s.times) == []
    served(m, "support", "small", 30, seconds=0.2)
    served(m, "support", "big", 10, seconds=2.0)
    served(m, "support", "big", 10, outcome="upstream_error")
    m.cost.labels("support", "small").inc(0.5)
    m.savings.labels("support").inc(1.25)
    s.sample(T0 + 10)
    served(m, "default", "small", 5)
    s.sample(T0 + 20)
    assert list(s.times) == [T0 + 10, T0 + 20]
    assert list(s.requests[("support", "small")]) == [30, 0]
    assert list(s.requests[("support", "big")]) == [20, 0]
    assert list(s.errors[("support", "big")]) == [10, 0]
    assert list(s.requests[("default", "small")]) == [0, 5]  # a pair seen late starts with zeros
    assert s.p50["small"][0] == pytest.approx(0.175)  # 30 in (0.1, 0.25]: its middle
    assert s.p50["small"][1] == pytest.approx(0.175)
    assert s.p95["big"][1] is None  # nothing finished on it in that step
    assert s.cost_today == {"support": 0.5} and s.savings_today == {"support": 1.25}
    assert s.since == T0

    o = local_overview(s)
    charts = {c["id"]: {line["label"]: line["values"] for line in c["series"]} for c in o.charts}
    assert charts["rps"]["small"] == [3.0, 0.5]
    assert charts["errors"]["big"] == [50.0, None]
    assert charts["errors"]["all"] == [pytest.approx(100 * 10 / 50), 0.0]
    assert charts["split-support"] == {"big": [40.0, None], "small": [60.0, None]}
    assert charts["split-default"] == {"small": [None, 100.0]}
    rows = {r["model"]: r for r in o.models}
    assert rows["big"]["requests"] == 20 and rows["big"]["error_rate"] == 50.0
    assert rows["small"]["requests"] == 35
    assert o.scope == "pod"
    assert o.savings == [{"policy": "support", "usd": 1.25}]


def test_today_starts_at_midnight_utc() -> None:
    m = Metrics()
    s = Series(lambda: read_metrics(m), step_s=10)
    midnight = T0 - 3600 + DAY
    s.sample(midnight - 20)
    m.cost.labels("p", "x").inc(5.0)
    s.sample(midnight - 10)
    assert s.cost_today == {"p": 5.0} and s.since == midnight - 20  # since the first reading, that day
    m.cost.labels("p", "x").inc(2.0)
    s.sample(midnight)
    assert s.cost_today == {"p": 2.0} and s.since == midnight
    m.cost.labels("p", "x").inc(1.0)
    s.sample(midnight + 10)
    assert s.cost_today == {"p": 3.0}


def test_an_hour_is_kept_and_idle_series_are_dropped() -> None:
    m = Metrics()
    s = Series(lambda: read_metrics(m), step_s=10, points=5)
    s.sample(T0)
    served(m, "p", "old")
    for i in range(1, 9):
        if i > 1:
            served(m, "p", "new")
        s.sample(T0 + 10 * i)
    assert len(s.times) == 5 and s.times[-1] == T0 + 80
    assert ("p", "old") not in s.requests and "old" not in s.p50  # idle for 5 steps
    assert list(s.requests[("p", "new")]) == [1, 1, 1, 1, 1]


def test_the_number_of_series_is_capped() -> None:
    m = Metrics()
    s = Series(lambda: read_metrics(m), step_s=10, max_series=3)
    s.sample(T0)
    for i in range(10):
        served(m, "p", f"model-{i}")
    s.sample(T0 + 10)
    assert len(s.requests) == 3


def test_a_counter_that_goes_back_was_reset() -> None:
    """With several workers, a worker that restarts starts its counts again (its own file is new)."""
    counts = [100.0]

    def read() -> list[Metric]:
        family = CounterMetricFamily("nanoroute_requests", "", labels=["policy", "model", "outcome", "api"])
        family.add_metric(["p", "m", "success", "chat"], counts[0])
        return [family]

    s = Series(read, step_s=10)
    s.sample(T0)
    counts[0] = 4.0
    s.sample(T0 + 10)
    assert list(s.requests[("p", "m")]) == [4.0]
