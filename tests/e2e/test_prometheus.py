"""A real Prometheus scrapes a real gateway: what PromQL reads back equals what was sent.

Requests go through the official `openai` SDK; the fake upstream answers with known usage (JSON: 7 prompt
and 5 completion tokens; streams: 7 and one per chunk), so tokens, spend and savings are known exactly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.prometheus import Prometheus, prometheus_binary
from tests.fakes.servers import Servers, free_port

pytestmark = pytest.mark.e2e

PRICES = {"small": (0.15, 0.6), "large": (2.5, 10.0)}  # USD per million tokens: input, output
JSON_REQUESTS, STREAM_REQUESTS, FALLBACK_REQUESTS = 5, 3, 2
CHUNKS = 4


def cost(model: str, prompt: int, completion: int) -> float:
    price_in, price_out = PRICES[model]
    return prompt * price_in / 1e6 + completion * price_out / 1e6


def test_prometheus_reads_what_the_gateway_served(servers: Servers, tmp_path: Path) -> None:
    binary = prometheus_binary()
    up = servers.upstream("fake", chunks=CHUNKS)
    base = servers.gateway(f"""
backends:
  up: {{type: openai, url: {up.url}}}
  down: {{type: openai, url: "http://127.0.0.1:{free_port()}/v1"}}
models:
  small: {{backend: up, price: {{input: {PRICES["small"][0]}, output: {PRICES["small"][1]}}}}}
  large: {{backend: up, price: {{input: {PRICES["large"][0]}, output: {PRICES["large"][1]}}}}}
  broken: {{backend: down}}
policies:
  - {{name: chat, match: {{model: chat}}, strategy: cheapest, candidates: [small, large]}}
  - {{name: flaky, match: {{model: flaky}}, candidates: [broken], fallback: [small]}}
""", access_log=False)
    gateway = base.removesuffix("/v1")
    prom = Prometheus(binary, tmp_path, gateway.removeprefix("http://"))
    try:
        prom.wait_ready()
        _drive(base)
        # The gateway has counted every request (it counts when a request ends, which may be just
        # after the client has its answer); any scrape that starts from now on sees them all.
        metrics = httpx.get(f"{gateway}/metrics").text
        assert 'nanoroute_requests_total{api="chat",model="small",outcome="success",policy="chat"} 8.0' in metrics
        assert 'nanoroute_requests_total{api="chat",model="small",outcome="success",policy="flaky"} 2.0' in metrics
        prom.wait_scraped_after(time.time())
        _assert_metrics(prom)
    finally:
        prom.stop()


def _drive(base: str) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    with openai.OpenAI(base_url=base, api_key="unused", max_retries=0) as client:
        for _ in range(JSON_REQUESTS):
            reply = client.chat.completions.create(model="chat", messages=messages)
            assert reply.usage is not None and reply.usage.completion_tokens == 5
        for _ in range(STREAM_REQUESTS):
            chunks = list(client.chat.completions.create(
                model="chat", messages=messages, stream=True, stream_options={"include_usage": True}))
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == CHUNKS
        for _ in range(FALLBACK_REQUESTS):
            raw = client.chat.completions.with_raw_response.create(model="flaky", messages=messages)
            assert (raw.headers["x-nanoroute-model"], raw.headers["x-nanoroute-fallbacks"]) == ("small", "1")


def _assert_metrics(prom: Prometheus) -> None:
    sent = JSON_REQUESTS + STREAM_REQUESTS + FALLBACK_REQUESTS
    json_like = JSON_REQUESTS + FALLBACK_REQUESTS  # usage 7 + 5
    assert prom.value("sum(nanoroute_requests_total)") == sent
    assert prom.values("sum by (outcome) (nanoroute_requests_total)", "outcome") == {"success": sent}
    assert prom.values("sum by (policy) (nanoroute_requests_total)", "policy") == {
        "chat": JSON_REQUESTS + STREAM_REQUESTS, "flaky": FALLBACK_REQUESTS}

    prompt, completion = 7 * sent, 5 * json_like + CHUNKS * STREAM_REQUESTS
    assert prom.values('sum by (kind) (nanoroute_tokens_total{model="small"})', "kind") == {
        "prompt": prompt, "completion": completion}
    assert prom.value("sum(nanoroute_tokens_total)") == prompt + completion

    assert prom.value("sum(nanoroute_cost_usd_total)") == pytest.approx(cost("small", prompt, completion), rel=1e-9)
    assert prom.values("sum by (model) (nanoroute_cost_usd_total)", "model") == {"small": pytest.approx(
        cost("small", prompt, completion), rel=1e-9)}

    # chat's candidates include the pricier `large`: each answer saves what `large` would have cost
    # minus what `small` cost. flaky's only candidate has no price, so it saves nothing.
    chat_prompt, chat_completion = 7 * (JSON_REQUESTS + STREAM_REQUESTS), 5 * JSON_REQUESTS + CHUNKS * STREAM_REQUESTS
    saved = cost("large", chat_prompt, chat_completion) - cost("small", chat_prompt, chat_completion)
    assert saved > 0
    assert prom.values("sum by (policy) (nanoroute_savings_usd_total)", "policy") == {
        "chat": pytest.approx(saved, rel=1e-9), "flaky": 0.0}

    assert prom.value("sum(nanoroute_fallbacks_total)") == FALLBACK_REQUESTS
    moves = prom.query("sum by (policy, from_model, to_model, reason) (nanoroute_fallbacks_total)")
    assert [r["metric"] for r in moves] == [
        {"policy": "flaky", "from_model": "broken", "to_model": "small", "reason": "connect"}]
    assert prom.values("sum by (model) (nanoroute_upstream_errors_total)", "model") == {"broken": FALLBACK_REQUESTS}
    assert prom.value("sum(nanoroute_time_to_first_token_seconds_count)") == STREAM_REQUESTS
    assert prom.value('sum(nanoroute_request_duration_seconds_count{stream="true"})') == STREAM_REQUESTS
