"""gateway/reliability/health.py: which replicas may take a request, from breakers and health checks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gateway.backends import Backend, build_backend
from gateway.config import schema
from gateway.config.loader import load_text
from gateway.config.table import RoutingTable
from gateway.errors import (
    ContextLengthExceeded,
    UpstreamConnectError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from gateway.metrics import Metrics
from gateway.reliability.breaker import CLOSED, HALF_OPEN, OPEN
from gateway.reliability.health import Health, ModelHealth, Slot, health_check
from tests.api.support import wait_until
from tests.fakes.servers import Servers

POOL = """\
backends:
  pool: {{type: vllm, urls: [http://a:1/v1, http://b:1/v1], health: {{enabled: false}}, breaker: {{{breaker}}}}}
models:
  one: {{backend: pool}}
  two: {{backend: pool}}
"""


def table(breaker: str = "consecutive_failures: 2, cooldown_s: 5") -> RoutingTable:
    """Breakers that open on their threshold at once: the check of a model before its breaker opens is
    tests/security/test_breakers.py's."""
    return load_text(POOL.format(breaker=breaker + ", confirm: false"))


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def backends(t: RoutingTable) -> dict[str, Backend]:
    """The table's backends, built but not started: their replicas, for the health state."""
    return {name: build_backend(name, spec) for name, spec in t.config.backends.items()}


def started(t: RoutingTable, metrics: Metrics | None = None) -> Health:
    health = Health(metrics.circuit_open if metrics else None, metrics.replica_up if metrics else None)
    asyncio.run(_start_quiet(health, t))
    return health


async def _start_quiet(health: Health, t: RoutingTable) -> None:
    """Build the state; stop the checks at once (the backends are not started: there is nothing to check)."""
    await health.start(t, backends(t))
    await health._loops.stop()


def model(health: Health, name: str) -> ModelHealth:
    found = health.model(name)
    assert found is not None
    return found


def pick(health: ModelHealth, now: float = 0.0) -> Slot:
    picked = health.pick(now)
    assert picked is not None
    return picked[0]


def circuit(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value("nanoroute_circuit_open", {"model": name})


def replica_up(metrics: Metrics, backend: str, index: int) -> float | None:
    return metrics.registry.get_sample_value("nanoroute_replica_up", {"backend": backend, "replica": str(index)})


# -- configuration ------------------------------------------------------------------------------------


def test_health_checks_are_on_for_vllm_and_off_for_openai_unless_asked() -> None:
    t = load_text("""\
backends:
  v: {type: vllm, urls: [http://v:1/v1]}
  o: {type: openai, url: http://o:1/v1}
  o2: {type: openai, url: http://o:2/v1, health: {interval_s: 3}}
  quiet: {type: vllm, urls: [http://v:2/v1], health: {enabled: false}}
  l: {type: litellm, provider: anthropic}
models:
  m: {backend: v}
""")
    checks = {name: health_check(spec) for name, spec in t.config.backends.items()}
    assert checks["v"] == schema.HealthCheck(path="/health")
    assert checks["o2"] == schema.HealthCheck(path="models", interval_s=3)
    assert checks["o"] is None and checks["quiet"] is None and checks["l"] is None


def test_max_waiting_is_for_vllm_only() -> None:
    with pytest.raises(Exception, match="max_waiting reads vLLM's own metrics"):
        load_text("backends:\n  o: {type: openai, url: http://o/v1, health: {max_waiting: 4}}\n"
                  "models:\n  m: {backend: o}\n")


# -- picking replicas -------------------------------------------------------------------------------------


def test_replicas_are_taken_in_turn(metrics: Metrics) -> None:
    health = model(started(table(), metrics), "one")
    assert [pick(health).index for _ in range(4)] == [0, 1, 0, 1]
    assert (circuit(metrics, "one"), replica_up(metrics, "pool", 0), replica_up(metrics, "pool", 1)) == (0, 1, 1)


def test_a_models_breaker_takes_it_off_one_replica_only_for_that_model(metrics: Metrics) -> None:
    health = started(table(), metrics)
    one, two = model(health, "one"), model(health, "two")
    slot = one.slots[0]
    for _ in range(2):
        slot.failed(UpstreamServerError("x"), 10.0, 0)
    assert slot.breaker.state == OPEN
    assert [pick(one, 11.0).index for _ in range(3)] == [1, 1, 1]
    assert {pick(two, 11.0).index for _ in range(2)} == {0, 1}
    assert circuit(metrics, "one") == 0  # one replica still takes it


def test_connection_failures_take_the_replica_out_for_every_model(metrics: Metrics) -> None:
    health = started(table(), metrics)
    one, two = model(health, "one"), model(health, "two")
    one.slots[0].failed(UpstreamConnectError("refused"), 10.0, 0)
    two.slots[0].failed(UpstreamTimeout("x", phase="connect"), 10.0, 0)
    assert replica_up(metrics, "pool", 0) == 0
    assert {pick(two, 11.0).index for _ in range(3)} == {1}
    assert one.slots[0].breaker.state == CLOSED  # one failure each: the models' own breakers hold


def test_when_every_replica_is_out_the_model_is_open_and_says_when_to_retry(metrics: Metrics) -> None:
    health = started(table("consecutive_failures: 1, cooldown_s: 5"), metrics)
    one = model(health, "one")
    one.slots[0].failed(UpstreamServerError("x"), 10.0, 0)
    one.slots[1].failed(UpstreamServerError("x"), 12.0, 0)
    assert one.pick(13.0) is None
    assert one.retry_after(13.0) == 2.0
    assert circuit(metrics, "one") == 1
    slot, probes = one.pick(15.0) or (None, 0)  # the first one half-opens: one probe
    assert slot is one.slots[0] and slot.breaker.state == HALF_OPEN and probes == 2
    assert one.pick(15.0) is None
    slot.succeeded(15.5)
    assert circuit(metrics, "one") == 0


def test_a_probe_that_ends_without_a_verdict_frees_the_next_one() -> None:
    one = model(started(table("consecutive_failures: 1, cooldown_s: 5")), "one")
    for slot in one.slots:
        slot.failed(UpstreamServerError("x"), 0.0, 0)
    slot, probes = one.pick(6.0) or (None, 0)
    assert slot is not None
    slot.release(probes)  # the client went away
    assert one.pick(6.0) is not None


def test_what_a_failure_says_about_the_model() -> None:
    one = model(started(table("consecutive_failures: 1")), "one")
    slot = one.slots[0]
    slot.failed(ContextLengthExceeded("too long"), 1.0, 0)  # the request's fault: the model answered
    slot.failed(UpstreamTimeout("out of time", phase="deadline"), 1.0, 0)  # says nothing
    assert slot.breaker.state == CLOSED and one.last_failure == float("-inf")
    slot.failed(UpstreamTimeout("slow", phase="first_token"), 2.0, 0)
    assert slot.breaker.state == OPEN and one.last_failure == 2.0


def test_force_takes_the_slot_that_failed_longest_ago() -> None:
    one = model(started(table("consecutive_failures: 1, cooldown_s: 60")), "one")
    one.slots[1].failed(UpstreamServerError("x"), 1.0, 0)
    one.slots[0].failed(UpstreamServerError("x"), 2.0, 0)
    assert one.pick(3.0) is None
    assert one.force(3.0)[0] is one.slots[1]


def test_a_reload_keeps_the_state_of_what_did_not_change() -> None:
    t = table("consecutive_failures: 1, cooldown_s: 60")
    health = started(t)
    model(health, "one").slots[0].failed(UpstreamServerError("x"), 1.0, 0)
    asyncio.run(_start_quiet(health, table("consecutive_failures: 1, cooldown_s: 60")))
    assert model(health, "one").slots[0].breaker.state == OPEN
    asyncio.run(_start_quiet(health, table("consecutive_failures: 3")))  # new breaker settings: a fresh start
    assert model(health, "one").slots[0].breaker.state == CLOSED


# -- active checks against real servers ---------------------------------------------------------------


@pytest.fixture
def pool(servers: Servers, metrics: Metrics) -> Iterator[tuple[Servers, Health, list[object]]]:
    a, b = servers.upstream("a"), servers.upstream("b")
    t = load_text(f"""\
backends:
  pool: {{type: vllm, urls: [{a.url}, {b.url}], health: {{interval_s: 0.05, failures: 2, max_waiting: 3}}}}
models:
  m: {{backend: pool}}
""")
    backend = build_backend("pool", t.config.backends["pool"])
    health = Health(metrics.circuit_open, metrics.replica_up)
    servers.loop.run(backend.start())
    servers.loop.run(health.start(t, {"pool": backend}))
    yield servers, health, [a, b]
    servers.loop.run(health.stop())
    servers.loop.run(backend.close())


def test_failed_checks_take_a_replica_out_and_a_passing_one_brings_it_back(
    pool: tuple[Servers, Health, list[object]], metrics: Metrics
) -> None:
    _, health, (a, b) = pool
    m = model(health, "m")
    wait_until(lambda: a.health_checks >= 1 and b.health_checks >= 1)  # type: ignore[attr-defined]
    a.health_status = 503  # type: ignore[attr-defined]
    wait_until(lambda: replica_up(metrics, "pool", 0) == 0)
    assert {pick(m).index for _ in range(4)} == {1}
    assert circuit(metrics, "m") == 0
    b.health_status = 503  # type: ignore[attr-defined]
    wait_until(lambda: circuit(metrics, "m") == 1)
    assert m.pick(0.0) is None and m.retry_after(0.0) == 0.05
    a.health_status = b.health_status = 200  # type: ignore[attr-defined]
    wait_until(lambda: circuit(metrics, "m") == 0 and replica_up(metrics, "pool", 0) == 1)


def test_a_replica_whose_queue_is_too_long_is_saturated_not_broken(
    pool: tuple[Servers, Health, list[object]], metrics: Metrics
) -> None:
    _, health, (a, b) = pool
    m = model(health, "m")
    a.waiting = 4  # type: ignore[attr-defined]
    wait_until(lambda: m.slots[0].replica.saturated)
    assert {pick(m).index for _ in range(3)} == {1}
    b.waiting = 10  # type: ignore[attr-defined]
    wait_until(lambda: m.pick(0.0) is None)
    assert m.saturated(0.0)
    assert circuit(metrics, "m") == 0  # busy is not broken
    a.waiting = 3  # at max_waiting, not over it
    wait_until(lambda: not m.slots[0].replica.saturated)


# -- out only because the upstream limits the rate (the chain then answers 429, not 503) --------------------


def test_a_model_whose_breakers_429s_opened_is_rate_limited() -> None:
    one = model(started(table("consecutive_failures: 1, cooldown_s: 5")), "one")
    for slot in one.slots:
        slot.failed(UpstreamRateLimited("slow down"), 10.0, 0)
    assert one.pick(11.0) is None
    assert one.rate_limited(11.0)


def test_a_long_retry_after_held_open_is_rate_limited() -> None:
    one = model(started(table()), "one")
    for slot in one.slots:
        slot.hold(10.0, 30.0)
    assert one.pick(11.0) is None and one.rate_limited(11.0)
    assert not one.rate_limited(41.0)  # the wait is over: not out at all


def test_one_replica_out_for_another_reason_is_not_rate_limited() -> None:
    one = model(started(table("consecutive_failures: 1, cooldown_s: 5")), "one")
    one.slots[0].failed(UpstreamRateLimited("slow down"), 10.0, 0)
    one.slots[1].failed(UpstreamServerError("x"), 10.0, 0)
    assert one.pick(11.0) is None
    assert not one.rate_limited(11.0)


def test_what_opened_the_breaker_is_kept_while_it_is_open() -> None:
    one = model(started(table("consecutive_failures: 1, cooldown_s: 5")), "one")
    for slot in one.slots:
        slot.failed(UpstreamRateLimited("slow down"), 10.0, 0)
        slot.failed(UpstreamServerError("in flight before it opened"), 10.5, 0)  # an open breaker ignores it
    assert one.rate_limited(11.0)


def test_a_breaker_opened_by_other_failures_after_a_429_is_not_rate_limited() -> None:
    one = model(started(table("consecutive_failures: 2, cooldown_s: 5")), "one")
    for slot in one.slots:
        slot.failed(UpstreamRateLimited("slow down"), 10.0, 0)
        slot.failed(UpstreamServerError("x"), 10.5, 0)  # the second failure opens it: not a rate limit
    assert one.pick(11.0) is None
    assert not one.rate_limited(11.0)


def test_a_replica_taken_out_by_connection_failures_is_not_rate_limited() -> None:
    one = model(started(table("consecutive_failures: 1, cooldown_s: 5")), "one")
    for slot in one.slots:
        slot.hold(10.0, 30.0)
    one.slots[0].failed(UpstreamConnectError("refused"), 10.0, 0)  # the replica's own breaker opens too
    assert not one.rate_limited(11.0)
