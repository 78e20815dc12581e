"""gateway/routing/decide.py, by property: random catalogs, policies, requests and measurements.

Whether a candidate meets a policy's constraints is worked out here from first principles (the
config's prices, qualities, windows and latency priors; the request's characters and max_tokens),
independently of decide.py, and checked against the decision:

(a) when some candidate meets every constraint, the chain starts with one that does (and, for the
    cost and latency strategies, the best one by that figure); when none does, `reject` refuses and
    `best_effort` says so;
(b) equal inputs and equal measurements give equal decisions (weighted draws without a sticky
    client are random by design and left out);
(c) a chain never names a model twice.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.backends.base import Operation
from gateway.config import loader, schema
from gateway.config.table import RoutingTable
from gateway.errors import PolicyUnmet
from gateway.record import RequestRecord
from gateway.routing.decide import Candidate, Decision, decide, explain
from gateway.routing.estimate import DEFAULT_OUTPUT_TOKENS
from gateway.routing.request import RoutedRequest, parse_request
from gateway.routing.signals import MIN_SAMPLES, Signals

TASKS = [None, "support", "code"]
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Strategies are built once, here: building them inside each draw costs more than the routing under test.
money = st.floats(min_value=0, max_value=60)
costs: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"input": money, "output": money}).map(lambda p: {"price": p}),
    st.fixed_dictionaries(
        {"usd_per_hour": st.floats(min_value=0, max_value=20),
         "tokens_per_s": st.floats(min_value=0.5, max_value=2000)},
        optional={"input_tokens_per_s": st.floats(min_value=0.5, max_value=20000)},
    ).map(lambda h: {"hourly": h}),
)
model_specs = st.tuples(
    st.fixed_dictionaries(
        # vLLM: no cost-map lookups, so every figure a model has comes from here
        {"backend": st.just("local"),
         "quality": st.dictionaries(st.sampled_from(["support", "code", "default"]),
                                    st.floats(min_value=0, max_value=1), max_size=3)},
        optional={"context_window": st.integers(min_value=16, max_value=200_000),
                  "latency": st.fixed_dictionaries({"ttft_ms": st.floats(min_value=1, max_value=5000),
                                                    "tokens_per_s": st.floats(min_value=1, max_value=500)})},
    ),
    costs,
).map(lambda t: {**t[0], **t[1]})
requires = st.fixed_dictionaries({}, optional={
    "min_quality": st.floats(min_value=0, max_value=1),
    "p95_latency_ms": st.floats(min_value=1, max_value=60_000),
    "max_cost_usd": st.floats(min_value=0, max_value=0.05),
    "min_context": st.integers(min_value=1, max_value=200_000),
})
NAMES = [f"m{i}" for i in range(5)]
CANDIDATES = {n: st.lists(st.sampled_from(NAMES[:n]), min_size=1, unique=True) for n in range(1, 6)}
FALLBACKS = {n: st.lists(st.sampled_from(NAMES[:n]), max_size=3, unique=True) for n in range(1, 6)}
weights = st.floats(min_value=0.01, max_value=100)


@st.composite
def configs(draw: st.DrawFn, strategies: tuple[str, ...]) -> dict[str, Any]:
    n = draw(st.integers(min_value=1, max_value=5))
    models = {name: draw(model_specs) for name in NAMES[:n]}
    strategy = draw(st.sampled_from(strategies))
    policy: dict[str, Any] = {
        "name": "p",
        "strategy": strategy,
        "candidates": draw(CANDIDATES[n]),
        "fallback": draw(FALLBACKS[n]),
        "on_unmet": draw(st.sampled_from(["best_effort", "reject"])),
        "require": draw(requires),
    }
    if strategy == "weighted":
        policy["weights"] = {c: draw(weights) for c in policy["candidates"]}
        policy["sticky"] = draw(st.sampled_from(["none", "user", "key"]))
    return {"backends": {"local": {"type": "vllm", "urls": ["http://127.0.0.1:9/v1"]}}, "models": models,
            "policies": [policy]}


CONFIGS = configs(("cheapest", "fastest", "cascade", "ordered", "weighted"))


@dataclass(frozen=True)
class Req:
    task: str | None
    messages: tuple[str, ...]
    max_tokens: int | None
    user: str | None
    key: str | None

    def parse(self) -> RoutedRequest:
        body: dict[str, Any] = {"model": "any", "messages": [{"role": "user", "content": c} for c in self.messages]}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.user is not None:
            body["user"] = self.user
        return parse_request(Operation.CHAT, json.dumps(body).encode(), task_header=self.task, key_id=self.key,
                             request_id="r")

    def prompt_tokens(self) -> int:
        """Characters / 4, rounded up, plus 4 per message."""
        return (len("\n".join(self.messages)) + 3) // 4 + 4 * len(self.messages)


requests = st.builds(
    Req,
    task=st.sampled_from(TASKS),
    messages=st.lists(st.integers(min_value=0, max_value=40_000).map(lambda n: "x" * n), max_size=2).map(tuple),
    max_tokens=st.none() | st.integers(min_value=1, max_value=8000),
    user=st.sampled_from([None, "u1", "u2"]),
    key=st.sampled_from([None, "k1", "k2"]),
)


@dataclass(frozen=True)
class Answer:
    """`times` equal answers from one model (so that models often reach MIN_SAMPLES measurements)."""

    model: int
    times: int
    task: str | None
    stream: bool
    ttft_s: float
    per_token_s: float
    tokens: int


answers = st.lists(st.builds(
    Answer,
    model=st.integers(min_value=0, max_value=4),
    times=st.integers(min_value=1, max_value=2 * MIN_SAMPLES),
    task=st.sampled_from(TASKS),
    stream=st.booleans(),
    ttft_s=st.floats(min_value=0.001, max_value=5),
    per_token_s=st.floats(min_value=0, max_value=0.2),
    tokens=st.integers(min_value=1, max_value=2000),
), max_size=6)


def load(cfg: dict[str, Any]) -> RoutingTable:
    return loader.resolve(schema.Config.model_validate(cfg), "<generated>", "v")


def measured(tbl: RoutingTable, history: list[Answer]) -> Signals:
    sig = Signals(exact_tokens=False)
    models = sorted(tbl.models)
    for a in history:
        model = tbl.models[models[a.model % len(models)]]
        rec = RequestRecord("r", 0.0, policy="p", task=a.task, model=model, status=200, stream=a.stream,
                            completion_tokens=a.tokens, first_byte_s=a.ttft_s if a.stream else None,
                            duration_s=a.ttft_s + a.tokens * a.per_token_s)
        for _ in range(a.times):
            sig.observe(rec, tbl.tasks)
    return sig


def samples(tbl: RoutingTable, history: list[Answer], model: str) -> int:
    models = sorted(tbl.models)
    return sum(a.times for a in history if models[a.model % len(models)] == model)


# -- the constraints, from first principles ------------------------------------------------------


def per_token(spec: dict[str, Any]) -> tuple[float, float] | None:
    """USD per input and output token, as docs/configuration.md defines them."""
    if "price" in spec:
        return spec["price"]["input"] / 1e6, spec["price"]["output"] / 1e6
    if "hourly" in spec:
        h = spec["hourly"]
        per_s = h["usd_per_hour"] / 3600
        return per_s / h.get("input_tokens_per_s", 10 * h["tokens_per_s"]), per_s / h["tokens_per_s"]
    return None


def failures(c: Candidate, cfg: dict[str, Any], req: Req, tbl: RoutingTable, history: list[Answer]) -> set[str]:
    """The constraints this candidate fails, worked out from the config and the request."""
    name = c.estimate.model.name
    spec = cfg["models"][name]
    require = cfg["policies"][0]["require"]
    e = c.estimate
    # The figures the estimate used, checked against their definitions where they are known here.
    if e.prompt_tokens is not None:
        assert e.prompt_tokens == req.prompt_tokens()
    if req.max_tokens is not None:
        assert e.output_tokens == req.max_tokens
    elif not history:
        assert e.output_tokens == DEFAULT_OUTPUT_TOKENS
    price = per_token(spec)
    if price is None or e.prompt_tokens is None:
        assert e.cost_usd is None
    else:
        assert e.cost_usd is not None
        assert math.isclose(e.cost_usd, e.prompt_tokens * price[0] + e.output_tokens * price[1], rel_tol=1e-9)
    if samples(tbl, history, name) < MIN_SAMPLES:
        prior = spec.get("latency")
        expected = None if prior is None else prior["ttft_ms"] + 1000 * e.output_tokens / prior["tokens_per_s"]
        assert e.latency_p95_ms == pytest.approx(expected)

    failed = set()
    quality = spec["quality"].get(req.task) if req.task in spec["quality"] else spec["quality"].get("default")
    if "min_quality" in require and (quality is None or quality < require["min_quality"]):
        failed.add("quality_floor")
    if "p95_latency_ms" in require and e.latency_p95_ms is not None and e.latency_p95_ms > require["p95_latency_ms"]:
        failed.add("latency_slo")
    if "max_cost_usd" in require and e.cost_usd is not None and e.cost_usd > require["max_cost_usd"]:
        failed.add("cost_cap")
    window = spec.get("context_window")
    if window is not None:
        needed = require.get("min_context", 0)
        if e.prompt_tokens is not None:  # counted: the prompt and the expected answer must fit
            needed = max(needed, e.prompt_tokens + e.output_tokens)
        if needed > window:
            failed.add("context_window")
    assert failed == set(c.failed)
    return failed


def by(figure: float | None) -> float:
    return math.inf if figure is None else figure


# -- the properties -----------------------------------------------------------------------------------


@PROPERTY
@given(cfg=CONFIGS, req=requests, history=answers)
def test_the_chain_starts_with_a_model_that_meets_every_constraint_when_one_does(
    cfg: dict[str, Any], req: Req, history: list[Answer]
) -> None:
    tbl = load(cfg)
    sig = measured(tbl, history)
    policy = cfg["policies"][0]
    try:
        out = explain(tbl, req.parse(), sig)
    except PolicyUnmet:
        assert policy["on_unmet"] == "reject"
        _assert_none_eligible(cfg, req, history, sig)
        return
    d = out.decision
    event(f"reason: {d.reason}")  # shown by --hypothesis-show-statistics: every reason code is reached
    event(f"measured models: {sum(samples(tbl, history, m) >= MIN_SAMPLES for m in tbl.models)}")
    assert [c.estimate.model.name for c in out.candidates] == policy["candidates"]
    eligible = [c for c in out.candidates if not failures(c, cfg, req, tbl, history)]
    chain = [m.name for m in d.chain]
    if not eligible:
        assert policy["on_unmet"] == "best_effort"
        assert d.reason == "best_effort"
        assert sorted(chain[: len(policy["candidates"])]) == sorted(policy["candidates"])
        return
    assert d.reason != "best_effort"
    first = next(c for c in out.candidates if c.estimate.model is d.chain[0])
    assert first in eligible
    assert sorted(chain[: len(eligible)]) == sorted(c.estimate.model.name for c in eligible)
    if policy["strategy"] in ("cheapest", "cascade"):
        assert by(first.estimate.cost_usd) == min(by(c.estimate.cost_usd) for c in eligible)
    elif policy["strategy"] == "fastest":
        assert by(first.estimate.latency_ms) == min(by(c.estimate.latency_ms) for c in eligible)
    elif policy["strategy"] == "ordered":
        assert first is eligible[0]
    assert d.cascade_depth == (len(eligible) - 1 if policy["strategy"] == "cascade" else 0)


def _assert_none_eligible(cfg: dict[str, Any], req: Req, history: list[Answer], sig: Signals) -> None:
    """A refused request: check from first principles that no candidate met the constraints."""
    cfg = {**cfg, "policies": [{**cfg["policies"][0], "on_unmet": "best_effort"}]}
    lenient = load(cfg)
    out = explain(lenient, req.parse(), sig)
    assert out.decision.reason == "best_effort"
    assert all(failures(c, cfg, req, lenient, history) for c in out.candidates)


@PROPERTY
@given(cfg=CONFIGS, req=requests, history=answers)
def test_equal_inputs_and_measurements_give_equal_decisions(
    cfg: dict[str, Any], req: Req, history: list[Answer]
) -> None:
    policy = cfg["policies"][0]
    sticky = {"user": req.user, "key": req.key}.get(policy.get("sticky", "none"))
    if policy["strategy"] == "weighted" and sticky is None:
        return  # a random draw, by design

    def decided(tbl: RoutingTable, sig: Signals) -> tuple[Any, ...]:
        try:
            d: Decision = decide(tbl, req.parse(), sig)
        except PolicyUnmet as exc:
            return ("unmet", exc.message)
        return (d.policy, [m.name for m in d.chain], d.reason, d.cascade_depth)

    tbl = load(cfg)
    sig = measured(tbl, history)
    first = decided(tbl, sig)
    assert decided(tbl, sig) == first  # deciding learns nothing
    other = load(cfg)
    assert decided(other, measured(other, history)) == first


@PROPERTY
@given(cfg=CONFIGS, req=requests, history=answers)
def test_a_chain_never_names_a_model_twice(cfg: dict[str, Any], req: Req, history: list[Answer]) -> None:
    tbl = load(cfg)
    try:
        d = decide(tbl, req.parse(), measured(tbl, history))
    except PolicyUnmet:
        return
    chain = [m.name for m in d.chain]
    assert len(chain) == len(set(chain))
    policy = cfg["policies"][0]
    assert set(chain) <= set(policy["candidates"]) | set(policy["fallback"])
    assert set(policy["fallback"]) <= set(chain)
