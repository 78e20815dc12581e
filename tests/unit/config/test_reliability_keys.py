"""The config keys of the reliability layer (gateway/config/schema.py, loader.py, table.py): defaults,
what is resolved into the routing table, and how bad values fail at load."""

from __future__ import annotations

import pytest

from gateway.config import schema
from gateway.config.loader import load_text
from gateway.config.table import DEFAULT_CHAIN, ChainSettings
from gateway.errors import ConfigError

BASE = """\
backends:
  b: {{type: vllm, urls: [http://x:1/v1]{backend}}}
models:
  m: {{backend: b{model}}}
policies:
  - {{name: p, candidates: [m]{policy}}}
"""


def load(backend: str = "", model: str = "", policy: str = "") -> object:
    return load_text(BASE.format(backend=backend, model=model, policy=policy))


def problems(**parts: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load(**parts)
    return list(info.value.problems)


def test_defaults() -> None:
    t = load()
    spec = t.config.backends["b"]  # type: ignore[attr-defined]
    assert (spec.timeouts.connect_s, spec.timeouts.total_s, spec.timeouts.ttft_s, spec.timeouts.idle_s) == (
        5.0, 600.0, 60.0, 30.0)
    assert spec.breaker == schema.Breaker(consecutive_failures=5, error_rate=0.5, window_s=30, min_requests=20,
                                          cooldown_s=5, max_cooldown_s=120)
    assert spec.health is None  # resolved by type: on for vllm (see test_health)
    assert t.models["m"].max_in_flight is None  # type: ignore[attr-defined]
    assert t.policies[0].reliability == DEFAULT_CHAIN  # type: ignore[attr-defined]
    expected = ChainSettings(deadline_s=600.0, retries=0, backoff_s=0.1, max_backoff_s=2.0, retry_after_max_s=5.0,
                             least_recently_failed=False)
    assert expected == DEFAULT_CHAIN


def test_everything_set_is_resolved_into_the_table() -> None:
    t = load(backend=", timeouts: {ttft_s: 2, idle_s: 1}, breaker: {consecutive_failures: 3, cooldown_s: 1, "
                     "max_cooldown_s: 10}, health: {path: /ready, interval_s: 5, max_waiting: 8}",
             model=", max_in_flight: 16",
             policy=", reliability: {deadline_ms: 1500, on_all_open: least_recently_failed, "
                    "retries: {max: 2, backoff_ms: 50, max_backoff_ms: 400, respect_retry_after_max_s: 2}}")
    assert t.models["m"].max_in_flight == 16  # type: ignore[attr-defined]
    assert t.policies[0].reliability == ChainSettings(  # type: ignore[attr-defined]
        deadline_s=1.5, retries=2, backoff_s=0.05, max_backoff_s=0.4, retry_after_max_s=2.0,
        least_recently_failed=True)
    spec = t.config.backends["b"]  # type: ignore[attr-defined]
    assert (spec.health.path, spec.health.max_waiting, spec.breaker.max_cooldown_s) == ("/ready", 8, 10)


@pytest.mark.parametrize(("parts", "where", "expected"), [
    ({"policy": ", reliability: {deadline_ms: 0}"}, "policies[0].reliability.deadline_ms", "greater than 0"),
    ({"policy": ", reliability: {retries: {max: 11}}"}, "policies[0].reliability.retries.max", "less than or equal"),
    ({"policy": ", reliability: {on_all_open: queue}"}, "policies[0].reliability.on_all_open", "'reject'"),
    ({"policy": ", reliability: {deadline: 5}"}, "policies[0].reliability.deadline", "unknown key"),
    ({"model": ", max_in_flight: 0"}, "models.m.max_in_flight", "greater than or equal to 1"),
    ({"backend": ", breaker: {error_rate: 1.5}"}, "backends.b.breaker.error_rate", "less than or equal to 1"),
    ({"backend": ", breaker: {cooldown_s: 10, max_cooldown_s: 5}"}, "backends.b.breaker",
     "max_cooldown_s must be at least cooldown_s"),
    ({"backend": ", timeouts: {idle_s: -1}"}, "backends.b.timeouts.idle_s", "greater than 0"),
    ({"backend": ", health: {interval: 5}"}, "backends.b.health.interval", "unknown key"),
])
def test_bad_values_fail_with_their_path(parts: dict[str, str], where: str, expected: str) -> None:
    [(path, why)] = problems(**parts)
    assert path.startswith(where), path
    assert expected in why, why
