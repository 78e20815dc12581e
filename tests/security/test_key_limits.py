"""Attack: use a model or a policy the key was not given, by naming it, pinning it, or going direct.

The config's `keys` limits a key to models and policies. The limit holds on every way in: a policy's
chain, a request that names a catalog model directly (`direct`), a pinned model, and what
`GET /v1/models` lists. `direct: {enabled: false}` turns requests straight to catalog models off.
"""

from __future__ import annotations

import httpx
import pytest

from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream

TEAM = "team-a-key-0123456789"
OPS = "ops-key-0123456789abc"
KEYS = f"team-a={TEAM},ops={OPS}"


def config(small: FakeUpstream, big: FakeUpstream, extra: str = "") -> str:
    return f"""
backends:
  s: {{type: openai, url: {small.url}}}
  b: {{type: openai, url: {big.url}}}
models:
  small: {{backend: s, price: {{input: 0.1, output: 0.1}}}}
  big: {{backend: b, price: {{input: 5, output: 15}}}}
policies:
  - {{name: premium, match: {{model: premium}}, candidates: [big]}}
  - {{name: support, match: {{task: support}}, strategy: ordered, candidates: [big, small]}}
keys:
  team-a: {{models: [small]}}
pinning: {{allow_keys: ["*"]}}
{extra}
"""


def post(base: str, key: str, model: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{base}/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "x"}]},
                      headers={"Authorization": f"Bearer {key}", **headers})


@pytest.fixture
def setup(servers: Servers) -> tuple[str, FakeUpstream, FakeUpstream]:
    small, big = servers.upstream("small"), servers.upstream("big")
    return servers.gateway(config(small, big), api_keys=KEYS), small, big


def test_a_limited_key_is_served_only_by_its_models(setup: tuple[str, FakeUpstream, FakeUpstream]) -> None:
    base, small, big = setup
    resp = post(base, TEAM, "anything", **{"X-Nanoroute-Task": "support"})  # the policy puts big first
    assert (resp.status_code, resp.headers["x-nanoroute-model"]) == (200, "small")
    assert post(base, OPS, "anything", **{"X-Nanoroute-Task": "support"}).headers["x-nanoroute-model"] == "big"
    assert len(big.seen) == 1 and len(small.seen) == 1


@pytest.mark.parametrize(("model", "headers"), [
    ("premium", {}),  # a policy whose every model is out of bounds
    ("big", {}),  # straight to a catalog model
    ("small", {"X-Nanoroute-Model": "big"}),  # pinned
])
def test_models_out_of_bounds_are_403_on_every_way_in(setup: tuple[str, FakeUpstream, FakeUpstream], model: str,
                                                       headers: dict[str, str]) -> None:
    base, small, big = setup
    resp = post(base, TEAM, model, **headers)
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "model_not_allowed"
    assert big.seen == [] and small.seen == []
    assert post(base, OPS, model, **headers).status_code == 200  # the unlimited key still may


def test_models_lists_only_what_the_key_may_use(setup: tuple[str, FakeUpstream, FakeUpstream]) -> None:
    base, _, _ = setup

    def listed(key: str) -> list[str]:
        return [m["id"] for m in httpx.get(f"{base}/models", headers={"Authorization": f"Bearer {key}"}).json()["data"]]

    assert listed(TEAM) == ["small", "premium"]
    assert listed(OPS) == ["small", "big", "premium"]
    assert httpx.get(f"{base}/models/big", headers={"Authorization": f"Bearer {TEAM}"}).status_code == 404


def test_a_key_limited_to_policies_is_passed_over_by_the_others(servers: Servers) -> None:
    small, big = servers.upstream("small"), servers.upstream("big")
    base = servers.gateway(config(small, big).replace("team-a: {models: [small]}", "team-a: {policies: [support]}"),
                           api_keys=KEYS)
    assert post(base, TEAM, "premium").status_code == 404  # `premium` names no model it may reach
    assert post(base, TEAM, "x", **{"X-Nanoroute-Task": "support"}).headers["x-nanoroute-policy"] == "support"


def test_direct_routing_can_be_turned_off(servers: Servers) -> None:
    small, big = servers.upstream("small"), servers.upstream("big")
    base = servers.gateway(config(small, big, "direct: {enabled: false}"), api_keys=KEYS)
    resp = post(base, OPS, "big")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
    assert "turned off" in resp.json()["error"]["message"]
    assert post(base, OPS, "premium").status_code == 200  # policies still route
    models = httpx.get(f"{base}/models", headers={"Authorization": f"Bearer {OPS}"}).json()["data"]
    assert [m["id"] for m in models] == ["small", "big", "premium"]  # `support` matches by task, any name
    assert big.seen[0].body["model"] == "big"


def test_a_rollout_never_sends_a_limited_keys_prompt_to_a_model_it_may_not_use(servers: Servers) -> None:
    small, big = servers.upstream("small"), servers.upstream("big")
    rollout = """  - {name: canary, match: {model: canary}, candidates: [small], require: {min_quality: 0.5},
     rollout: {model: big, stage: primary, auto: false, shadow_sample: 1, audit_sample: 1}}"""
    base = servers.gateway(config(small, big).replace("\nkeys:", "\n" + rollout + "\nkeys:"), api_keys=KEYS)
    assert post(base, TEAM, "canary").headers["x-nanoroute-model"] == "small"  # not the rolled-out `big`
    assert post(base, OPS, "canary").headers["x-nanoroute-model"] == "big"
    assert len(big.seen) == 1  # the limited key's prompt was not mirrored to it either
