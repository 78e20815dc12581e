"""Three gateway processes and one real `redis-server` act as one: limits, budgets and revocations hold across
them, and keys and spend survive restarts of a gateway and of Redis (append-only, `appendfsync always`).

Each gateway is `python -m gateway serve` on its own port and data folder, as replicas behind a Service are;
the upstream is the fake OpenAI server on loopback; clients are the official `openai` SDK and plain HTTP.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.redis import RedisServer
from tests.fakes.servers import Servers, free_port

pytestmark = pytest.mark.e2e

ADMIN = "admin-key-0123456789abcdef"
PRICE = 100.0
"""USD per million tokens, input and output: the fake upstream's 7 + 5 tokens cost $0.0012 a request."""


@dataclass
class Replica:
    port: int
    data: Path
    env: dict[str, str]
    config: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.data / "gateway.log", "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(self.config),
                                          "--port", str(self.port)], env=self.env, stdout=subprocess.DEVNULL,
                                         stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.data / "gateway.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gateway on {self.port} did not become ready")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.base}{path}", headers={"Authorization": f"Bearer {ADMIN}"},
                             timeout=10, **kwargs)

    def chat(self, key: str, **extra: Any) -> int:
        body = {"model": "small", "messages": [{"role": "user", "content": "hi"}], **extra}
        r = httpx.post(f"{self.base}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                       timeout=30)
        return r.status_code


def config_file(folder: Path, upstream_url: str, extra: str = "") -> Path:
    """One model at the fake upstream, at PRICE, and `extra` (YAML) after it."""
    config = folder / "config.yaml"
    config.write_text(f"""
backends:
  b: {{type: openai, url: {upstream_url}}}
models:
  small: {{backend: b, price: {{input: {PRICE}, output: {PRICE}}}}}
{extra}""")
    return config


def replica(folder: Path, config: Path, redis_url: str | None) -> Replica:
    """A gateway of its own data folder, on Redis when `redis_url` is given, else on its embedded store."""
    folder.mkdir()
    env = {**os.environ, "NANOROUTE_ADMIN_KEY": ADMIN, "NANOROUTE_DATA_DIR": str(folder),
           "NANOROUTE_ACCESS_LOG": "false", "NANOROUTE_RELOAD_INTERVAL_S": "0"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("NANOROUTE_REDIS_URL", None)
    if redis_url is not None:
        env["NANOROUTE_REDIS_URL"] = redis_url
    return Replica(free_port(), folder, env, config)


@pytest.fixture
def cluster(servers: Servers, redis_server: RedisServer, tmp_path: Path) -> Iterator[list[Replica]]:
    up = servers.upstream(delay_s=0.05)
    config = config_file(tmp_path, up.url, "teams:\n  search: {limits: {rpm: 1000}}\n")
    replicas = [replica(tmp_path / f"replica-{i}", config, redis_server.url) for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(Replica.start, replicas))
    yield replicas
    for r in replicas:
        r.stop()


def create_key(replica: Replica, **settings: Any) -> tuple[str, str]:
    r = replica.admin("POST", "/admin/keys", json={"name": f"k{time.monotonic_ns()}", **settings})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def wait_known(replicas: list[Replica], key: str, timeout_s: float = 5.0) -> None:
    """Until every replica knows the key (GET /v1/models counts against no limit)."""
    deadline = time.monotonic() + timeout_s
    for r in replicas:
        while httpx.get(f"{r.base}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code != 200:
            assert time.monotonic() < deadline, "a replica never learned the key"
            time.sleep(0.05)


def store_errors_allowed(replica: Replica) -> int:
    """How many requests the replica let through because its store did not answer (on_store_error: allow)."""
    text = httpx.get(f"{replica.base}/metrics", timeout=10).text
    name = 'nanoroute_governance_store_errors_total{action="allowed",operation="admit"} '
    return sum(int(float(line.removeprefix(name))) for line in text.splitlines() if line.startswith(name))


def inside_one_window(needed_s: float) -> None:
    """The sliding window counts exactly within a fixed minute (docs/governance.md): start where `needed_s`
    still fits before the minute ends, so that the count is not the weighted estimate across two."""
    left = 60.0 - time.time() % 60.0
    if left < needed_s:
        time.sleep(left + 0.2)


def test_a_key_with_60_requests_per_minute_gets_60_across_three_replicas(cluster: list[Replica]) -> None:
    _, key = create_key(cluster[0], limits={"rpm": 60})
    wait_known(cluster, key)
    inside_one_window(40.0)
    minute = int(time.time() // 60)
    codes: list[tuple[bool, int]] = []  # (sent within the starting minute, status)
    lock = threading.Lock()

    def send(i: int) -> None:
        sent_in_minute = int(time.time() // 60) == minute
        code = cluster[i % 3].chat(key)
        with lock:
            codes.append((sent_in_minute, code))

    with ThreadPoolExecutor(24) as pool:
        list(pool.map(send, range(150)))
    # Exactly 60 within the minute, but for a request let through uncounted because the store did not answer
    # in time (on_store_error: allow; on a loaded CI machine, an admission can wait past its 2.5 s). A loaded
    # machine can also carry the burst into the next minute, where the sliding window rightly admits a few more
    # as the last minute's weight decays: those are not the ones counted against the 60.
    let_through = sum(store_errors_allowed(r) for r in cluster)
    seen = collections.Counter(code for _, code in codes)
    within = collections.Counter(code for sent_in_minute, code in codes if sent_in_minute)
    assert set(seen) == {200, 429}, seen
    assert within[200] <= 60 + let_through, (within, seen, let_through, time.time() % 60)
    assert seen[200] >= 60, (within, seen, let_through)


def test_a_budget_under_50_concurrent_clients_is_overshot_by_one_reservation_at_most(cluster: list[Replica]) -> None:
    budget = 0.01
    key_id, key = create_key(cluster[0], budget={"usd": budget, "period": "day"})
    wait_known(cluster, key)
    refused = threading.Event()

    def client(i: int) -> int:
        with openai.OpenAI(base_url=f"{cluster[i % 3].base}/v1", api_key=key, max_retries=0) as sdk:
            return spend_until_refused(sdk)

    def spend_until_refused(sdk: openai.OpenAI) -> int:
        served = 0
        while not refused.is_set():
            try:
                sdk.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
                served += 1
            except openai.RateLimitError as exc:
                if exc.code == "insufficient_quota":  # spent: the end
                    refused.set()
                else:  # the rest is reserved by requests in flight, which may leave some: try again
                    assert exc.code == "rate_limit_exceeded"
                    time.sleep(0.05)
        return served

    with ThreadPoolExecutor(50) as pool:
        served = sum(pool.map(client, range(50)))
    per_request = 12 * PRICE / 1e6

    def spent_usd() -> float:
        usage = cluster[1].admin("GET", f"/admin/keys/{key_id}").json()["usage"]
        return float(next(u for u in usage if u["scope"] == f"key:{key_id}")["spent_usd"])

    # Settlements are written just after each answer, off the request path: on a loaded machine the last
    # ones have taken over a second. Wait for every one (a lost one never comes), then check the spend.
    deadline = time.monotonic() + 15
    while (spent := spent_usd()) < served * per_request - 1e-9 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert spent == pytest.approx(served * per_request)
    # A reserve is the prompt as estimated (the body's ~95 bytes / 4) plus max_tokens (5), at the price: 40
    # tokens bound it. Admitted while spent + reserved < budget, refused for good once spent: so the spend ends
    # at the budget, over it by less than one reserve.
    reserve = 40 * PRICE / 1e6
    assert budget <= spent < budget + reserve, (served, spent)


def test_a_key_revoked_on_one_replica_is_refused_by_all_within_a_second(cluster: list[Replica]) -> None:
    key_id, key = create_key(cluster[0])
    wait_known(cluster, key)
    assert [r.chat(key) for r in cluster] == [200, 200, 200]
    assert cluster[1].admin("DELETE", f"/admin/keys/{key_id}").status_code == 200
    revoked = time.monotonic()
    refused_after = {}
    while len(refused_after) < 3 and time.monotonic() - revoked < 5:
        for i, r in enumerate(cluster):
            if i not in refused_after and r.chat(key) == 401:
                refused_after[i] = time.monotonic() - revoked
        time.sleep(0.02)
    assert len(refused_after) == 3
    assert max(refused_after.values()) < 1.0, refused_after


def test_keys_and_spend_survive_a_gateway_and_a_redis_restart(cluster: list[Replica],
                                                               redis_server: RedisServer) -> None:
    key_id, key = create_key(cluster[0], team="search", budget={"usd": 5, "period": "total"})
    wait_known(cluster, key)
    assert [cluster[0].chat(key) for _ in range(5)] == [200] * 5
    time.sleep(0.5)  # the settlements are written off the request path

    def spent() -> float:
        usage = cluster[2].admin("GET", f"/admin/keys/{key_id}").json()["usage"]
        return float(next(u for u in usage if u["scope"] == f"key:{key_id}")["spent_usd"])

    assert spent() == pytest.approx(5 * 12 * PRICE / 1e6)
    cluster[0].kill()
    cluster[0].start()
    redis_server.kill()
    redis_server.start()
    assert cluster[0].chat(key) == 200  # the key, from Redis's append-only file
    time.sleep(0.5)
    assert spent() == pytest.approx(6 * 12 * PRICE / 1e6)
    rows = cluster[0].admin("GET", "/admin/spend", params={"group_by": "key,team"}).json()["data"]
    row = next(r for r in rows if r["key"] == key_id)
    assert (row["team"], row["requests"]) == ("search", 6)


def test_redis_down_lets_limited_keys_through_and_counts_again_once_back(cluster: list[Replica],
                                                                         redis_server: RedisServer) -> None:
    _, key = create_key(cluster[0], limits={"rpm": 1000})
    wait_known(cluster, key)
    redis_server.kill()
    started = time.monotonic()
    assert [cluster[i % 3].chat(key) for i in range(6)] == [200] * 6  # on_store_error: allow, the default
    assert time.monotonic() - started < 10
    metrics = httpx.get(f"{cluster[0].base}/metrics").text
    assert 'nanoroute_governance_store_errors_total{action="allowed",operation="admit"}' in metrics
    redis_server.start()
    time.sleep(1.2)  # the store is asked again a second after its last failure
    r = httpx.post(f"{cluster[0].base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json={"model": "small", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit-requests"] == "1000"


def test_a_gateway_on_its_embedded_store_keeps_keys_and_spend_through_kill_9(servers: Servers,
                                                                               tmp_path: Path) -> None:
    up = servers.upstream()
    alone = replica(tmp_path / "alone", config_file(tmp_path, up.url), None)
    alone.start()
    try:
        key_id, key = create_key(alone, limits={"rpm": 3}, budget={"usd": 1, "period": "month"})
        assert [alone.chat(key) for _ in range(3)] == [200, 200, 200]
        time.sleep(0.5)  # the settlements are written off the request path
        alone.kill()
        alone.start()
        assert alone.chat(key) == 429  # the same minute's window, from the file
        usage = alone.admin("GET", f"/admin/keys/{key_id}").json()["usage"]
        assert usage[0]["spent_usd"] == pytest.approx(3 * 12 * PRICE / 1e6)
    finally:
        alone.stop()
