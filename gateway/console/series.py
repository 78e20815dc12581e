"""This pod's figures for the last hour, kept in memory, so that the console needs no Prometheus.

Nothing is added to the request path: the observers already count every request in the Prometheus families
(`gateway/metrics.py`). Every `step_s` seconds (10 by default) a background task reads the four families the
console charts (requests, their duration, cost, savings), takes the difference with the previous reading and
appends one point to each series; `POINTS` (360: an hour at 10 s) are kept. With several workers the reading is
the multiprocess one, every worker's counts summed, as `/metrics` serves them: each worker's console shows the
whole pod.

Bounded whatever clients send: the label values are the config's policy and model names and `none`/`direct`
(metrics.py), a series that has had nothing for `POINTS` steps is dropped (a model a reload removed), and at
most `MAX_SERIES` (policy, model) pairs are kept.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.governance.counters import ledger_day
from gateway.metrics import Metrics, multiprocess

log = logging.getLogger("nanoroute")

POINTS = 360
MAX_SERIES = 1024
"""(policy, model) pairs kept at most; a config has a few dozen."""
RECENT_S = 300.0
"""The latency table's percentiles are over the last 5 minutes."""
SUCCESS = "success"
FAMILIES = ("nanoroute_requests", "nanoroute_request_duration_seconds", "nanoroute_cost_usd", "nanoroute_savings_usd")

Pair = tuple[str, str]
"""(policy, model)"""


def read_metrics(metrics: Metrics) -> list[Metric]:
    """The families the console reads: this process's, or every worker's in multiprocess mode."""
    if multiprocess():
        return [f for f in MultiProcessCollector(None).collect() if f.name in FAMILIES]
    return [f for m in (metrics.requests, metrics.duration, metrics.cost, metrics.savings) for f in m.collect()]


@dataclass
class Reading:
    """The cumulative counts of one read of the families."""

    requests: dict[Pair, float] = field(default_factory=dict)
    errors: dict[Pair, float] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)
    """Model -> upper bound -> requests at most that long (summed over policies and stream)."""
    cost: dict[str, float] = field(default_factory=dict)
    savings: dict[str, float] = field(default_factory=dict)


def reading(families: Iterable[Metric]) -> Reading:
    r = Reading()
    for family in families:
        for s in family.samples:
            labels = s.labels
            if s.name == "nanoroute_requests_total":
                pair = (labels["policy"], labels["model"])
                r.requests[pair] = r.requests.get(pair, 0.0) + s.value
                if labels["outcome"] != SUCCESS:
                    r.errors[pair] = r.errors.get(pair, 0.0) + s.value
            elif s.name == "nanoroute_request_duration_seconds_bucket":
                le = float(labels["le"])
                by_le = r.buckets.setdefault(labels["model"], {})
                by_le[le] = by_le.get(le, 0.0) + s.value
            elif s.name == "nanoroute_cost_usd_total":
                r.cost[labels["policy"]] = r.cost.get(labels["policy"], 0.0) + s.value
            elif s.name == "nanoroute_savings_usd_total":
                r.savings[labels["policy"]] = r.savings.get(labels["policy"], 0.0) + s.value
    return r


def delta(now: Mapping[Any, float], before: Mapping[Any, float]) -> dict[Any, float]:
    """What each counter added since `before`; a counter that went down was reset (a worker restarted)."""
    out = {}
    for key, value in now.items():
        d = value - before.get(key, 0.0)
        out[key] = d if d >= 0 else value
    return out


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of a histogram's cumulative buckets, as Prometheus' histogram_quantile estimates it:
    linear within the bucket it falls in, the highest finite bound when it falls in +Inf. None when empty."""
    bounds = sorted(buckets)
    total = buckets.get(math.inf, 0.0)
    if not bounds or total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def _merge(parts: Iterable[Mapping[float, float]]) -> dict[float, float]:
    out: dict[float, float] = {}
    for part in parts:
        for le, n in part.items():
            out[le] = out.get(le, 0.0) + n
    return out


class Series:
    """The last `points` steps of this pod's traffic, one point a step, fed by `sample` (the loop in `run`)."""

    def __init__(self, read: Callable[[], Iterable[Metric]], step_s: float = 10.0, points: int = POINTS,
                 max_series: int = MAX_SERIES) -> None:
        self.read = read
        self.step_s = step_s
        self.points = points
        self.max_series = max_series
        self.times: deque[float] = deque(maxlen=points)
        self.requests: dict[Pair, deque[float]] = {}
        self.errors: dict[Pair, deque[float]] = {}
        self.p50: dict[str, deque[float | None]] = {}
        self.p95: dict[str, deque[float | None]] = {}
        self._seen: dict[Pair, int] = {}
        """When each pair last had a request (the step's number): a pair idle for `points` steps is dropped."""
        self._step = 0
        self._last: Reading | None = None
        self._recent: deque[dict[str, dict[float, float]]] = deque(maxlen=max(1, round(RECENT_S / step_s)) + 1)
        """The latest cumulative buckets, for the latency over the last RECENT_S seconds."""
        self.day = ""
        self.since = 0.0
        """When today's totals started: midnight UTC, or this process's first reading if later."""
        self.cost_today: dict[str, float] = {}
        self.savings_today: dict[str, float] = {}
        self.read_s = 0.0
        """How long the latest reading of the families took (in a thread)."""
        self.take_s = 0.0
        """How long appending the latest point took (on the event loop)."""

    async def run(self) -> None:
        """Take a reading now (the baseline), then a point at every multiple of `step_s` (a step the loop was
        too busy to take is skipped: its requests count in the next). The families are read in a thread (the
        bulk of the work, as for a scrape of /metrics): the event loop, which serves requests, only appends."""
        self.take(await asyncio.to_thread(self.read_now), time.time())
        step = self.step_s
        due = math.floor(time.time() / step) * step + step
        while True:
            await asyncio.sleep(max(0.0, due - time.time()))
            try:
                self.take(await asyncio.to_thread(self.read_now), due)
            except Exception:  # a bug must not end the series
                log.exception("console: reading the metrics failed")
            due = max(due + step, math.floor(time.time() / step) * step + step)

    def read_now(self) -> Reading:
        started = time.perf_counter()
        r = reading(self.read())
        self.read_s = time.perf_counter() - started
        return r

    def sample(self, now: float) -> None:
        """Read the families and append the point of time `now`, at once (`run` reads in a thread)."""
        self.take(self.read_now(), now)

    def take(self, r: Reading, now: float) -> None:
        """Append the point of time `now` (a multiple of `step_s`, but for the first reading, a baseline)."""
        started = time.perf_counter()
        last, self._last = self._last, r
        self._recent.append(r.buckets)
        self._today(r, last, now)
        if last is not None:
            self._append(r, last, now)
        self.take_s = time.perf_counter() - started

    def _today(self, r: Reading, last: Reading | None, now: float) -> None:
        day = ledger_day(now)
        if day != self.day:  # the first reading, or midnight (UTC) has passed
            self.day, self.since = day, now if last is None else now - now % 86400
            self.cost_today, self.savings_today = {}, {}
        if last is None:
            return
        for total, added in ((self.cost_today, delta(r.cost, last.cost)),
                             (self.savings_today, delta(r.savings, last.savings))):
            for policy, usd in added.items():
                if usd:
                    total[policy] = total.get(policy, 0.0) + usd

    def _append(self, r: Reading, last: Reading, now: float) -> None:
        self._step += 1
        self.times.append(now)
        n = len(self.times)
        requests, errors = delta(r.requests, last.requests), delta(r.errors, last.errors)
        for pair, count in requests.items():
            if count and (pair in self._seen or len(self._seen) < self.max_series):
                self._seen[pair] = self._step
        for pair in [p for p, step in self._seen.items() if self._step - step >= self.points]:
            del self._seen[pair]
            self.requests.pop(pair, None)
            self.errors.pop(pair, None)
        for pair in self._seen:
            _push(self.requests, pair, requests.get(pair, 0.0), 0.0, n, self.points)
            _push(self.errors, pair, errors.get(pair, 0.0), 0.0, n, self.points)
        buckets = {model: delta(by_le, last.buckets.get(model, {})) for model, by_le in r.buckets.items()}
        models = {model for _, model in self._seen}
        for model in models:
            _push(self.p50, model, quantile(0.5, buckets.get(model, {})), None, n, self.points)
            _push(self.p95, model, quantile(0.95, buckets.get(model, {})), None, n, self.points)
        for gone in set(self.p50) - models:
            del self.p50[gone], self.p95[gone]

    def recent_latency(self) -> dict[str, tuple[float | None, float | None]]:
        """Each model's p50 and p95 over the last RECENT_S seconds (or since the first reading); "" for all."""
        if len(self._recent) < 2:
            return {}
        first, last = self._recent[0], self._recent[-1]
        out = {}
        for model, by_le in last.items():
            d = delta(by_le, first.get(model, {}))
            out[model] = (quantile(0.5, d), quantile(0.95, d))
        all_models = _merge(delta(b, first.get(m, {})) for m, b in last.items())
        out[""] = (quantile(0.5, all_models), quantile(0.95, all_models))
        return out


def _push(table: dict[Any, deque[Any]], key: Any, value: Any, fill: Any, n: int, points: int) -> None:
    """Append `value` to the key's series, which starts with `fill` for the steps before it existed."""
    series = table.get(key)
    if series is None:
        series = table[key] = deque([fill] * (n - 1), maxlen=points)
    series.append(value)
