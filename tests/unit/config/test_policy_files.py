"""policies/*.yaml: every example loads, is documented, and routes the way docs/policies.md says."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.backends.base import Operation
from gateway.config import schema
from gateway.config.loader import load_file
from gateway.config.table import RoutingTable
from gateway.errors import PolicyUnmet
from gateway.record import RequestRecord
from gateway.routing.decide import Decision, decide
from gateway.routing.request import parse_request
from gateway.routing.signals import MIN_SAMPLES, Signals
from gateway.settings import DEFAULT_CONFIG

REPO = Path(__file__).resolve().parents[3]
POLICIES = REPO / "policies"
FILES = sorted(POLICIES.glob("*.yaml"))
DOCS = (REPO / "docs" / "policies.md").read_text()


@pytest.fixture(autouse=True)
def api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples read their keys from the environment; set them so that loading warns of nothing else."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")


def test_the_examples_include_the_default() -> None:
    assert POLICIES / "default.yaml" in FILES
    assert len(FILES) >= 6


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_example_loads_cleanly(path: Path) -> None:
    tbl = load_file(path)
    assert len(tbl.policies) >= 1
    assert tbl.warnings == ()  # every model has a price, every key variable is set
    assert tbl.policies[-1].match == schema.Match()  # ends with a catch-all
    assert tbl.source == str(path)


def test_the_embedded_default_is_policies_default_yaml() -> None:
    assert DEFAULT_CONFIG.read_bytes() == (POLICIES / "default.yaml").read_bytes()


def test_every_example_the_docs_name_exists() -> None:
    named = set(re.findall(r"policies/([\w.-]+\.yaml)", DOCS))
    assert named
    assert named <= {p.name for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_example_is_documented(path: Path) -> None:
    assert f"`policies/{path.name}`" in DOCS


# -- what each example does ----------------------------------------------------------------------


def table(name: str) -> RoutingTable:
    return load_file(POLICIES / name)


def route(tbl: RoutingTable, sig: Signals | None = None, *, task: str | None = None, content: str = "hi",
          **body: Any) -> Decision:
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **body}
    req = parse_request(Operation.CHAT, json.dumps(payload).encode(), task_header=task, key_id=None, request_id="r")
    return decide(tbl, req, sig or Signals(exact_tokens=False))


def names(decision: Decision) -> list[str]:
    return [m.name for m in decision.chain]


def test_default_tries_the_local_model_then_gpt_4o_mini() -> None:
    d = route(table("default.yaml"))
    assert (d.policy, names(d), d.reason) == ("default", ["smollm2-135m-instruct", "gpt-4o-mini"], "ordered")


def test_latency_slo_serves_streams_locally_until_measurements_say_it_is_slow() -> None:
    tbl = table("latency-slo.yaml")
    sig = Signals(exact_tokens=False)
    d = route(tbl, sig, stream=True, max_tokens=20)
    assert (d.policy, names(d), d.reason) == ("interactive", ["smollm2-135m-instruct", "gpt-4o-mini"], "ordered")
    local = tbl.models["smollm2-135m-instruct"]
    for i in range(MIN_SAMPLES):  # the local queue grows: 7 s to the first token
        sig.observe(RequestRecord(f"r{i}", 0.0, policy="interactive", model=local, status=200, stream=True,
                                  completion_tokens=20, first_byte_s=7.0, duration_s=7.5), tbl.tasks)
    d = route(tbl, sig, stream=True, max_tokens=20)
    assert (names(d), d.reason) == (["gpt-4o-mini"], "latency_slo")
    d = route(tbl, sig, max_tokens=20)  # batch: cheapest, no SLO
    assert (d.policy, names(d), d.reason) == ("batch", ["smollm2-135m-instruct", "gpt-4o-mini"], "cheapest")


def test_support_lora_prefers_the_adapter_while_it_qualifies() -> None:
    tbl = table("support-lora.yaml")
    # A prompt-heavy support request (1879 prompt tokens): the adapter's rent is the cheapest.
    d = route(tbl, task="support", content="word " * 1500, max_tokens=100)
    assert (d.policy, names(d), d.reason) == ("support", ["support-lora", "gpt-4o-mini", "claude-haiku"], "cheapest")
    # Too long for its 2048-token window: gpt-4o-mini takes it, and the reason says why.
    d = route(tbl, task="support", content="x" * 10000, max_tokens=100)
    assert (names(d), d.reason) == (["gpt-4o-mini", "claude-haiku"], "context_window")
    d = route(tbl, task="billing")
    assert (d.policy, names(d)) == ("default", ["gpt-4o-mini", "claude-haiku"])


def test_cost_capped_refuses_what_no_model_serves_under_the_cap() -> None:
    tbl = table("cost-capped.yaml")
    d = route(tbl, task="classify", max_tokens=10)
    assert d.policy == "classify-on-a-budget"
    assert d.chain[0].name != "gpt-4o"
    with pytest.raises(PolicyUnmet) as info:
        route(tbl, task="classify", content="x" * 400_000)  # 100k prompt tokens: over one cent everywhere
    assert "gpt-4o-mini: cost_cap" in info.value.message


def test_ab_test_keeps_each_user_on_one_side() -> None:
    tbl = table("ab-test.yaml")
    firsts = []
    for i in range(1000):
        chains = {tuple(names(route(tbl, task="support", user=f"user-{i}"))) for _ in range(3)}
        assert len(chains) == 1
        firsts.append(chains.pop()[0])
    assert 0.05 < firsts.count("support-lora") / 1000 < 0.15
    assert route(tbl, task="support", user="u").reason == "weighted"


def test_cascade_json_escalates_from_the_cheapest_for_json_extraction() -> None:
    tbl = table("cascade-json.yaml")
    d = route(tbl, task="extract", response_format={"type": "json_object"})
    assert (d.policy, names(d), d.reason) == ("extract", ["extract-lora", "gpt-4o-mini", "gpt-4o"], "cascade")
    assert d.cascade_depth == 2
    assert d.route is not None and d.route.cascade_regex is not None
    d = route(tbl, task="extract")
    assert (d.policy, names(d)) == ("default", ["gpt-4o-mini"])
