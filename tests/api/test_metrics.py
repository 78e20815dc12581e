"""/metrics through a real gateway: what is counted, and that clients cannot grow the series count."""

from __future__ import annotations

import json
import logging

import httpx
import openai
import pytest

from tests.api.support import Client, wait_until
from tests.fakes.servers import Servers


def config(url: str) -> str:
    return f"""
backends:
  b: {{type: openai, url: {url}}}
models:
  small: {{backend: b, name: up-small, price: {{input: 1.0, output: 2.0}}}}
  large: {{backend: b, name: up-large, price: {{input: 10.0, output: 30.0}}}}
policies:
  - {{name: support, match: {{task: support}}, strategy: cheapest, candidates: [small, large]}}
"""


def scrape(base: str) -> dict[str, float]:
    text = httpx.get(base.removesuffix("/v1") + "/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, v = line.rpartition(" ")
            samples[name] = float(v)
    return samples


def test_series_count_stays_flat_when_clients_send_unknown_names(client: Client, servers: Servers) -> None:
    up = servers.upstream()
    base = servers.gateway(config(up.url))
    sdk = client(base, "k")
    sdk.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])
    for i in range(3):
        with pytest.raises(openai.NotFoundError):
            sdk.chat.completions.create(
                model=f"unknown-{i}", messages=[], extra_headers={"X-Nanoroute-Task": f"t{i}"}
            )
    before = len(scrape(base))
    for i in range(200):
        with pytest.raises(openai.NotFoundError):
            sdk.chat.completions.create(model=f"flood-{i}", messages=[], extra_headers={"X-Nanoroute-Task": f"x{i}"})
        sdk.chat.completions.create(model="small", messages=[], extra_headers={"X-Nanoroute-Task": f"y{i}"})
    after = scrape(base)
    assert len(after) == before
    assert after['nanoroute_requests_total{api="chat",model="none",outcome="client_error",policy="none"}'] == 203
    assert not any("flood" in k or "unknown-" in k or "x1" in k for k in after)


def test_tokens_and_cost_are_counted_for_json_and_streams(client: Client, servers: Servers) -> None:
    up = servers.upstream(chunks=4)
    base = servers.gateway(config(up.url))
    sdk = client(base, "k")
    task = {"X-Nanoroute-Task": "support"}
    sdk.chat.completions.create(model="any", messages=[{"role": "user", "content": "a"}], extra_headers=task)
    chunks = list(sdk.chat.completions.create(model="any", messages=[{"role": "user", "content": "a"}],
                                                 stream=True, extra_headers=task))
    # The client did not ask for usage: the gateway asked upstream for it and removed it again.
    assert up.seen[-1].body["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in chunks)
    chunks = list(sdk.chat.completions.create(model="any", messages=[{"role": "user", "content": "a"}],
                                                 stream=True, stream_options={"include_usage": True},
                                                 extra_headers=task))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    m = scrape(base)
    assert m['nanoroute_tokens_total{kind="prompt",model="small"}'] == 7 * 3
    assert m['nanoroute_tokens_total{kind="completion",model="small"}'] == 5 + 4 + 4
    expected_cost = (21 * 1.0 + 13 * 2.0) / 1e6
    assert m['nanoroute_cost_usd_total{model="small",policy="support"}'] == pytest.approx(expected_cost)
    expected_savings = (21 * 10.0 + 13 * 30.0) / 1e6 - expected_cost
    assert m['nanoroute_savings_usd_total{policy="support"}'] == pytest.approx(expected_savings)
    assert m['nanoroute_time_to_first_token_seconds_count{model="small"}'] == 2
    assert m['nanoroute_route_decisions_total{model="small",policy="support",reason="cheapest"}'] == 3
    assert m['nanoroute_in_flight_requests{model="small"}'] == 0


def test_access_log_has_one_json_line_per_request_without_prompt_or_key(
    client: Client, servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    up = servers.upstream()
    base = servers.gateway(config(up.url), api_keys="secret-key-1-0123456789")
    sdk = client(base, "secret-key-1-0123456789")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "nanoroute.access"]

    with caplog.at_level(logging.INFO, logger="nanoroute.access"):
        sdk.chat.completions.create(model="small", messages=[{"role": "user", "content": "my private prompt"}],
                                       extra_headers={"X-Request-Id": "req-42"})
        # The line is written when the request ends, which may be just after the client has its answer.
        wait_until(lambda: len(lines()) > 0)
    assert len(lines()) == 1
    entry = json.loads(lines()[0])
    assert entry["request_id"] == "req-42"
    assert entry["policy"] == "direct" and entry["model"] == "small" and entry["status"] == 200
    assert entry["prompt_tokens"] == 7 and entry["completion_tokens"] == 5
    assert entry["cost_usd"] == pytest.approx((7 * 1.0 + 5 * 2.0) / 1e6)
    assert len(entry["key_id"]) == 8
    assert "private" not in lines()[0] and "secret-key-1-0123456789" not in lines()[0]
    assert "Hello from the fake upstream" not in lines()[0]


def test_metrics_can_be_served_on_a_port_of_their_own(client: Client, servers: Servers) -> None:
    from tests.fakes.servers import free_port

    up = servers.upstream()
    port = free_port()
    base = servers.gateway(config(up.url), metrics_port=port)
    client(base, "k").chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'nanoroute_requests_total{api="chat",model="small",outcome="success",policy="direct"} 1.0' in text
