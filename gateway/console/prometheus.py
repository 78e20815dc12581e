"""Cluster-wide figures for the console's overview, from Prometheus' HTTP API (`NANOROUTE_PROMETHEUS_URL`).

The same figures as `series.py` keeps for one pod, asked of a Prometheus that scrapes every replica: ranges over
the last hour at the console's step for the charts, instant queries for the table and today's totals. The
queries name no job or instance, like the Grafana dashboard's, so they read the gateway's families wherever
Prometheus scrapes them. A result is kept for half a step, so that many open consoles ask it once.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from gateway.console.figures import Overview, chart, share, today_rows

TIMEOUT_S = 5.0
RATE = "1m"
"""The window of the charts' rates: at least four scrapes at the usual 15 s interval."""

REQUESTS = "nanoroute_requests_total"
ERRORS = 'nanoroute_requests_total{outcome!="success"}'
ROUTED = 'nanoroute_requests_total{policy!="none"}'
BUCKETS = "nanoroute_request_duration_seconds_bucket"


def display_url(url: str) -> str:
    """The URL without the user and password it may carry."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class PrometheusError(Exception):
    """Prometheus could not be asked, or answered an error."""


class Prometheus:
    """Queries one Prometheus; `overview()` is the console's overview, cluster-wide."""

    def __init__(self, url: str, client: httpx.AsyncClient | None = None) -> None:
        self.url = url.rstrip("/")
        self.shown = display_url(self.url)
        self._client = client if client is not None else httpx.AsyncClient(follow_redirects=False)
        self._cached: tuple[float, Overview] | None = None

    async def close(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        try:
            reply = await self._client.get(f"{self.url}/api/v1/{path}", params=params, timeout=TIMEOUT_S)
            body = reply.json()
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            raise PrometheusError(f"{type(exc).__name__}: {exc}"[:300]) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise PrometheusError(f"HTTP {reply.status_code}: {str(error or reply.text)[:300]}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def instant(self, promql: str, now: float, by: str = "model") -> dict[str, float]:
        """One value per series, by the value of its label `by` (NaN left out)."""
        out = {}
        for r in await self._get("query", {"query": promql, "time": f"{now:.3f}"}):
            value = float(r["value"][1])
            if not math.isnan(value):
                out[r["metric"].get(by, "")] = value
        return out

    async def range(self, promql: str, times: list[float], by: tuple[str, ...] = ("model",)
                    ) -> dict[tuple[str, ...], list[float | None]]:
        """Each series' value at each of `times` (an even grid), None where it has none; by its labels `by`."""
        step = times[1] - times[0] if len(times) > 1 else 10.0
        found = await self._get("query_range", {"query": promql, "start": f"{times[0]:.3f}",
                                                "end": f"{times[-1]:.3f}", "step": f"{step:g}"})
        index = {round(t, 3): i for i, t in enumerate(times)}
        out: dict[tuple[str, ...], list[float | None]] = {}
        for r in found:
            values: list[float | None] = [None] * len(times)
            for t, v in r["values"]:
                i = index.get(round(float(t), 3))
                if i is not None and not math.isnan(float(v)):
                    values[i] = float(v)
            out[tuple(r["metric"].get(label, "") for label in by)] = values
        return out

    async def overview(self, step_s: float, points: int, now: float | None = None) -> Overview:
        now = now if now is not None else time.time()
        if self._cached is not None and now - self._cached[0] < step_s / 2:
            return self._cached[1]
        end = now - now % step_s
        times = [end - step_s * (points - 1 - i) for i in range(points)]
        since = now - now % 86400
        (charts, models), (cost, savings) = await asyncio.gather(
            asyncio.gather(self._charts(times), self._models(now)), self._today(now, since))
        overview = Overview(scope="cluster", source=f"Prometheus at {self.shown}", step_s=step_s, times=times,
                            charts=charts, models=models, since=since, cost=today_rows(cost),
                            savings=today_rows(savings))
        self._cached = (now, overview)
        return overview

    async def _charts(self, times: list[float]) -> list[dict[str, Any]]:
        rps, errors, all_errors, p50, p95, split = await asyncio.gather(
            self.range(f"sum by (model) (rate({REQUESTS}[{RATE}]))", times),
            self.range(f"100 * sum by (model) (rate({ERRORS}[{RATE}])) / sum by (model) (rate({REQUESTS}[{RATE}]))",
                       times),
            self.range(f"100 * sum(rate({ERRORS}[{RATE}])) / sum(rate({REQUESTS}[{RATE}]))", times, ()),
            self.range(f"1000 * {_quantile(0.5, RATE)}", times),
            self.range(f"1000 * {_quantile(0.95, RATE)}", times),
            self.range(f"sum by (policy, model) (rate({ROUTED}[{RATE}]))", times, ("policy", "model")))
        if all_errors:
            errors[("all",)] = all_errors[()]
        by_policy: dict[str, dict[str, list[float | None]]] = {}
        for (policy, model), values in split.items():
            by_policy.setdefault(policy, {})[model] = values
        charts = [chart("rps", "Requests per second, by model", "req/s", rps),
                  chart("errors", "Error rate, by model (%)", "%", errors),
                  chart("p50", "p50 latency, by model (ms)", "ms", p50),
                  chart("p95", "p95 latency, by model (ms)", "ms", p95)]
        return charts + [chart(f"split-{policy}", f"Traffic split of policy {policy} (%)", "%", share(counts))
                         for policy, counts in sorted(by_policy.items())]

    async def _models(self, now: float) -> list[dict[str, Any]]:
        rps, hour, hour_errors, p50, p95 = await asyncio.gather(
            self.instant(f"sum by (model) (rate({REQUESTS}[1m]))", now),
            self.instant(f"sum by (model) (increase({REQUESTS}[1h]))", now),
            self.instant(f"sum by (model) (increase({ERRORS}[1h]))", now),
            self.instant(f"1000 * {_quantile(0.5, '5m')}", now),
            self.instant(f"1000 * {_quantile(0.95, '5m')}", now))
        rows = []
        for model in sorted(set(hour) | set(rps)):
            n = hour.get(model, 0.0)
            rows.append({"model": model, "rps": rps.get(model, 0.0), "requests": n,
                         "error_rate": 100 * hour_errors.get(model, 0.0) / n if n else None,
                         "p50_ms": p50.get(model), "p95_ms": p95.get(model)})
        return rows

    async def _today(self, now: float, since: float) -> tuple[dict[str, float], dict[str, float]]:
        """Cost and savings by policy since midnight UTC."""
        window = f"{max(1, int(now - since))}s"
        cost, savings = await asyncio.gather(
            self.instant(f"sum by (policy) (increase(nanoroute_cost_usd_total[{window}]))", now, "policy"),
            self.instant(f"sum by (policy) (increase(nanoroute_savings_usd_total[{window}]))", now, "policy"))
        return cost, savings


def _quantile(q: float, window: str) -> str:
    return f"histogram_quantile({q}, sum by (model, le) (rate({BUCKETS}[{window}])))"
