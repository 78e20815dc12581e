"""The console's Prometheus client against httpx.MockTransport: what it asks, how it reads the answers, and
how it fails."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from gateway.console.prometheus import Prometheus, PrometheusError, display_url
from gateway.settings import Settings

NOW = 1_800_000_005.0


def matrix(metric: dict[str, str], values: list[tuple[float, str]]) -> dict[str, Any]:
    return {"metric": metric, "values": [[t, v] for t, v in values]}


def answer(request: httpx.Request) -> httpx.Response:
    query = request.url.params["query"]
    if request.url.path.endswith("/query_range"):
        start, step = float(request.url.params["start"]), float(request.url.params["step"])
        if query.startswith("sum by (policy, model)"):
            return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": [
                matrix({"policy": "support", "model": "small"}, [(start + 358 * step, "3"), (start + 359 * step, "1")]),
                matrix({"model": "large", "policy": "support"}, [(start + 359 * step, "1")]),
            ]}})
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": [
            matrix({"model": "small"}, [(start, "NaN"), (start + step, "2.5"), (start + 7 * step + 0.5, "1")]),
        ]}})
    by = "policy" if "by (policy)" in query else "model"
    return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {by: "small" if by == "model" else "support"}, "value": [NOW, "4"]}]}})


def overview(handler: Any, url: str = "http://prom:9090") -> Any:
    async def run() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await Prometheus(url, client).overview(10.0, 360, now=NOW)

    return asyncio.run(run())


def test_the_overview_reads_ranges_on_the_consoles_grid_and_instant_figures() -> None:
    o = overview(answer)
    assert o.scope == "cluster" and o.source == "Prometheus at http://prom:9090"
    assert len(o.times) == 360 and o.times[-1] == NOW - NOW % 10 and o.times[1] - o.times[0] == 10
    charts = {c["id"]: {s["label"]: s["values"] for s in c["series"]} for c in o.charts}
    rps = charts["rps"]["small"]
    assert rps[0] is None and rps[1] == 2.5 and rps[7] is None  # NaN dropped; off-grid points ignored
    assert charts["split-support"]["small"][-2:] == [100.0, 50.0]  # by label name, whatever their order
    assert charts["split-support"]["large"][-1] == 50.0
    assert o.models == [{"model": "small", "rps": 4.0, "requests": 4.0, "error_rate": 100.0, "p50_ms": 4.0,
                         "p95_ms": 4.0}]
    assert o.cost == [{"policy": "support", "usd": 4.0}] and o.since == NOW - NOW % 86400


def test_prometheus_errors_are_reported_not_raised_as_they_come() -> None:
    def refusing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": "parse error"})

    with pytest.raises(PrometheusError, match="HTTP 400: parse error"):
        overview(refusing)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(PrometheusError, match="ConnectError"):
        overview(down)

    with pytest.raises(PrometheusError):
        overview(lambda request: httpx.Response(200, text="<html>a proxy's page</html>"))


def test_the_url_is_shown_without_its_credentials_and_must_be_http() -> None:
    assert display_url("https://user:secret@prom.example:9090/prometheus") == "https://prom.example:9090/prometheus"
    assert Settings(prometheus_url="").prometheus_url is None
    for bad in ("prom:9090", "ftp://prom", "http://"):
        with pytest.raises(ValidationError):
            Settings(prometheus_url=bad)
