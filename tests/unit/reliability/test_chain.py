"""gateway/reliability/chain.py with real backends in front of fake upstreams: what is tried, in what order,
what is skipped, and what each attempt leaves in the health state and the in-flight counts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from gateway.backends import build_backend
from gateway.backends.base import Backend, Operation, Reply
from gateway.config.loader import load_text
from gateway.config.table import ModelRoute, RoutingTable
from gateway.errors import (
    AllAttemptsFailed,
    AllCandidatesUnavailable,
    ContextWindowTooSmall,
    Overloaded,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.reliability import chain
from gateway.reliability.breaker import OPEN
from gateway.reliability.health import Health
from gateway.routing.decide import decide
from gateway.routing.request import RoutedRequest, parse_request
from gateway.routing.signals import Signals
from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream


class Rig:
    """A table, started backends, health state and in-flight counts, on the servers' loop."""

    def __init__(self, servers: Servers, yaml: str) -> None:
        self.servers = servers
        self.table: RoutingTable = load_text(yaml)
        self.backends: dict[str, Backend] = {n: build_backend(n, s) for n, s in self.table.config.backends.items()}
        self.health = Health()
        for b in self.backends.values():
            servers.loop.run(b.start())
        servers.loop.run(self.health.start(self.table, self.backends))

    def request(self, **body: Any) -> RoutedRequest:
        raw = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}], **body})
        return parse_request(Operation.CHAT, raw, task_header=None, key_id=None, request_id="r1")

    def call(self, req: RoutedRequest | None = None, accept: Any = None) -> chain.Answered[Reply]:
        req = req or self.request()
        decision = decide(self.table, req, Signals(exact_tokens=False))
        return self.servers.loop.run(chain.call(decision, req, self.backends, self.health,
                                                accept=accept))

    def close(self) -> None:
        self.servers.loop.run(self.health.stop())
        for b in self.backends.values():
            self.servers.loop.run(b.close())


def in_flight(r: Rig, model: str, n: int) -> None:
    """`n` requests of `model` in flight (as the chain counts them)."""
    health = r.health.model(model)
    assert health is not None
    health.in_flight = n


def flying(r: Rig, model: str) -> tuple[int, int]:
    """The requests in flight on `model`, and on its first replica."""
    health = r.health.model(model)
    assert health is not None
    return health.in_flight, health.slots[0].replica.replica.in_flight


@pytest.fixture
def rig(servers: Servers) -> Iterator[Any]:
    made: list[Rig] = []

    def make(yaml: str) -> Rig:
        made.append(Rig(servers, yaml))
        return made[-1]

    yield make
    for r in made:
        r.close()


def two(a: FakeUpstream, b: FakeUpstream, *, a_model: str = "", policy: str = "", a_backend: str = "") -> str:
    return f"""\
backends:
  ba: {{type: openai, url: {a.url}{a_backend}}}
  bb: {{type: openai, url: {b.url}}}
models:
  a: {{backend: ba{a_model}}}
  b: {{backend: bb}}
policies:
  - {{name: p, match: {{model: auto}}, candidates: [a], fallback: [b]{policy}}}
"""


def test_the_first_model_that_answers_wins_and_earlier_failures_are_kept(servers: Servers, rig: Any) -> None:
    a, b = servers.upstream("a", behaviour="status:500"), servers.upstream("b")
    r = rig(two(a, b))
    answered = r.call()
    assert answered.model.name == "b"
    assert [(f.model, f.kind) for f in answered.failures] == [("a", "server_error")]
    assert (flying(r, "a"), flying(r, "b")) == ((0, 0), (0, 0))


def test_an_acceptance_hook_can_turn_an_answer_down(servers: Servers, rig: Any) -> None:
    a, b = servers.upstream("a"), servers.upstream("b")
    r = rig(two(a, b))
    seen: list[str] = []

    async def accept(model: ModelRoute, reply: Reply) -> UpstreamError | None:
        seen.append(model.name)
        return UpstreamError("not good enough", model=model.name) if model.name == "a" else None

    answered = r.call(accept=accept)
    assert (answered.model.name, seen) == ("b", ["a", "b"])
    assert [f.message for f in answered.failures] == ["not good enough"]


def test_an_overloaded_model_is_skipped_without_a_call(servers: Servers, rig: Any) -> None:
    a, b = servers.upstream("a"), servers.upstream("b")
    r = rig(two(a, b, a_model=", max_in_flight: 2"))
    in_flight(r, "a", 2)
    answered = r.call()
    assert answered.model.name == "b" and a.seen == []
    [skip] = answered.failures
    assert isinstance(skip, Overloaded) and not skip.attempted and skip.retry_after == 1.0


def test_when_every_model_is_skipped_it_is_unavailable_with_the_soonest_retry(servers: Servers, rig: Any) -> None:
    a, b = servers.upstream("a"), servers.upstream("b")
    r = rig(two(a, b, a_model=", max_in_flight: 1", a_backend=", breaker: {consecutive_failures: 1, cooldown_s: 9}")
            .replace("b: {backend: bb}", "b: {backend: bb, max_in_flight: 1}"))
    in_flight(r, "a", 1)
    in_flight(r, "b", 1)
    with pytest.raises(AllCandidatesUnavailable) as info:
        r.call()
    assert (info.value.status, info.value.headers()) == (503, [(b"retry-after", b"1")])
    assert a.seen == [] and b.seen == []


def test_the_context_pre_check_uses_the_routers_count_when_there_is_one(servers: Servers, rig: Any) -> None:
    a, b = servers.upstream("a"), servers.upstream("b")
    r = rig(two(a, b, a_model=", context_window: 100"))
    req = r.request(messages=[{"role": "user", "content": "x" * 200}])
    req.prompt_tokens = 20  # the router counted with the real tokenizer: it fits after all
    assert r.call(req).model.name == "a"
    req = r.request(messages=[{"role": "user", "content": "x" * 2000}])
    answered = r.call(req)
    assert answered.model.name == "b" and len(a.seen) == 1
    assert isinstance(answered.failures[0], ContextWindowTooSmall)
    assert answered.failures[0].status == 400


def test_no_attempt_starts_after_the_deadline(servers: Servers, rig: Any) -> None:
    a, b = servers.upstream("a", behaviour="hang"), servers.upstream("b")
    r = rig(two(a, b, policy=", reliability: {deadline_ms: 200}"))
    with pytest.raises(AllAttemptsFailed) as info:
        r.call()
    [timeout] = info.value.errors
    assert isinstance(timeout, UpstreamTimeout) and timeout.phase == "deadline"
    assert (timeout.fallback, info.value.status) == (False, 504)
    assert b.seen == []


def test_a_retry_goes_to_the_next_replica_at_once_and_is_not_a_counted_retry(servers: Servers, rig: Any) -> None:
    dead, live = servers.upstream("dead", behaviour="status:503"), servers.upstream("live")
    r = rig(f"""\
backends:
  pool: {{type: vllm, urls: [{dead.url}, {live.url}], health: {{enabled: false}}}}
models:
  m: {{backend: pool}}
policies:
  - {{name: p, match: {{model: auto}}, candidates: [m], reliability: {{retries: {{max: 0}}}}}}
""")
    answered = r.call()
    assert answered.model.name == "m"
    assert (len(dead.seen), len(live.seen)) == (1, 1)
    assert [f.kind for f in answered.failures] == ["server_error"]


def test_a_stream_tells_its_breaker_about_a_failure_midway_and_leaves_in_flight_when_closed(
    servers: Servers, rig: Any
) -> None:
    a, b = servers.upstream("a", behaviour="cut"), servers.upstream("b")
    r = rig(two(a, b, a_backend=", breaker: {consecutive_failures: 1, confirm: false}"))
    req = r.request(stream=True)

    async def consume() -> tuple[str, bytes, str | None]:
        decision = decide(r.table, req, Signals(exact_tokens=False))
        answered = await chain.open_stream(decision, req, r.backends, r.health)
        assert flying(r, "a") == (1, 1)  # on the model and on its replica
        got, failed = b"", None
        try:
            async for chunk in answered.result:
                got += chunk
        except UpstreamError as exc:
            failed = exc.kind
        finally:
            await answered.result.aclose()
        return answered.model.name, got, failed

    name, got, failed = servers.loop.run(consume())
    assert (name, failed) == ("a", "malformed")
    assert got.startswith(b"data: ")
    assert flying(r, "a") == (0, 0)
    health = r.health.model("a")
    assert health is not None and health.slots[0].breaker.state == OPEN


def test_a_cancelled_attempt_leaves_no_count_and_no_probe_behind(servers: Servers, rig: Any) -> None:
    a, b = servers.upstream("a", behaviour="hang"), servers.upstream("b")
    r = rig(two(a, b, a_backend=", breaker: {consecutive_failures: 1, cooldown_s: 0.01, confirm: false}"))
    health = r.health.model("a")
    assert health is not None
    health.slots[0].failed(UpstreamError("x"), 0.0, 0)  # open; by now half-open, the next call probes

    async def cancelled() -> None:
        task = asyncio.ensure_future(chain.call(decide(r.table, r.request(), Signals(exact_tokens=False)),
                                                r.request(), r.backends, r.health))
        await asyncio.sleep(0.2)
        assert flying(r, "a") == (1, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    servers.loop.run(cancelled())
    assert flying(r, "a") == (0, 0)
    assert health.pick(10**9) is not None  # the probe slot was handed back
