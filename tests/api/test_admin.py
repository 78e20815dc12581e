"""`/admin/*` through a running gateway: the active config, route explanations, and who may ask."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.api.support import MESSAGES, Client, envelope
from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream

ADMIN = "adm-secret-0123456789"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}


def config(up: FakeUpstream) -> str:
    return f"""\
backends:
  b: {{type: openai, url: {up.url}}}
models:
  small:       {{backend: b, price: {{input: 0.1, output: 0.2}}, quality: {{support: 0.8}}}}
  big:         {{backend: b, name: big-2024, price: {{input: 10, output: 20}}, quality: {{support: 0.95}},
                 context_window: 32000, latency: {{ttft_ms: 200, tokens_per_s: 50}}}}
  rented:      {{backend: b, hourly: {{usd_per_hour: 3.6, tokens_per_s: 1000}}}}
  gpt-4o-mini: {{backend: b}}
  unpriced:    {{backend: b, name: not-in-any-cost-map}}
policies:
  - {{name: ops, match: {{key: ops}}, candidates: [rented]}}
  - {{name: support, match: {{task: support}}, strategy: cheapest, candidates: [small, big],
     require: {{min_quality: 0.9}}, fallback: [gpt-4o-mini]}}
  - {{name: default, candidates: [small]}}
pinning: {{allow_keys: [ops]}}
"""


def root(base: str) -> str:
    return base.removesuffix("/v1")


def admin_gateway(servers: Servers, up: FakeUpstream, **settings: Any) -> str:
    return root(servers.gateway(config(up), admin_key=ADMIN, exact_tokens=False, **settings))


# -- GET /admin/config ------------------------------------------------------------------------------


def test_config_shows_the_active_version_and_where_prices_come_from(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream()
    before = time.time()
    url = admin_gateway(servers, up)
    resp = http.get(f"{url}/admin/config", headers=AS_ADMIN)
    assert resp.status_code == 200
    data = resp.json()
    table = servers.app_of().state.table
    assert data["version"] == table.version
    assert len(data["version"]) == 12
    assert before - 5 < data["loaded_at"] <= time.time()
    assert data["source"] == str(servers.app_of().settings.config_path)
    assert data["last_error"] is None
    assert data["backends"] == ["b"]
    models = data["models"]
    assert {name: m["price_source"] for name, m in models.items()} == {
        "small": "config", "big": "config", "rented": "hourly", "gpt-4o-mini": "cost_map", "unpriced": None}
    assert models["big"]["price_per_1m"] == {"input": pytest.approx(10), "output": pytest.approx(20)}
    assert models["big"]["upstream_name"] == "big-2024"
    assert models["big"]["context_window"] == 32000
    assert models["rented"]["price_per_1m"] == {"input": pytest.approx(0.1), "output": pytest.approx(1.0)}
    assert models["gpt-4o-mini"]["context_window"] == 128000
    assert models["unpriced"]["price_per_1m"] is None
    assert [p["name"] for p in data["policies"]] == ["ops", "support", "default"]
    assert data["policies"][1] == {"name": "support", "strategy": "cheapest", "candidates": ["small", "big"],
                                   "fallback": ["gpt-4o-mini"]}
    assert any("'unpriced'" in w for w in data["warnings"])
    assert up.seen == []


# -- POST /admin/explain ----------------------------------------------------------------------------


def test_explain_says_where_a_request_would_go_without_calling_upstream(
    servers: Servers, http: httpx.Client
) -> None:
    up = servers.upstream()
    url = admin_gateway(servers, up)
    body = {"model": "anything", "messages": MESSAGES, "max_tokens": 10}
    resp = http.post(f"{url}/admin/explain", json=body, headers={**AS_ADMIN, "X-Nanoroute-Task": "support"})
    assert resp.status_code == 200
    data = resp.json()
    assert {k: data[k] for k in ("policy", "reason", "strategy", "task", "prompt_tokens", "require")} == {
        "policy": "support", "reason": "quality_floor", "strategy": "cheapest", "task": "support",
        "prompt_tokens": 5, "require": {"min_quality": 0.9}}
    small, big = data["candidates"]
    assert small == {"model": "small", "eligible": False, "failed": ["quality_floor"], "quality": 0.8,
                     "expected_cost_usd": pytest.approx(5 * 0.1e-6 + 10 * 0.2e-6), "expected_latency_ms": None,
                     "expected_latency_p95_ms": None, "expected_output_tokens": 10, "context_window": None}
    assert big["eligible"] is True
    assert big["failed"] == []
    assert big["expected_cost_usd"] == pytest.approx(5 * 10e-6 + 10 * 20e-6)
    assert big["expected_latency_ms"] == pytest.approx(200 + 10 / 50 * 1000)
    assert big["context_window"] == 32000
    assert (data["choice"], data["chain"]) == ("big", ["big", "gpt-4o-mini"])
    assert up.seen == []


def test_explain_decides_for_a_named_client_key(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream()
    url = admin_gateway(servers, up, api_keys="ops=sk-ops-0123456789,dev=sk-dev-0123456789")
    body = {"model": "anything", "messages": MESSAGES}
    as_ops = http.post(f"{url}/admin/explain", json=body, headers={**AS_ADMIN, "X-Nanoroute-Key": "ops"}).json()
    as_dev = http.post(f"{url}/admin/explain", json=body, headers={**AS_ADMIN, "X-Nanoroute-Key": "dev"}).json()
    assert (as_ops["policy"], as_ops["chain"]) == ("ops", ["rented"])
    assert (as_dev["policy"], as_dev["reason"], as_dev["chain"]) == ("default", "ordered", ["small"])
    pinned = http.post(f"{url}/admin/explain", json=body,
                       headers={**AS_ADMIN, "X-Nanoroute-Key": "ops", "X-Nanoroute-Model": "big"}).json()
    assert (pinned["policy"], pinned["reason"], pinned["chain"], pinned["candidates"]) == (
        "pinned", "pinned", ["big"], [])
    refused = http.post(f"{url}/admin/explain", json=body,
                        headers={**AS_ADMIN, "X-Nanoroute-Key": "dev", "X-Nanoroute-Model": "big"})
    assert refused.status_code == 403
    assert envelope(refused)["type"] == "permission_error"
    assert up.seen == []


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"{not json", 400, None),
    (b'{"messages": []}', 400, None),
    (b'{"model": "no-policy-matches", "messages": []}', 200, None),  # the catch-all takes it
])
def test_explain_validates_the_body_like_the_api(
    servers: Servers, http: httpx.Client, body: bytes, status: int, code: str | None
) -> None:
    up = servers.upstream()
    url = admin_gateway(servers, up)
    resp = http.post(f"{url}/admin/explain", content=body, headers={**AS_ADMIN, "Content-Type": "application/json"})
    assert resp.status_code == status
    if status != 200:
        assert envelope(resp)["type"] == "invalid_request_error"
    assert up.seen == []


# -- who may ask --------------------------------------------------------------------------------------

ENDPOINTS = [("GET", "/admin/config"), ("POST", "/admin/reload"), ("POST", "/admin/explain")]


def test_admin_is_404_without_an_admin_key_configured(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream()
    url = root(servers.gateway(config(up)))
    for method, path in ENDPOINTS:
        resp = http.request(method, f"{url}{path}", headers={"Authorization": f"Bearer {ADMIN}"},
                            json={"model": "m", "messages": MESSAGES})
        assert resp.status_code == 404, path
        err = envelope(resp)
        assert err["type"] == "not_found_error"
        assert "NANOROUTE_ADMIN_KEY" in err["message"]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Bearer {ADMIN}x", ADMIN, "Bearer sk-ops-0123456789"])
def test_admin_is_401_with_a_wrong_key(servers: Servers, http: httpx.Client, authorization: str | None) -> None:
    up = servers.upstream()
    url = admin_gateway(servers, up, api_keys="ops=sk-ops-0123456789")  # a client key is not an admin key
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in ENDPOINTS:
        resp = http.request(method, f"{url}{path}", headers=headers, json={"model": "m", "messages": MESSAGES})
        assert resp.status_code == 401, path
        assert envelope(resp)["type"] == "authentication_error"
    assert servers.app_of().reloader.last_error is None
    assert up.seen == []


# -- what a normal response says ------------------------------------------------------------------------


def test_responses_say_which_policy_model_and_reason(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    sdk = client(servers.gateway(config(up), admin_key=ADMIN))
    raw = sdk.chat.completions.with_raw_response.create(model="anything", messages=MESSAGES,
                                                        extra_headers={"X-Nanoroute-Task": "support"})
    assert raw.headers["x-nanoroute-policy"] == "support"
    assert raw.headers["x-nanoroute-model"] == "big"
    assert raw.headers["x-nanoroute-reason"] == "quality_floor"
    assert raw.headers["x-nanoroute-fallbacks"] == "0"
    assert [s.body["model"] for s in up.seen] == ["big-2024"]
    streamed = sdk.chat.completions.with_raw_response.create(model="anything", messages=MESSAGES, stream=True)
    assert (streamed.headers["x-nanoroute-policy"], streamed.headers["x-nanoroute-reason"]) == ("default", "ordered")
    assert list(streamed.parse())[-1].choices[0].finish_reason == "stop"
