"""Upstream requests in flight, per catalog model: what the overload cap and the
`nanoroute_in_flight_requests` gauge read.
"""

from __future__ import annotations

from collections import defaultdict

from prometheus_client import Gauge


class InFlight:
    def __init__(self, gauge: Gauge | None = None) -> None:
        self._counts: defaultdict[str, int] = defaultdict(int)
        self._gauge = gauge

    def __getitem__(self, model: str) -> int:
        return self._counts[model]

    def enter(self, model: str) -> None:
        self._counts[model] += 1
        if self._gauge is not None:
            self._gauge.labels(model).inc()

    def leave(self, model: str) -> None:
        self._counts[model] -= 1
        if self._gauge is not None:
            self._gauge.labels(model).dec()
