"""gateway/routing/decide.py: which policy applies, how it ranks its candidates, and the chain it yields."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.backends.base import Operation
from gateway.config.loader import load_text
from gateway.config.table import RoutingTable
from gateway.errors import ModelNotFound
from gateway.routing.decide import Decision, decide
from gateway.routing.request import parse_request
from gateway.routing.signals import Signals

# With max_tokens=100 and a prompt of 5 tokens (one message "hi", counted as characters / 4):
#   cost:    cheap 0.000105 USD < mid 0.000525 < pricey 0.00615; unpriced is unknown
#   latency: pricey 550 ms < mid 1100 ms < cheap 2500 ms (the priors; no measurements yet); unpriced is unknown
CATALOG = """\
backends:
  a: {type: openai, url: http://127.0.0.1:9/v1}
models:
  cheap:    {backend: a, context_window: 4096, price: {input: 1, output: 1},
             latency: {ttft_ms: 500, tokens_per_s: 50}, quality: {default: 0.5, support: 0.95}}
  mid:      {backend: a, context_window: 32000, price: {input: 5, output: 5},
             latency: {ttft_ms: 100, tokens_per_s: 100}, quality: {default: 0.8}}
  pricey:   {backend: a, name: pricey-2024, context_window: 128000, price: {input: 30, output: 60},
             latency: {ttft_ms: 50, tokens_per_s: 200}, quality: {default: 0.95}}
  unpriced: {backend: a}
"""


def table(policies: str = "") -> RoutingTable:
    return load_text(CATALOG + ("policies:\n" + policies if policies else ""))


def route(tbl: RoutingTable, model: str = "any", task: str | None = None, **body: Any) -> Decision:
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100, **body}
    req = parse_request(Operation.CHAT, json.dumps(payload).encode(), task_header=task, key_id=None,
                        request_id="r")
    return decide(tbl, req, Signals(exact_tokens=False))


def names(decision: Decision) -> list[str]:
    return [m.name for m in decision.chain]


# -- which policy ----------------------------------------------------------------------------------


def test_first_matching_policy_wins() -> None:
    tbl = table("""\
  - {name: first, match: {model: "gpt-*"}, candidates: [mid]}
  - {name: second, match: {model: "gpt-4*"}, candidates: [pricey]}
  - {name: rest, candidates: [cheap]}
""")
    assert route(tbl, "gpt-4o").policy == "first"
    assert route(tbl, "claude").policy == "rest"


def test_model_globs() -> None:
    tbl = table("""\
  - {name: gpt, match: {model: ["gpt-4*", "o?-mini"]}, candidates: [pricey]}
""")
    assert route(tbl, "gpt-4o-mini").policy == "gpt"
    assert route(tbl, "o1-mini").policy == "gpt"
    with pytest.raises(ModelNotFound):
        route(tbl, "my-gpt-4")
    with pytest.raises(ModelNotFound):
        route(tbl, "o1-mini-2")


def test_task_match() -> None:
    tbl = table("""\
  - {name: support, match: {task: [support, billing]}, candidates: [cheap]}
  - {name: rest, candidates: [pricey]}
""")
    assert route(tbl, task="support").policy == "support"
    assert route(tbl, task="billing").policy == "support"
    assert route(tbl, metadata={"task": "billing"}).policy == "support"
    assert route(tbl, task="code").policy == "rest"
    assert route(tbl).policy == "rest"


def test_model_and_task_must_both_match() -> None:
    tbl = table("  - {name: both, match: {model: small, task: support}, candidates: [cheap]}\n")
    assert route(tbl, "small", task="support").policy == "both"
    with pytest.raises(ModelNotFound):
        route(tbl, "small", task="code")
    with pytest.raises(ModelNotFound):
        route(tbl, "large", task="support")


def test_an_empty_match_is_a_catch_all() -> None:
    tbl = table("  - {name: all, match: {}, candidates: [mid]}\n")
    for model in ("anything", "cheap", "pricey-2024"):
        decision = route(tbl, model)
        assert (decision.policy, names(decision)) == ("all", ["mid"])


def test_a_catalog_model_that_matches_no_policy_goes_direct() -> None:
    tbl = table("  - {name: gpt, match: {model: 'gpt-*'}, candidates: [mid]}\n")
    decision = route(tbl, "pricey")
    assert (decision.policy, decision.chain, decision.reason) == ("direct", (tbl.models["pricey"],), "direct")


def test_direct_without_any_policy() -> None:
    tbl = table()
    decision = route(tbl, "cheap")
    assert (decision.policy, decision.chain, decision.reason) == ("direct", (tbl.models["cheap"],), "direct")


def test_direct_is_by_catalog_name_not_upstream_name() -> None:
    with pytest.raises(ModelNotFound):
        route(table(), "pricey-2024")


def test_a_policy_wins_over_direct() -> None:
    tbl = table("  - {name: all, candidates: [mid]}\n")
    assert names(route(tbl, "cheap")) == ["mid"]


def test_unknown_model_is_model_not_found() -> None:
    with pytest.raises(ModelNotFound) as info:
        route(table(), "nope")
    err = info.value
    assert (err.status, err.code, err.param) == (404, "model_not_found", "model")
    assert "'nope'" in err.message


# -- ranking ----------------------------------------------------------------------------------------


def test_ordered_keeps_the_policys_order() -> None:
    tbl = table("  - {name: p, strategy: ordered, candidates: [pricey, unpriced, cheap, mid]}\n")
    decision = route(tbl)
    assert names(decision) == ["pricey", "unpriced", "cheap", "mid"]
    assert decision.reason == "ordered"


def test_ordered_is_the_default_strategy() -> None:
    tbl = table("  - {name: p, candidates: [mid, cheap]}\n")
    assert (names(route(tbl)), route(tbl).reason) == (["mid", "cheap"], "ordered")


def test_cheapest_ranks_by_estimated_cost_with_unknown_prices_last() -> None:
    tbl = table("  - {name: p, strategy: cheapest, candidates: [unpriced, pricey, cheap, mid]}\n")
    decision = route(tbl)
    assert names(decision) == ["cheap", "mid", "pricey", "unpriced"]
    assert decision.reason == "cheapest"


def test_fastest_ranks_by_estimated_latency_with_unknown_latency_last() -> None:
    tbl = table("  - {name: p, strategy: fastest, candidates: [unpriced, cheap, mid, pricey]}\n")
    decision = route(tbl)
    assert names(decision) == ["pricey", "mid", "cheap", "unpriced"]
    assert decision.reason == "fastest"


def test_output_length_changes_the_fastest() -> None:
    # Short answers favour low time-to-first-token; long ones favour throughput.
    extra = "  slow-start: {backend: a, latency: {ttft_ms: 2000, tokens_per_s: 1000}}\n"
    tbl = load_text(CATALOG + extra + "policies:\n  - {name: p, strategy: fastest, candidates: [slow-start, mid]}\n")
    assert names(route(tbl, max_tokens=10)) == ["mid", "slow-start"]
    assert names(route(tbl, max_tokens=5000)) == ["slow-start", "mid"]


def test_ties_keep_the_policys_order() -> None:
    extra = "  twin: {backend: a, price: {input: 1, output: 1}}\n"
    tbl = load_text(CATALOG + extra + "policies:\n"
                    "  - {name: p, strategy: cheapest, candidates: [twin, cheap]}\n"
                    "  - {name: q, match: {task: q}, strategy: cheapest, candidates: [cheap, twin]}\n")
    assert names(route(tbl, task="z")) == ["twin", "cheap"]
    tbl = load_text(CATALOG + extra + "policies:\n  - {name: q, strategy: cheapest, candidates: [cheap, twin]}\n")
    assert names(route(tbl)) == ["cheap", "twin"]


def test_free_models_rank_first_not_as_unknown() -> None:
    extra = "  free: {backend: a, price: {input: 0, output: 0}}\n"
    tbl = load_text(CATALOG + extra + "policies:\n"
                    "  - {name: p, strategy: cheapest, candidates: [unpriced, cheap, free]}\n")
    assert names(route(tbl)) == ["free", "cheap", "unpriced"]


# -- constraints ----------------------------------------------------------------------------------


def test_min_quality_leaves_out_weaker_and_unrated_models() -> None:
    tbl = table("  - {name: p, strategy: cheapest, candidates: [unpriced, pricey, cheap, mid], "
                "require: {min_quality: 0.8}}\n")
    decision = route(tbl)
    assert names(decision) == ["mid", "pricey"]
    assert decision.reason == "quality_floor", "the cheapest model, cheap, was kept out by the quality floor"


def test_min_quality_reads_the_tasks_score_then_default() -> None:
    tbl = table("  - {name: p, strategy: cheapest, candidates: [cheap, mid], require: {min_quality: 0.9}}\n")
    decision = route(tbl, task="support")  # cheap: support 0.95; mid: default 0.8
    assert (names(decision), decision.reason) == (["cheap"], "cheapest")
    assert route(tbl, task="code").reason == "best_effort"


def test_min_context_leaves_out_small_windows_but_not_unknown_ones() -> None:
    tbl = table("  - {name: p, candidates: [cheap, unpriced, mid], require: {min_context: 8000}}\n")
    decision = route(tbl)
    assert (names(decision), decision.reason) == (["unpriced", "mid"], "context_window")


def test_max_cost_leaves_out_dear_models_but_not_unpriced_ones() -> None:
    tbl = table("  - {name: p, candidates: [pricey, unpriced, mid, cheap], require: {max_cost_usd: 0.001}}\n")
    decision = route(tbl)
    assert (names(decision), decision.reason) == (["unpriced", "mid", "cheap"], "cost_cap")
    assert names(route(tbl, max_tokens=500)) == ["unpriced", "cheap"]  # mid now costs 0.002525


def test_p95_latency_leaves_out_slow_models_but_not_unmeasured_ones() -> None:
    tbl = table("  - {name: p, strategy: cheapest, candidates: [cheap, mid, pricey, unpriced], "
                "require: {p95_latency_ms: 1200}}\n")
    decision = route(tbl)
    assert (names(decision), decision.reason) == (["mid", "pricey", "unpriced"], "latency_slo")


def test_all_constraints_together() -> None:
    tbl = table("  - {name: p, strategy: fastest, candidates: [cheap, mid, pricey], require: "
                "{min_quality: 0.7, min_context: 16000, max_cost_usd: 0.001, p95_latency_ms: 2000}}\n")
    decision = route(tbl)
    assert names(decision) == ["mid"]
    assert decision.reason == "cost_cap", "the fastest model, pricey, was kept out by the cost cap"


def test_the_reason_is_the_strategy_when_its_own_choice_is_eligible() -> None:
    tbl = table("  - {name: p, strategy: cheapest, candidates: [pricey, mid, cheap], require: {max_cost_usd: 0.001}}\n")
    decision = route(tbl)
    assert (names(decision), decision.reason) == (["cheap", "mid"], "cheapest")


def test_a_prompt_too_long_for_a_window_leaves_that_model_out() -> None:
    tbl = table("  - {name: p, strategy: cheapest, candidates: [cheap, mid]}\n")
    assert names(route(tbl, max_tokens=100)) == ["cheap", "mid"]
    decision = route(tbl, max_tokens=5000)  # 5 + 5000 tokens do not fit cheap's 4096
    assert (names(decision), decision.reason) == (["mid"], "context_window")


def test_best_effort_when_no_candidate_meets_the_constraints() -> None:
    tbl = table("  - {name: p, strategy: cheapest, candidates: [pricey, mid, cheap], "
                "require: {min_quality: 0.99}}\n")
    decision = route(tbl)
    assert decision.reason == "best_effort"
    assert names(decision) == ["cheap", "mid", "pricey"], "best effort still ranks by the strategy"


def test_best_effort_ordered_keeps_order() -> None:
    tbl = table("  - {name: p, candidates: [pricey, cheap], require: {max_cost_usd: 0.0000001}}\n")
    decision = route(tbl)
    assert (names(decision), decision.reason) == (["pricey", "cheap"], "best_effort")


# -- the chain --------------------------------------------------------------------------------------


def test_fallback_follows_the_ranked_candidates() -> None:
    tbl = table("  - {name: p, strategy: cheapest, candidates: [mid, cheap], fallback: [unpriced, pricey]}\n")
    assert names(route(tbl)) == ["cheap", "mid", "unpriced", "pricey"]


def test_each_model_appears_once_in_the_chain() -> None:
    tbl = table("  - {name: p, candidates: [cheap, mid], fallback: [mid, pricey, cheap, pricey]}\n")
    decision = route(tbl)
    assert names(decision) == ["cheap", "mid", "pricey"]
    assert all(m is tbl.models[m.name] for m in decision.chain)


def test_a_candidate_left_out_by_constraints_comes_back_only_as_fallback() -> None:
    tbl = table("  - {name: p, candidates: [cheap, mid], require: {min_quality: 0.8}, fallback: [cheap]}\n")
    assert names(route(tbl)) == ["mid", "cheap"]
    tbl = table("  - {name: p, candidates: [cheap, mid], require: {min_quality: 0.8}}\n")
    assert names(route(tbl)) == ["mid"]
