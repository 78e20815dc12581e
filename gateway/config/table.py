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
from gateway.config.redact import Redactor
from gateway.learned.calibrate import Threshold
from gateway.learned.model import Router

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
    price_source: str | None = None
    """Where the price came from: `config`, `hourly`, `cost_map`, or None when unknown."""
    max_in_flight: int | None = None
    """Upstream requests in flight beyond which new ones spill over to the next model (None: no cap)."""
    adapter_path: str | None = None
    """A LoRA adapter (`upstream_name` is its name in vLLM): where vLLM loads it from."""
    adapter_base: str | None = None
    """A LoRA adapter: the served name of the base model it was trained on."""

    def quality_for(self, task: str | None) -> float | None:
        if task is not None and task in self.quality:
            return self.quality[task]
        return self.quality.get("default")


@dataclass(frozen=True, slots=True)
class ChainSettings:
    """A policy's `reliability` block, resolved to seconds for the attempt chain (docs/reliability.md)."""

    deadline_s: float
    retries: int
    backoff_s: float
    max_backoff_s: float
    retry_after_max_s: float
    least_recently_failed: bool

    @classmethod
    def of(cls, r: schema.Reliability) -> ChainSettings:
        return cls(r.deadline_ms / 1000, r.retries.max, r.retries.backoff_ms / 1000, r.retries.max_backoff_ms / 1000,
                   r.retries.respect_retry_after_max_s, r.on_all_open == "least_recently_failed")


DEFAULT_CHAIN = ChainSettings.of(schema.Reliability())
"""For requests that no policy routes (`direct`, pinned)."""


@dataclass(frozen=True, slots=True)
class CaptureRoute:
    """A policy's `capture`: which of its chat requests are recorded, and under which task's file set."""

    sample: float
    tasks: frozenset[str] | None
    """Only these tasks are recorded (None: every request of the policy)."""
    file_sets: frozenset[str]
    """Tasks recorded under their own name; any other request is recorded under `fallback`, so that file
    names come only from the config, never from what a client sends."""
    fallback: str

    def file_set(self, task: str | None) -> str:
        return task if task is not None and task in self.file_sets else self.fallback


@dataclass(frozen=True, slots=True)
class LearnedRoute:
    """A `learned` policy's router, its candidates in price order, and the threshold calibrated for them."""

    router: Router
    order: tuple[str, ...]
    """The candidates' names, cheapest first (input plus output price per token; unpriced ones last)."""
    columns: tuple[int, ...]
    """Each ordered candidate's place in the router's models."""
    threshold: Threshold

    def rank(self, model: str) -> int:
        return self.order.index(model)


@dataclass(frozen=True, slots=True)
class RolloutRoute:
    """A policy's `rollout`, with its model resolved."""

    model: ModelRoute
    settings: schema.Rollout
    judge: ModelRoute | None = None
    """`evaluator: judge`: the model that grades the answers."""

    @property
    def models(self) -> tuple[ModelRoute, ...]:
        """Every model the rollout sends a request's prompt to, besides the policy's own."""
        return (self.model,) if self.judge is None else (self.model, self.judge)


@dataclass(frozen=True, slots=True)
class PolicyRoute:
    name: str
    model_pattern: re.Pattern[str] | None
    tasks: frozenset[str] | None
    strategy: str
    candidates: tuple[ModelRoute, ...]
    fallback: tuple[ModelRoute, ...]
    require: schema.Require
    match: schema.Match = field(default_factory=schema.Match)
    keys: frozenset[str] | None = None
    on_unmet: str = "best_effort"
    weights: tuple[float, ...] = ()
    """`weighted`: each candidate's share, normalised to sum to 1, in candidate order."""
    sticky: str = "none"
    cascade: schema.Cascade | None = None
    cascade_regex: re.Pattern[str] | None = None
    needs_tokens: bool = False
    """Whether deciding needs the prompt's token count (cost, latency, context or size conditions)."""
    reliability: ChainSettings = DEFAULT_CHAIN
    capture: CaptureRoute | None = None
    rollout: RolloutRoute | None = None
    learned: LearnedRoute | None = None
    literal_models: tuple[str, ...] = ()
    """The model names `match.model` lists without wildcards: names clients may send for this policy."""


@dataclass(frozen=True, slots=True)
class KeyAccess:
    """What one client key may use (the config's `keys`); None for a dimension it is not limited in."""

    models: frozenset[str] | None = None
    policies: frozenset[str] | None = None

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def may_match(self, policy: str) -> bool:
        return self.policies is None or policy in self.policies


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
    tasks: frozenset[str] = frozenset()
    """Every task the config names (in matches and quality scores): the tasks worth learning about."""
    pin_keys: frozenset[str] = frozenset()
    """Client key names or ids that may pin a model with X-Nanoroute-Model; `*` for all."""
    inputs: tuple[str, ...] = ()
    """The other files the table was built from (adapter manifests): part of its version, and watched."""
    access: Mapping[str, KeyAccess] = field(default_factory=dict)
    """Per client key id: what it may use. Keys not listed may use everything."""
    declared_keys: Mapping[str, bytes] = field(default_factory=dict)
    """The keys the config gives itself (`digest`, `secret_file`): name -> the SHA-256 digest of the key."""
    direct: bool = True
    """Whether a request that matches no policy may name a catalog model and go straight to it."""
    redactor: Redactor = field(default_factory=Redactor)
    """What captured requests and answers are cleaned with (the config's `capture.redact`)."""
