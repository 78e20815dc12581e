"""gateway/routing/estimate.py: expected tokens, cost and latency from the catalog's figures."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.backends.base import Operation
from gateway.config.loader import load_text
from gateway.routing.estimate import DEFAULT_OUTPUT_TOKENS, estimate, output_tokens, prompt_tokens, usage_cost
from gateway.routing.request import RoutedRequest, parse_request
from gateway.routing.signals import Signals

TABLE = load_text("""\
backends:
  a: {type: openai, url: http://127.0.0.1:9/v1}
models:
  known: {backend: a, price: {input: 2, output: 10}, latency: {ttft_ms: 200, tokens_per_s: 50}}
  unknown: {backend: a}
""")


def request(**body: Any) -> RoutedRequest:
    raw = json.dumps({"model": "known", "messages": [{"role": "user", "content": "x" * 40}], **body}).encode()
    return parse_request(Operation.CHAT, raw, task_header=None, key_id=None, request_id="r")


def signals() -> Signals:
    return Signals(exact_tokens=False)


def test_prompt_tokens_are_counted_once_and_kept() -> None:
    req = request()
    assert prompt_tokens(req, signals()) == 40 // 4 + 4  # characters / 4, plus 4 per message
    assert req.prompt_tokens == 14


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, DEFAULT_OUTPUT_TOKENS),
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": 70, "max_tokens": 50}, 70),
        ({"max_tokens": 0}, DEFAULT_OUTPUT_TOKENS),
        ({"max_tokens": "many"}, DEFAULT_OUTPUT_TOKENS),
    ],
)
def test_output_tokens(body: dict[str, Any], expected: int) -> None:
    assert output_tokens(request(**body), "p", signals()) == expected


def test_cost_and_latency_from_price_and_prior() -> None:
    e = estimate(TABLE.models["known"], request(max_tokens=100), "p", signals(), tokens_needed=True)
    assert (e.prompt_tokens, e.output_tokens) == (14, 100)
    assert e.cost_usd == pytest.approx(14 * 2e-6 + 100 * 10e-6)
    assert e.latency_ms == pytest.approx(200 + 1000 * 100 / 50)
    assert e.latency_p95_ms == e.latency_ms, "a prior has no spread"


def test_no_cost_without_counting_the_prompt() -> None:
    e = estimate(TABLE.models["known"], request(), "p", signals(), tokens_needed=False)
    assert (e.prompt_tokens, e.cost_usd) == (None, None)


def test_unknown_figures_stay_unknown() -> None:
    e = estimate(TABLE.models["unknown"], request(), "p", signals(), tokens_needed=True)
    assert (e.cost_usd, e.latency_ms, e.latency_p95_ms) == (None, None, None)


def test_usage_cost() -> None:
    assert usage_cost(TABLE.models["known"], 1000, 100) == pytest.approx(1000 * 2e-6 + 100 * 10e-6)
    assert usage_cost(TABLE.models["unknown"], 1000, 100) is None
