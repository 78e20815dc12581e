"""gateway/routing/decide.py's `learned` strategy: the cheapest candidate whose predicted score reaches the
threshold, else the dearest; then the dearer ones, then the cheaper; constraints still apply.

The routers (tests/unit/learned/routers.py) tell the prompts apart by their words: the cheap model is right
on the easy ones, `mid` on the easy and the middle ones, the strong model on all of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.backends.base import Operation
from gateway.config.loader import load_text
from gateway.config.table import RoutingTable
from gateway.errors import PolicyUnmet
from gateway.learned.model import load
from gateway.routing.decide import decide, explain
from gateway.routing.request import RoutedRequest, parse_request
from gateway.routing.signals import Signals
from tests.unit.learned.routers import ASK_EASY, ASK_HARD, ASK_MIDDLE, chat


def table(router: Path, candidates: str, extra: str = "", require: str = "min_quality: 0.9",
          cheap: str = "") -> RoutingTable:
    return load_text(f"""\
backends:
  b: {{type: openai, url: http://127.0.0.1:9/v1}}
models:
  cheap:  {{backend: b, price: {{input: 0.1, output: 0.4}}{cheap}}}
  mid:    {{backend: b, price: {{input: 1, output: 2}}}}
  strong: {{backend: b, price: {{input: 2.5, output: 10}}}}
  spare:  {{backend: b, price: {{input: 1, output: 1}}}}
policies:
  - {{name: triage, strategy: learned, router: {router}, candidates: [{candidates}], require: {{{require}}}{extra}}}
""")


def request(text: str, **body: Any) -> RoutedRequest:
    payload = {"model": "any", "messages": chat(text), "max_tokens": 100, **body}
    return parse_request(Operation.CHAT, json.dumps(payload).encode(), task_header=None, key_id=None, request_id="r")


def chain(tbl: RoutingTable, text: str) -> tuple[list[str], str]:
    d = decide(tbl, request(text), Signals(exact_tokens=False))
    return [m.name for m in d.chain], d.reason


@pytest.fixture(scope="module")
def two(router_artifact: Path) -> RoutingTable:
    return table(router_artifact, "strong, cheap")


@pytest.fixture(scope="module")
def three(three_artifact: Path) -> RoutingTable:
    return table(three_artifact, "strong, mid, cheap")


def test_two_candidates_easy_to_cheap_hard_to_strong(two: RoutingTable) -> None:
    assert chain(two, ASK_EASY) == (["cheap", "strong"], "learned")
    assert chain(two, ASK_HARD) == (["strong", "cheap"], "learned")


@pytest.mark.parametrize(("text", "expected"), [
    (ASK_EASY, ["cheap", "mid", "strong"]),
    (ASK_MIDDLE, ["mid", "strong", "cheap"]),  # the chosen one, the dearer, then the cheaper
    (ASK_HARD, ["strong", "mid", "cheap"]),  # the cheaper ones dearest first
])
def test_three_candidates_the_cheapest_predicted_good_enough(three: RoutingTable, text: str,
                                                            expected: list[str]) -> None:
    assert chain(three, text) == (expected, "learned")


def test_each_candidate_carries_its_prediction(three: RoutingTable, three_artifact: Path) -> None:
    req = request(ASK_MIDDLE)
    out = explain(three, req, Signals(exact_tokens=False))
    router = load(three_artifact)
    predicted = router.predict(req.body)
    assert req.predicted == predicted
    assert {c.estimate.model.name: c.predicted for c in out.candidates} == dict(zip(router.models, predicted,
                                                                                    strict=True))
    t = out.decision.route.learned.threshold.value  # type: ignore[union-attr]
    cheap, mid, _ = predicted
    assert cheap < t <= mid


def test_the_prediction_is_made_once_per_request(three: RoutingTable) -> None:
    req = request(ASK_HARD)
    req.predicted = (0.99, 0.99, 0.1)  # what the router said of this request earlier: it is not asked again
    assert [m.name for m in decide(three, req, Signals(exact_tokens=False)).chain] == ["cheap", "mid", "strong"]
    fresh = request(ASK_HARD)
    decide(three, fresh, Signals(exact_tokens=False))
    first = fresh.predicted
    assert first is not None and first[0] < 0.1
    decide(three, fresh, Signals(exact_tokens=False))
    assert fresh.predicted is first


@pytest.mark.parametrize(("kwargs", "text", "expected", "failed"), [
    # cheap's window is too small: the easy prompt goes to the next cheapest predicted good enough
    ({"cheap": ", context_window: 2048", "require": "min_quality: 0.9, min_context: 4096"}, ASK_EASY,
     ["mid", "strong"], ("cheap", "context_window")),
    # strong is over the cap: a hard prompt goes to the dearest candidate left
    ({"require": "min_quality: 0.9, max_cost_usd: 0.0005"}, ASK_HARD, ["mid", "cheap"], ("strong", "cost_cap")),
])
def test_a_constraint_keeps_a_candidate_out(three_artifact: Path, kwargs: dict[str, str], text: str,
                                            expected: list[str], failed: tuple[str, str]) -> None:
    tbl = table(three_artifact, "strong, mid, cheap", **kwargs)
    assert chain(tbl, text) == (expected, "learned")
    out = explain(tbl, request(text), Signals(exact_tokens=False))
    assert [(c.estimate.model.name, c.failed) for c in out.candidates if c.failed] == [(failed[0], (failed[1],))]


def test_none_eligible_is_best_effort_in_the_learned_order(three_artifact: Path) -> None:
    over = "min_quality: 0.9, max_cost_usd: 0.0000001"  # every candidate costs more
    tbl = table(three_artifact, "strong, mid, cheap", require=over)
    assert chain(tbl, ASK_EASY) == (["cheap", "mid", "strong"], "best_effort")
    assert chain(tbl, ASK_MIDDLE) == (["mid", "strong", "cheap"], "best_effort")
    rejecting = table(three_artifact, "strong, mid, cheap", require=over, extra=", on_unmet: reject")
    with pytest.raises(PolicyUnmet, match="No candidate of policy 'triage' meets its requirements"):
        decide(rejecting, request(ASK_EASY), Signals(exact_tokens=False))


def test_the_fallback_follows_the_candidates(two: RoutingTable, router_artifact: Path) -> None:
    tbl = table(router_artifact, "strong, cheap", extra=", fallback: [spare, cheap]")
    assert chain(tbl, ASK_HARD) == (["strong", "cheap", "spare"], "learned")
    assert chain(two, ASK_HARD)[0] == ["strong", "cheap"]
