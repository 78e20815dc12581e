"""gateway/backends/vllm.py against a fake vLLM server: adapters loaded once and again after a restart,
load failures named, replicas ordered by affinity and load, queue delay read from vLLM's metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.backends.base import Attempt, Operation
from gateway.backends.replica import Replica
from gateway.backends.vllm import MAX_QUEUE_WAIT_S, VllmBackend, VllmHooks, read_metrics
from gateway.config.loader import load_file
from gateway.config.table import RoutingTable
from gateway.errors import AdapterLoadFailed, UpstreamModelNotFound
from tests.fakes.servers import Servers
from tests.fakes.vllm import FakeVllm

Make = Callable[..., tuple[VllmBackend, RoutingTable]]


def manifest(tmp_path: Path, name: str = "triage", path: str | None = None) -> Path:
    weights = tmp_path / "weights" / name
    weights.mkdir(parents=True, exist_ok=True)
    (tmp_path / "adapters").mkdir(exist_ok=True)
    (tmp_path / "adapters" / f"{name}.yaml").write_text(
        f"name: {name}\nbase_model: base-model\ntasks: [triage]\npath: {path or weights}\neval: {{adapter: 0.9}}\n")
    return weights


@pytest.fixture
def make(servers: Servers, tmp_path: Path) -> Iterator[Make]:
    """`make(*fakes, extra="", adapters=("triage",))`: a started backend `local` over the fakes, routing
    model `base` and one model per adapter (named as the adapter)."""
    started: list[VllmBackend] = []

    def build(*fakes: FakeVllm, extra: str = "", adapters: tuple[str, ...] = ("triage",),
              hooks: VllmHooks | None = None) -> tuple[VllmBackend, RoutingTable]:
        urls = ", ".join(f.url for f in fakes)
        models = "".join(f"  {a}: {{backend: local, adapter: {a}}}\n" for a in adapters)
        config = tmp_path / "gateway.yaml"
        config.write_text(f"backends:\n  local: {{type: vllm, urls: [{urls}]{extra}}}\n"
                          f"models:\n  base: {{backend: local, name: base-model}}\n{models}")
        table = load_file(config)
        backend = VllmBackend("local", table.config.backends["local"], hooks)  # type: ignore[arg-type]
        backend.configure(table)
        servers.loop.run(backend.start())
        started.append(backend)
        return backend, table

    yield build
    for backend in started:
        servers.loop.run(backend.close())


def attempt(table: RoutingTable, model: str, replica: int | None = 0) -> Attempt:
    name = table.models[model].upstream_name.encode()
    body = b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}]}' % name
    return Attempt(Operation.CHAT, table.models[model], body, "req-1", replica)


QUIET = ", poll_interval_s: 3600"  # the poll's first round only, so the tests drive loading themselves


def test_concurrent_first_requests_trigger_one_load(servers: Servers, make: Make, tmp_path: Path) -> None:
    manifest(tmp_path)
    fake = servers.vllm(load_delay_s=0.2)
    backend, table = make(fake, extra=", poll_interval_s: 3600, health: {enabled: false}")
    deadline = time.monotonic() + 5
    while "triage" not in backend.replicas[0].loaded and time.monotonic() < deadline:
        time.sleep(0.01)  # the first poll loads it; then nothing polls again: the requests must load it
    backend.replicas[0].loaded.clear()
    fake.adapters.clear()
    fake.load_calls.clear()

    async def burst() -> list[str]:
        replies = await asyncio.gather(*(backend.call(attempt(table, "triage")) for _ in range(10)))
        return [r.parsed["model"] for r in replies]

    assert servers.loop.run(burst()) == ["triage"] * 10
    assert fake.load_calls == ["triage"]
    assert fake.adapters == {"triage": str(tmp_path / "weights" / "triage")}


def test_the_poll_loads_routed_adapters_at_start(servers: Servers, make: Make, tmp_path: Path) -> None:
    manifest(tmp_path)
    fake = servers.vllm()
    backend, _ = make(fake, extra=", poll_interval_s: 0.05")
    deadline = time.monotonic() + 5
    while "triage" not in fake.adapters and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.load_calls == ["triage"]
    assert backend.describe()[0]["adapters"] == ["triage"]


def test_a_bad_path_is_an_error_naming_the_adapter_and_the_path(servers: Servers, make: Make,
                                                                 tmp_path: Path) -> None:
    manifest(tmp_path, path="/nowhere/triage")
    fake = servers.vllm()
    loads: list[tuple[str, str, str]] = []
    backend, table = make(fake, extra=QUIET, hooks=VllmHooks(adapter_load=lambda *a: loads.append(a)))
    with pytest.raises(AdapterLoadFailed) as info:
        servers.loop.run(backend.call(attempt(table, "triage")))
    msg = info.value.message
    assert "could not load adapter 'triage' from /nowhere/triage" in msg and "No adapter found" in msg
    assert info.value.model == "triage" and info.value.retryable and info.value.fallback
    assert ("local", "triage", "failed") in loads
    assert not [s for s in fake.seen if s.path.endswith("/chat/completions")]  # never sent to a 404


def test_a_restarted_replica_gets_its_adapter_again_and_the_request_still_succeeds(
        servers: Servers, make: Make, tmp_path: Path) -> None:
    manifest(tmp_path)
    fake = servers.vllm()
    backend, table = make(fake, extra=QUIET)
    servers.loop.run(backend.call(attempt(table, "triage")))
    calls = len(fake.load_calls)
    fake.restart()  # the gateway has not polled since: it still believes the adapter is there
    reply = servers.loop.run(backend.call(attempt(table, "triage")))
    assert reply.parsed["model"] == "triage"
    assert len(fake.load_calls) == calls + 1
    assert [s.body["model"] for s in fake.seen][-2:] == ["triage", "triage"]  # the 404, then the retry


def test_the_poll_notices_a_restart_and_reloads_without_a_request(servers: Servers, make: Make,
                                                                  tmp_path: Path) -> None:
    manifest(tmp_path)
    fake = servers.vllm()
    make(fake, extra=", poll_interval_s: 0.05")
    deadline = time.monotonic() + 5
    while not fake.adapters and time.monotonic() < deadline:
        time.sleep(0.02)
    fake.restart()
    while not fake.adapters and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.load_calls == ["triage", "triage"]


def test_a_404_for_a_base_model_is_not_retried(servers: Servers, make: Make, tmp_path: Path) -> None:
    manifest(tmp_path)
    fake = servers.vllm(name="another-model")
    backend, table = make(fake, extra=QUIET)
    with pytest.raises(UpstreamModelNotFound, match="does not exist") as info:  # another model may have it
        servers.loop.run(backend.call(attempt(table, "base")))
    assert (info.value.status, info.value.code, info.value.retryable, info.value.fallback) == (
        404, "model_not_found", False, True)


def test_streams_load_the_adapter_first(servers: Servers, make: Make, tmp_path: Path) -> None:
    """(A stream's in-flight count on its replica is the attempt chain's: tests/unit/reliability/test_chain.py.)"""
    manifest(tmp_path)
    fake = servers.vllm()
    backend, table = make(fake, extra=QUIET)
    deadline = time.monotonic() + 5
    while "triage" not in backend.replicas[0].loaded and time.monotonic() < deadline:
        time.sleep(0.01)
    backend.replicas[0].loaded.clear()
    fake.adapters.clear()
    a = attempt(table, "triage")
    streamed = Attempt(a.op, a.model, a.body[:-1] + b', "stream": true}', a.request_id, 0)

    async def run() -> bytes:
        s = await backend.stream(streamed)
        data = b"".join([c async for c in s])
        await s.aclose()
        return data

    data = servers.loop.run(run())
    assert b"[DONE]" in data and "triage" in fake.adapters


def test_replicas_are_preferred_by_adapter_then_room_then_load(servers: Servers, make: Make, tmp_path: Path) -> None:
    manifest(tmp_path, "triage")
    manifest(tmp_path, "other")
    fakes = [servers.vllm() for _ in range(3)]
    backend, table = make(*fakes, extra=QUIET + ", max_loras: 1", adapters=("triage", "other"))
    r0, r1, r2 = backend.replicas
    r0.loaded, r1.loaded, r2.loaded = {"other"}, set(), {"triage"}
    r2.waiting = 5
    assert backend.prefer(table.models["triage"]) == [2, 1, 0]  # has it, busy as it is; then room; then full
    assert backend.prefer(table.models["base"]) == [0, 1, 2]  # load only
    r1.in_flight = 7
    assert backend.prefer(table.models["base"]) == [0, 2, 1]


def test_waiting_sums_vllms_gauge_over_engines_and_ignores_the_rest() -> None:
    r = Replica("local", 0, "http://x/v1")
    read_metrics(r, """# HELP vllm:num_requests_waiting Number of requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="base"} 3.0
vllm:num_requests_waiting{engine="1",model_name="base"} 2.0
vllm:num_requests_waiting_by_reason{reason="x"} 50.0
vllm:num_requests_running{model_name="base"} 8.0
""", now=1.0)
    assert (r.waiting, r.running) == (5.0, 8.0)
    read_metrics(r, "", now=2.0)
    assert (r.waiting, r.running) == (0.0, 0.0)


def test_queue_delay_is_waiting_requests_over_the_rate_they_finish() -> None:
    r = Replica("local", 0, "http://x/v1")

    def metrics(waiting: float, finished: float, started: float = 100.0) -> str:
        return (f"vllm:num_requests_waiting{{model_name=\"m\"}} {waiting}\n"
                f"vllm:num_requests_running{{model_name=\"m\"}} 8\n"
                f"vllm:kv_cache_usage_perc{{model_name=\"m\"}} 0.5\n"
                f"vllm:request_success_total{{finished_reason=\"stop\",model_name=\"m\"}} {finished}\n"
                f"vllm:request_success_total{{finished_reason=\"length\",model_name=\"m\"}} {finished}\n"
                f"process_start_time_seconds {started}\n")

    read_metrics(r, metrics(6, 0), now=10.0)
    assert r.queue_wait_s == MAX_QUEUE_WAIT_S  # waiting, and no finish rate known yet
    read_metrics(r, metrics(6, 2), now=11.0)  # 4 finished in 1 s
    assert (r.waiting, r.running, r.kv_cache, r.rate) == (6, 8, 0.5, 4.0)
    assert r.queue_wait_s == pytest.approx(1.5)
    read_metrics(r, metrics(0, 3), now=12.0)
    assert r.queue_wait_s == 0.0
    r.loaded.add("triage")
    read_metrics(r, metrics(0, 0, started=200.0), now=13.0)  # a new process: counters reset, adapters gone
    assert r.loaded == set() and r.started_at == 200.0


def test_the_least_loaded_reachable_replica_sets_the_backend_queue_delay(servers: Servers, make: Make,
                                                                          tmp_path: Path) -> None:
    manifest(tmp_path)
    fakes = [servers.vllm(waiting=3), servers.vllm(waiting=0)]
    waits: list[float] = []
    make(*fakes, extra=", poll_interval_s: 0.05", hooks=VllmHooks(queue_wait=lambda b, s: waits.append(s)))
    deadline = time.monotonic() + 5
    while len(waits) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert waits[-1] == 0.0
    fakes[1].waiting = 2
    n = len(waits)
    while len(waits) < n + 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert waits[-1] > 0
