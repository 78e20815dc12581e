"""The resolved, frozen routing table that the request path reads.

Everything that can be computed from the config is computed here, once, at load: references are
objects, globs are compiled, per-token prices are ready. A table never changes; a reload builds a new
one and swaps it in, so a request in flight finishes on the table it started with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.config import schema

DIRECT = "direct"
"""The policy name reported for a request that matched no policy and named a catalog model."""


@dataclass(frozen=True, slots=True, eq=False)
class ModelRoute:
    """A catalog model: where it lives and what it is worth. Compared and hashed by identity."""

    name: str
    backend: str
    upstream_name: str
    context_window: int | None
    input_usd_per_token: float | None
    output_usd_per_token: float | None
    quality: Mapping[str, float]
    latency: schema.Latency | None

    def quality_for(self, task: str | None) -> float | None:
        if task is not None and task in self.quality:
            return self.quality[task]
        return self.quality.get("default")


@dataclass(frozen=True, slots=True)
class PolicyRoute:
    name: str
    model_pattern: re.Pattern[str] | None
    tasks: frozenset[str] | None
    strategy: str
    candidates: tuple[ModelRoute, ...]
    fallback: tuple[ModelRoute, ...]
    require: schema.Require

    def matches(self, model: str, task: str | None) -> bool:
        if self.model_pattern is not None and self.model_pattern.fullmatch(model) is None:
            return False
        return self.tasks is None or task in self.tasks


@dataclass(frozen=True, slots=True)
class RoutingTable:
    config: schema.Config
    models: Mapping[str, ModelRoute]
    policies: tuple[PolicyRoute, ...]
    client_models: tuple[str, ...]
    """The model names clients may send: catalog names and the literal names that policies match."""
    source: str
    version: str
    loaded_at: float
    warnings: tuple[str, ...] = field(default=())
