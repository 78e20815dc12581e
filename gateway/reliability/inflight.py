"""Upstream requests in flight, per catalog model: what the `max_in_flight` cap and the
`nanoroute_in_flight_requests` gauge read.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from prometheus_client import Gauge


class InFlight:
    def __init__(self, gauge: Gauge | None = None) -> None:
        self._counts: defaultdict[str, int] = defaultdict(int)
        self._gauge = gauge
        self._children: dict[str, Any] = {}
        """The gauge's child per model, looked up once: `labels()` takes a lock and builds a tuple."""

    def __getitem__(self, model: str) -> int:
        return self._counts[model]

    def enter(self, model: str) -> None:
        self._counts[model] += 1
        if self._gauge is not None:
            self._child(model).inc()

    def leave(self, model: str) -> None:
        self._counts[model] -= 1
        if self._gauge is not None:
            self._child(model).dec()

    def _child(self, model: str) -> Any:
        child = self._children.get(model)
        if child is None:
            assert self._gauge is not None
            child = self._children[model] = self._gauge.labels(model)
        return child
