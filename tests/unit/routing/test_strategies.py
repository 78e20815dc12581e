"""gateway/routing/decide.py, by strategy: decision tables from request features to policy, chain and reason.

Prompt tokens are counted with the characters / 4 approximation (`Signals(exact_tokens=False)`), so the
figures below are exact. With the default request ("hi", max_tokens=100: 5 prompt tokens, 100 output):

    model    cost (USD)   latency p50=p95 (ms)   quality              context window
    small    1.05e-05     5100                   support 0.92, 0.5    2048
    medium   2.05e-04     1300                   0.8                  16384
    large    3.05e-03     1000                   0.95                 131072
    unknown  unknown      unknown                none                 unknown
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.backends.base import Operation
from gateway.config.loader import load_text
from gateway.config.table import RoutingTable
from gateway.errors import ModelNotFound, PermissionDenied, PolicyUnmet
from gateway.record import RequestRecord
from gateway.routing.decide import Decision, decide
from gateway.routing.request import RoutedRequest, parse_request
from gateway.routing.signals import MIN_SAMPLES, Signals

CATALOG = """\
backends:
  local:  {type: vllm, urls: ["http://127.0.0.1:9/v1"]}
  hosted: {type: openai, url: "http://127.0.0.1:9/v1"}
models:
  small:   {backend: local, context_window: 2048, price: {input: 0.1, output: 0.1},
            latency: {ttft_ms: 100, tokens_per_s: 20}, quality: {support: 0.92, default: 0.5}}
  medium:  {backend: local, context_window: 16384, price: {input: 1, output: 2},
            latency: {ttft_ms: 300, tokens_per_s: 100}, quality: {default: 0.8}}
  large:   {backend: local, context_window: 131072, price: {input: 10, output: 30},
            latency: {ttft_ms: 500, tokens_per_s: 200}, quality: {default: 0.95}}
  unknown: {backend: local}
"""


def table(policies: str, catalog: str = CATALOG, extra: str = "") -> RoutingTable:
    return load_text(catalog + "policies:\n" + policies + extra)


def one_policy(spec: str) -> RoutingTable:
    """A table with one catch-all policy `p`; `spec` is the rest of its flow mapping."""
    return table(f"  - {{name: p, match: {{}}, {spec}}}\n")


def request(model: str = "any", *, task: str | None = None, key: str | None = None, pin: str | None = None,
            content: str = "hi", **body: Any) -> RoutedRequest:
    payload = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 100, **body}
    payload = {k: v for k, v in payload.items() if v is not None}
    return parse_request(Operation.CHAT, json.dumps(payload).encode(), task_header=task, key_id=key,
                         request_id="r", pin=pin)


def signals() -> Signals:
    return Signals(exact_tokens=False)


def route(tbl: RoutingTable, sig: Signals | None = None, /, **features: Any) -> Decision:
    return decide(tbl, request(**features), sig or signals())


def names(decision: Decision) -> list[str]:
    return [m.name for m in decision.chain]


@pytest.fixture
def seeded() -> Iterator[None]:
    """Weighted draws use the `random` module: seed it for a reproducible test, and restore it after."""
    state = random.getstate()
    random.seed(20240607)
    yield
    random.setstate(state)


# -- ordered, cheapest, fastest, cascade: one row per case ----------------------------------------

STRATEGY_TABLE = [
    # ordered: as written; the reason names the constraint that excluded the first candidate
    ("ordered", "candidates: [large, small, medium]", {}, ["large", "small", "medium"], "ordered"),
    ("ordered-default", "candidates: [medium, small]", {}, ["medium", "small"], "ordered"),
    ("ordered-quality", "candidates: [small, medium, large], require: {min_quality: 0.7}", {},
     ["medium", "large"], "quality_floor"),
    ("ordered-first-passes", "candidates: [large, small, medium], require: {min_quality: 0.7}", {},
     ["large", "medium"], "ordered"),
    ("ordered-latency", "candidates: [small, medium], require: {p95_latency_ms: 2000}", {}, ["medium"],
     "latency_slo"),
    ("ordered-fallback", "candidates: [medium, large], fallback: [small, medium]", {},
     ["medium", "large", "small"], "ordered"),
    # cheapest: by expected cost, unknown prices last
    ("cheapest", "strategy: cheapest, candidates: [large, unknown, medium, small]", {},
     ["small", "medium", "large", "unknown"], "cheapest"),
    ("cheapest-quality", "strategy: cheapest, candidates: [small, medium, large, unknown], require: {min_quality: 0.9}",
     {}, ["large"], "quality_floor"),
    ("cheapest-task-quality", "strategy: cheapest, candidates: [small, medium, large], require: {min_quality: 0.9}",
     {"task": "support"}, ["small", "large"], "cheapest"),
    ("cheapest-latency", "strategy: cheapest, candidates: [small, medium, large], require: {p95_latency_ms: 2000}",
     {}, ["medium", "large"], "latency_slo"),
    ("cheapest-cap-keeps-unpriced",
     "strategy: cheapest, candidates: [small, medium, large, unknown], require: {max_cost_usd: 0.0001}", {},
     ["small", "unknown"], "cheapest"),
    ("cheapest-cap", "strategy: cheapest, candidates: [small, unknown], require: {max_cost_usd: 0.00001}", {},
     ["unknown"], "cost_cap"),
    ("cheapest-min-context", "strategy: cheapest, candidates: [small, medium], require: {min_context: 4096}", {},
     ["medium"], "context_window"),
    ("cheapest-prompt-plus-output", "strategy: cheapest, candidates: [small, medium]", {"max_tokens": 3000},
     ["medium"], "context_window"),
    ("cheapest-best-effort", "strategy: cheapest, candidates: [large, small, medium], require: {min_quality: 0.99}",
     {}, ["small", "medium", "large"], "best_effort"),
    # fastest: by expected p50 latency, unknown last; output length moves it
    ("fastest", "strategy: fastest, candidates: [small, unknown, medium, large]", {},
     ["large", "medium", "small", "unknown"], "fastest"),
    ("fastest-one-token", "strategy: fastest, candidates: [large, medium, small]", {"max_tokens": 1},
     ["small", "medium", "large"], "fastest"),
    ("fastest-cap", "strategy: fastest, candidates: [small, medium, large], require: {max_cost_usd: 0.001}", {},
     ["medium", "small"], "cost_cap"),
    ("fastest-best-effort", "strategy: fastest, candidates: [small, medium, large], require: {min_quality: 0.96}",
     {}, ["large", "medium", "small"], "best_effort"),
    # cascade: by expected cost, like cheapest; only the reason differs
    ("cascade", "strategy: cascade, candidates: [large, small, medium]", {}, ["small", "medium", "large"],
     "cascade"),
    ("cascade-quality", "strategy: cascade, candidates: [large, small, medium], require: {min_quality: 0.7}", {},
     ["medium", "large"], "cascade"),
    ("cascade-fallback",
     "strategy: cascade, candidates: [large, small, medium], require: {min_quality: 0.7}, fallback: [small]", {},
     ["medium", "large", "small"], "cascade"),
    ("cascade-best-effort", "strategy: cascade, candidates: [large, medium], require: {min_quality: 0.99}", {},
     ["medium", "large"], "best_effort"),
    # weighted with one eligible candidate: no draw can change the outcome
    ("weighted-eligible-only",
     "strategy: weighted, candidates: [small, medium], weights: {small: 1000, medium: 1}, require: {min_quality: 0.7}",
     {}, ["medium"], "weighted"),
]


@pytest.mark.parametrize(("spec", "features", "chain", "reason"), [row[1:] for row in STRATEGY_TABLE],
                         ids=[row[0] for row in STRATEGY_TABLE])
def test_strategy_decision_table(spec: str, features: dict[str, Any], chain: list[str], reason: str) -> None:
    decision = route(one_policy(spec), **features)
    assert (decision.policy, names(decision), decision.reason) == ("p", chain, reason)


def test_an_empty_prompt_still_needs_room_for_the_answer() -> None:
    # Zero prompt tokens are counted tokens: the 3000-token answer must still fit the window.
    tbl = one_policy("strategy: cheapest, candidates: [small, medium]")
    body = json.dumps({"model": "any", "messages": [], "max_tokens": 3000}).encode()
    req = parse_request(Operation.CHAT, body, task_header=None, key_id=None, request_id="r")
    decision = decide(tbl, req, signals())
    assert (req.prompt_tokens, names(decision), decision.reason) == (0, ["medium"], "context_window")


CASCADE_DEPTHS = [
    ("strategy: cascade, candidates: [large, small, medium]", 2),
    ("strategy: cascade, candidates: [large, small, medium], require: {min_quality: 0.7}", 1),
    ("strategy: cascade, candidates: [large, small, medium], require: {min_quality: 0.7}, fallback: [small]", 1),
    ("strategy: cascade, candidates: [small, large], require: {min_quality: 0.9}", 0),
    ("strategy: cascade, candidates: [small, medium], require: {min_quality: 0.99}", 1),  # best effort: all ranked
    ("strategy: cheapest, candidates: [large, small, medium]", 0),
    ("candidates: [large, small, medium]", 0),
]


@pytest.mark.parametrize(("spec", "depth"), CASCADE_DEPTHS)
def test_cascade_depth_is_the_ranked_candidates_but_the_last(spec: str, depth: int) -> None:
    decision = route(one_policy(spec))
    assert decision.cascade_depth == depth
    assert decision.cascade_depth < len(decision.chain)


# -- cheapest: where prices come from --------------------------------------------------------------

PRICED = """\
backends:
  local:  {type: vllm, urls: ["http://127.0.0.1:9/v1"]}
  hosted: {type: openai, url: "http://127.0.0.1:9/v1"}
models:
  rented:      {backend: local, hourly: {usd_per_hour: 3.6, tokens_per_s: 1000}}  # 0.1 / 1.0 USD per 1M
  gpt-4o-mini: {backend: hosted}                                                  # cost map: 0.15 / 0.60
  configured:  {backend: local, price: {input: 1, output: 2}}
  unpriced:    {backend: local}
"""


@pytest.mark.parametrize(("content", "max_tokens", "chain"), [
    # output-heavy: gpt-4o-mini's cheaper output wins
    ("hi", 100, ["gpt-4o-mini", "rented", "configured", "unpriced"]),
    # prompt-heavy (20004 tokens): the rented model's cheap prefill wins
    ("x" * 80000, 100, ["rented", "gpt-4o-mini", "configured", "unpriced"]),
])
def test_cheapest_compares_config_hourly_and_cost_map_prices(content: str, max_tokens: int, chain: list[str]) -> None:
    tbl = table("  - {name: p, strategy: cheapest, candidates: [unpriced, configured, rented, gpt-4o-mini]}\n",
                catalog=PRICED)
    sources = {name: m.price_source for name, m in tbl.models.items()}
    assert sources == {"rented": "hourly", "gpt-4o-mini": "cost_map", "configured": "config", "unpriced": None}
    decision = route(tbl, content=content, max_tokens=max_tokens)
    assert (names(decision), decision.reason) == (chain, "cheapest")


# -- fastest: measurements replace priors ---------------------------------------------------------


def observe_streams(sig: Signals, tbl: RoutingTable, model: str, n: int, ttft_s: float, tpot_s: float) -> None:
    """`n` streamed answers of 100 tokens from `model`, as the relay records them."""
    for i in range(n):
        rec = RequestRecord(f"r{i}", 0.0, policy="p", model=tbl.models[model], status=200, stream=True,
                            completion_tokens=100, first_byte_s=ttft_s, duration_s=ttft_s + 99 * tpot_s)
        sig.observe(rec, frozenset())


def test_fastest_follows_measurements_once_a_model_has_enough() -> None:
    tbl = one_policy("strategy: fastest, candidates: [small, medium, large]")
    sig = signals()
    observe_streams(sig, tbl, "large", MIN_SAMPLES - 1, ttft_s=2.0, tpot_s=0.1)  # 2 s + 100 x 100 ms = 12 s
    assert names(route(tbl, sig)) == ["large", "medium", "small"]  # the prior (1000 ms) still stands
    observe_streams(sig, tbl, "large", 1, ttft_s=2.0, tpot_s=0.1)
    assert names(route(tbl, sig)) == ["medium", "small", "large"]
    observe_streams(sig, tbl, "small", MIN_SAMPLES, ttft_s=0.05, tpot_s=0.001)  # 50 ms + 100 x 1 ms
    assert names(route(tbl, sig)) == ["small", "medium", "large"]


def test_measured_p95_trips_the_latency_slo() -> None:
    tbl = one_policy("candidates: [large, medium], require: {p95_latency_ms: 2000}")
    sig = signals()
    assert (names(route(tbl, sig)), route(tbl, sig).reason) == (["large", "medium"], "ordered")
    observe_streams(sig, tbl, "large", MIN_SAMPLES, ttft_s=1.5, tpot_s=0.02)  # 1.5 s + 2 s
    decision = route(tbl, sig)
    assert (names(decision), decision.reason) == (["medium"], "latency_slo")


# -- weighted ---------------------------------------------------------------------------------------

WEIGHTED = "strategy: weighted, candidates: [small, medium], weights: {small: 3, medium: 1}"


def test_weights_are_respected_over_many_draws(seeded: None) -> None:
    tbl = one_policy(WEIGHTED)
    chains = Counter(tuple(names(route(tbl))) for _ in range(4000))
    assert set(chains) == {("small", "medium"), ("medium", "small")}  # the rest follow in written order
    share = chains["small", "medium"] / 4000
    assert 0.72 < share < 0.78


def test_weights_apply_among_the_eligible_candidates(seeded: None) -> None:
    tbl = one_policy("strategy: weighted, candidates: [small, medium, large], "
                     "weights: {small: 100, medium: 1, large: 3}, require: {min_quality: 0.7}")
    firsts = Counter(route(tbl).chain[0].name for _ in range(2000))
    assert set(firsts) == {"medium", "large"}
    assert 0.70 < firsts["large"] / 2000 < 0.80


@pytest.mark.parametrize(("sticky", "feature"), [("user", "user"), ("key", "key")])
def test_sticky_clients_always_land_on_the_same_model(sticky: str, feature: str) -> None:
    tbl = one_policy(f"{WEIGHTED}, sticky: {sticky}")
    for client in ("alice", "bob", "carol"):
        seen = {tuple(names(route(tbl, **{feature: client}))) for _ in range(50)}
        assert len(seen) == 1


@pytest.mark.parametrize(("sticky", "feature"), [("user", "user"), ("key", "key")])
def test_sticky_clients_spread_by_weight(sticky: str, feature: str) -> None:
    tbl = one_policy(f"{WEIGHTED}, sticky: {sticky}")
    firsts = Counter(route(tbl, **{feature: f"client-{i}"}).chain[0].name for i in range(2000))
    assert 0.70 < firsts["small"] / 2000 < 0.80


def test_sticky_does_not_depend_on_other_request_features() -> None:
    tbl = one_policy(f"{WEIGHTED}, sticky: user")
    chains = {tuple(names(route(tbl, user="dana", content=c, task=t))) for c in ("a", "b" * 500) for t in (None, "x")}
    assert len(chains) == 1


def test_sticky_user_without_a_user_spreads(seeded: None) -> None:
    tbl = one_policy(f"{WEIGHTED}, sticky: user")
    firsts = Counter(route(tbl).chain[0].name for _ in range(400))
    assert set(firsts) == {"small", "medium"}


# -- constraints no candidate meets ------------------------------------------------------------------


def test_on_unmet_reject_refuses_and_lists_what_each_candidate_failed() -> None:
    tbl = one_policy("strategy: cheapest, candidates: [small, medium], on_unmet: reject, "
                     "require: {min_quality: 0.9, p95_latency_ms: 2000}")
    with pytest.raises(PolicyUnmet) as info:
        route(tbl)
    assert info.value.status == 503
    assert info.value.code == "no_eligible_model"
    assert "policy 'p'" in info.value.message
    assert "small: quality_floor, latency_slo; medium: quality_floor" in info.value.message


def test_on_unmet_reject_routes_normally_while_a_candidate_qualifies() -> None:
    tbl = one_policy("strategy: cheapest, candidates: [small, large], on_unmet: reject, require: {min_quality: 0.9}")
    decision = route(tbl)
    assert (names(decision), decision.reason) == (["large"], "quality_floor")


# -- pinning ------------------------------------------------------------------------------------------

ALL_TO_SMALL = "  - {name: all, match: {}, candidates: [small]}\n"


@pytest.mark.parametrize(("allow", "key"), [
    ("[ops]", "ops"),
    ("[ops, 1a2b3c4d]", "1a2b3c4d"),
    ("['*']", "anyone"),
    ("['*']", None),
])
def test_an_allowed_key_pins_a_model(allow: str, key: str | None) -> None:
    tbl = table(ALL_TO_SMALL, extra=f"pinning: {{allow_keys: {allow}}}\n")
    decision = route(tbl, key=key, pin="large")
    assert (decision.policy, names(decision), decision.reason) == ("pinned", ["large"], "pinned")
    assert decision.route is None


@pytest.mark.parametrize(("extra", "key"), [
    ("pinning: {allow_keys: [ops]}\n", "dev"),
    ("pinning: {allow_keys: [ops]}\n", None),
    ("", "ops"),
])
def test_other_keys_may_not_pin(extra: str, key: str | None) -> None:
    tbl = table(ALL_TO_SMALL, extra=extra)
    with pytest.raises(PermissionDenied) as info:
        route(tbl, key=key, pin="large")
    assert (info.value.status, info.value.param) == (403, "X-Nanoroute-Model")
    assert names(route(tbl, key=key)) == ["small"]  # the same request unpinned is served


def test_pinning_an_unknown_model_is_model_not_found() -> None:
    tbl = table(ALL_TO_SMALL, extra="pinning: {allow_keys: [ops]}\n")
    with pytest.raises(ModelNotFound) as info:
        route(tbl, key="ops", pin="no-such-model")
    assert "no-such-model" in info.value.message


def test_pinning_is_by_catalog_name_and_skips_the_policys_constraints() -> None:
    catalog = CATALOG.replace("large:   {backend: local,", "large:   {backend: local, name: large-2024,")
    tbl = table("  - {name: all, candidates: [small, large], require: {min_quality: 0.99}, on_unmet: reject}\n",
                catalog=catalog, extra="pinning: {allow_keys: ['*']}\n")
    assert names(route(tbl, pin="small")) == ["small"]
    with pytest.raises(ModelNotFound):
        route(tbl, pin="large-2024")


# -- matching: every condition, first match wins ------------------------------------------------------

MATCHING = """\
  - {name: by-model, match: {model: ["gpt-4*", "o?-mini"]}, candidates: [large]}
  - {name: by-task, match: {task: [support, billing]}, candidates: [small]}
  - {name: by-key, match: {key: ops}, candidates: [medium]}
  - {name: tools, match: {has_tools: true}, candidates: [large]}
  - {name: json, match: {json_mode: true}, candidates: [medium]}
  - {name: streams, match: {stream: true}, candidates: [small]}
  - {name: long, match: {min_prompt_tokens: 1000}, candidates: [large]}
  - {name: short, match: {max_prompt_tokens: 10}, candidates: [small]}
  - {name: rest, match: {}, candidates: [medium]}
"""
PLAIN = "x" * 100  # 29 prompt tokens: neither long nor short
TOOL = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]

MATCH_TABLE = [
    ("glob", {"model": "gpt-4o"}, "by-model"),
    ("glob-?", {"model": "o1-mini"}, "by-model"),
    ("glob-is-anchored", {"model": "my-gpt-4"}, "rest"),
    ("glob-whole-name", {"model": "o1-mini-2"}, "rest"),
    ("task-header", {"task": "support"}, "by-task"),
    ("task-metadata", {"metadata": {"task": "billing"}}, "by-task"),
    ("task-other", {"task": "code"}, "rest"),
    ("key", {"key": "ops"}, "by-key"),
    ("key-other", {"key": "dev"}, "rest"),
    ("tools", {"tools": TOOL}, "tools"),
    ("functions", {"functions": [{"name": "f"}]}, "tools"),
    ("tools-empty", {"tools": []}, "rest"),
    ("json-object", {"response_format": {"type": "json_object"}}, "json"),
    ("json-schema", {"response_format": {"type": "json_schema", "json_schema": {"name": "s"}}}, "json"),
    ("json-text", {"response_format": {"type": "text"}}, "rest"),
    ("stream", {"stream": True}, "streams"),
    ("stream-false", {"stream": False}, "rest"),
    ("min-tokens-at-bound", {"content": "x" * 3984}, "long"),  # 996 + 4 = 1000 tokens
    ("min-tokens-below", {"content": "x" * 3980}, "rest"),  # 999 tokens
    ("max-tokens-at-bound", {"content": "x" * 24}, "short"),  # 6 + 4 = 10 tokens
    ("max-tokens-above", {"content": "x" * 25}, "rest"),  # 11 tokens
    ("max-tokens-empty", {"content": ""}, "short"),
    ("first-match-wins", {"model": "gpt-4o", "task": "support", "key": "ops", "stream": True}, "by-model"),
    ("second-match-wins", {"task": "support", "key": "ops", "tools": TOOL}, "by-task"),
]


@pytest.mark.parametrize(("features", "policy"), [row[1:] for row in MATCH_TABLE], ids=[row[0] for row in MATCH_TABLE])
def test_match_decision_table(features: dict[str, Any], policy: str) -> None:
    features = {"content": PLAIN, **features}
    assert route(table(MATCHING), **features).policy == policy


@pytest.mark.parametrize(("condition", "features", "matches"), [
    ("has_tools: false", {}, True),
    ("has_tools: false", {"tools": TOOL}, False),
    ("json_mode: false", {"response_format": {"type": "text"}}, True),
    ("json_mode: false", {"response_format": {"type": "json_object"}}, False),
    ("stream: false", {}, True),
    ("stream: false", {"stream": True}, False),
    ("min_prompt_tokens: 5, max_prompt_tokens: 5", {}, True),  # "hi": 1 + 4 tokens
    ("min_prompt_tokens: 6, max_prompt_tokens: 9", {}, False),
    ("model: any, task: support", {"task": "support"}, True),
    ("model: any, task: support", {"model": "other", "task": "support"}, False),
    ("model: any, task: support", {}, False),
])
def test_every_condition_of_a_match_must_hold(condition: str, features: dict[str, Any], matches: bool) -> None:
    tbl = table(f"  - {{name: cond, match: {{{condition}}}, candidates: [large]}}\n"
                "  - {name: rest, candidates: [small]}\n")
    assert route(tbl, **features).policy == ("cond" if matches else "rest")


def test_no_match_and_no_catalog_model_is_model_not_found() -> None:
    tbl = table("  - {name: gpt, match: {model: 'gpt-*'}, candidates: [large]}\n")
    assert route(tbl, model="medium").policy == "direct"
    with pytest.raises(ModelNotFound):
        route(tbl, model="claude")
