"""Limits and budgets of keys and teams (gateway/pipeline/admission/limits.py, the `Settle` observer), through
the official SDKs against a gateway on loopback with its embedded SQLite store, and fake upstreams.

Keys are declared in the config by digest and by `secret_file`, as a GitOps set-up would; the admin API's
keys are tested in test_keys_admin.py, replicas sharing Redis in tests/e2e/test_governance_replicas.py.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from gateway.app import Gateway
from gateway.governance.counters import ScopeUsage
from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream

KEY = "sk-limited-0123456789abcdef"
OTHER = "sk-teammate-0123456789abcd"
PRICE = 100.0
"""USD per million tokens: the fake upstream's 7 prompt and 5 completion tokens cost $0.0012."""
COST = 12 * PRICE / 1e6
HI = [{"role": "user", "content": "hi"}]


def digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def config(up: FakeUpstream, keys: str, extra: str = "") -> str:
    return f"""
backends:
  b: {{type: openai, url: {up.url}}}
models:
  small: {{backend: b, price: {{input: {PRICE}, output: {PRICE}}}}}
teams:
  search: {{limits: {{rpm: 2}}}}
keys:
{keys}
{extra}
"""


class Setup:
    def __init__(self, servers: Servers, tmp_path: Path) -> None:
        self.servers, self.tmp_path = servers, tmp_path
        self.up = servers.upstream()
        self.base = ""
        self.clients: list[openai.OpenAI | anthropic.Anthropic] = []

    def start(self, keys: str, extra: str = "", **settings: Any) -> str:
        settings.setdefault("data_dir", self.tmp_path / "data")
        self.base = self.servers.gateway(config(self.up, keys, extra), **settings)
        return self.base

    @property
    def app(self) -> Gateway:
        return self.servers.app_of()

    def sdk(self, key: str = KEY) -> openai.OpenAI:
        client = openai.OpenAI(base_url=self.base, api_key=key, max_retries=0)
        self.clients.append(client)
        return client

    def post(self, key: str = KEY, **body: Any) -> httpx.Response:
        return httpx.post(f"{self.base}/chat/completions", json={"model": "small", "messages": HI, **body},
                          headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def settled(self) -> None:
        self.servers.loop.run(self.app.governor.drain())

    def usage(self, key_id: str = "limited") -> ScopeUsage:
        who = self.app.registry.by_id(key_id)
        assert who is not None
        return self.servers.loop.run(self.app.governor.counters.usage(who.scopes[:1], time.time()))[0]


@pytest.fixture
def setup(servers: Servers, tmp_path: Path) -> Iterator[Setup]:
    made = Setup(servers, tmp_path)
    yield made
    for client in made.clients:  # their connections: closed here, not by the garbage collector in a later test
        client.close()


def test_requests_per_minute_send_openais_headers_then_429_with_retry_after(setup: Setup) -> None:
    setup.start(f"  limited: {{digest: {digest(KEY)}, limits: {{rpm: 3}}}}")
    remaining = []
    for _ in range(3):
        r = setup.post()
        assert r.status_code == 200
        assert (r.headers["x-ratelimit-limit-requests"], r.headers["x-ratelimit-reset-requests"][-1]) == ("3", "s")
        remaining.append(r.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as info:
        setup.sdk().chat.completions.create(model="small", messages=HI)  # type: ignore[arg-type]
    err = info.value
    assert (err.status_code, err.code, err.type) == (429, "rate_limit_exceeded", "requests")
    # When the window's weight has fallen enough for one more: at most the rest of this minute and a third of
    # the next (3 * (1 - 20/60) + 1 <= 3).
    assert 1 <= int(err.response.headers["retry-after"]) <= 80
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert "requests per minute" in err.message
    assert len(setup.up.seen) == 3  # the refused request never reached the upstream


def test_tokens_per_minute_count_the_expected_output_then_the_real_usage(setup: Setup) -> None:
    setup.up.delay_s = 0.5
    setup.start(f"  limited: {{digest: {digest(KEY)}, limits: {{tpm: 150}}}}")
    # Each is counted at admission as its prompt (its 80-byte body / 4: 20 tokens) and max_tokens (40): while
    # the first two run, a third does not fit in 150.
    answers: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: answers.append(setup.post(max_tokens=40))) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in answers) == [200, 200, 429]
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.json()["error"]["type"] == "tokens"
    assert refused.headers["x-ratelimit-limit-tokens"] == "150"
    # Once settled, each counts its real 12 tokens: room again.
    setup.settled()
    assert setup.usage().tokens == pytest.approx(24, abs=1)
    assert setup.post(max_tokens=40).status_code == 200


def test_requests_at_once_are_capped_and_a_hold_is_released_when_the_request_ends(setup: Setup) -> None:
    setup.up.delay_s = 0.5
    setup.start(f"  limited: {{digest: {digest(KEY)}, limits: {{max_in_flight: 2}}}}")
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(setup.post().status_code)) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert sorted(codes) == [200, 200, 429]
    setup.settled()
    assert setup.usage().in_flight == 0
    assert setup.post().status_code == 200


def test_a_spent_budget_is_insufficient_quota_until_the_period_ends(setup: Setup) -> None:
    setup.start(f"  limited: {{digest: {digest(KEY)}, budget: {{usd: 0.003, period: day}}}}")
    sdk = setup.sdk()
    for _ in range(3):  # each spends $0.0012: the third starts at $0.0024, below $0.003
        sdk.chat.completions.create(model="small", messages=HI, max_tokens=5)  # type: ignore[arg-type]
        setup.settled()
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="small", messages=HI, max_tokens=5)  # type: ignore[arg-type]
    assert (info.value.code, info.value.type) == ("insufficient_quota", "insufficient_quota")
    assert 0 < int(info.value.response.headers["retry-after"]) <= 86400
    setup.settled()
    used = setup.usage()
    assert (used.spent_nusd, used.reserved_nusd) == (round(3 * COST * 1e9), 0)
    metrics = httpx.get(setup.base.removesuffix("/v1") + "/metrics").text
    assert 'nanoroute_limited_total{key="-",reason="budget",team="-"} 1.0' in metrics
    assert 'nanoroute_spend_usd_total{key="-",model="small",team="-"} 0.0036' in metrics


def test_a_team_caps_its_keys_together(setup: Setup) -> None:
    secret = setup.tmp_path / "teammate.key"
    secret.write_text(OTHER + "\n")
    setup.start(f"  limited: {{digest: {digest(KEY)}, team: search, limits: {{rpm: 10}}}}\n"
                f"  teammate: {{secret_file: {secret}, team: search}}", "governance: {key_labels: true}")
    assert setup.post(KEY).status_code == 200
    assert setup.post(OTHER).status_code == 200
    refused = setup.post(KEY)
    assert refused.status_code == 429
    assert "this key's team" in refused.json()["error"]["message"]
    assert refused.headers["x-ratelimit-remaining-requests"] == "9"  # its own window: 1 of 10; a refusal counts nowhere
    metrics = httpx.get(setup.base.removesuffix("/v1") + "/metrics").text
    assert 'nanoroute_limited_total{key="limited",reason="requests",team="search"} 1.0' in metrics


def test_a_stream_the_client_cancels_is_charged_for_what_it_was_sent(setup: Setup) -> None:
    setup.up.chunks, setup.up.chunk_delay_s = 50, 0.02
    setup.start(f"  limited: {{digest: {digest(KEY)}, budget: {{usd: 10, period: total}}}}")
    with setup.sdk().chat.completions.create(model="small", messages=HI, stream=True) as stream:  # type: ignore[arg-type]
        for i, _ in enumerate(stream):
            if i == 5:
                break
    deadline = time.monotonic() + 5
    while setup.usage().spent_nusd == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    used = setup.usage()
    # Charged by estimate: the prompt as counted and a token per event relayed; never nothing.
    assert 0 < used.spent_nusd < round(60 * PRICE * 1e3)
    assert used.reserved_nusd == 0 and used.in_flight == 0


def test_the_messages_api_gets_the_same_limits_in_anthropics_envelope(setup: Setup) -> None:
    setup.start(f"  limited: {{digest: {digest(KEY)}, limits: {{rpm: 1}}}}")
    client = anthropic.Anthropic(base_url=setup.base.removesuffix("/v1"), api_key=KEY, max_retries=0)
    setup.clients.append(client)
    client.messages.create(model="small", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    # count_tokens is answered by the gateway and costs nothing: it is not counted.
    assert client.messages.count_tokens(model="small", messages=[{"role": "user", "content": "hi"}]).input_tokens > 0
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="small", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    body = info.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "rate_limit_error"


def test_an_expired_key_is_refused(setup: Setup) -> None:
    setup.start(f"  limited: {{digest: {digest(KEY)}, expires_at: '2020-01-01T00:00:00Z'}}\n"
                f"  teammate: {{digest: {digest(OTHER)}, expires_at: '2999-01-01T00:00:00Z'}}")
    r = setup.post(KEY)
    assert (r.status_code, r.json()["error"]["message"]) == (401, "This API key has expired")
    assert setup.post(OTHER).status_code == 200


def test_keys_without_limits_never_touch_the_store(setup: Setup) -> None:
    """No governance configured costs nothing: a key of NANOROUTE_API_KEYS without limits is served with the
    store unable to open at all."""
    blocked = setup.tmp_path / "not-a-dir"
    blocked.write_text("")
    setup.start("  {}", api_keys=f"plain={KEY}", store_path=blocked / "state.db")
    r = setup.post()
    assert r.status_code == 200
    assert "x-ratelimit-limit-requests" not in r.headers


@pytest.mark.parametrize(("on_error", "status"), [("allow", 200), ("deny", 503)])
def test_a_store_that_fails_lets_limited_keys_through_or_refuses_them(setup: Setup, on_error: str,
                                                                     status: int) -> None:
    blocked = setup.tmp_path / "not-a-dir"
    blocked.write_text("")
    setup.start(f"  limited: {{digest: {digest(KEY)}, limits: {{rpm: 100}}}}",
                f"governance: {{on_store_error: {on_error}}}", store_path=blocked / "state.db")
    started = time.monotonic()
    assert [setup.post().status_code for _ in range(3)] == [status] * 3
    assert time.monotonic() - started < 5
    if status == 503:
        assert setup.post().json()["error"]["code"] == "storage_unavailable"
    metrics = httpx.get(setup.base.removesuffix("/v1") + "/metrics").text
    action = "allowed" if on_error == "allow" else "denied"
    assert f'nanoroute_governance_store_errors_total{{action="{action}",operation="admit"}}' in metrics


def test_a_second_process_on_the_same_file_shares_the_counts(setup: Setup) -> None:
    keys = f"  limited: {{digest: {digest(KEY)}, limits: {{rpm: 2}}, budget: {{usd: 1, period: month}}}}"
    setup.start(keys)
    assert [setup.post().status_code for _ in range(2)] == [200, 200]
    setup.settled()
    setup.start(keys)  # a second gateway on the same data folder: a worker of `--workers 2`, or after a restart
    assert setup.post().status_code == 429
    assert setup.usage().spent_nusd == round(2 * COST * 1e9)

