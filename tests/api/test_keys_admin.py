"""`/admin/keys`, `/admin/teams`, `/admin/spend` through a running gateway: keys made, used with the official SDK,
limited, charged, revoked, and kept across a restart."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.api.support import MESSAGES, Client, envelope, error_of, wait_until
from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream

ADMIN = "adm-secret-0123456789"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
OPS = "sk-ops-0123456789abcdef"
COST = (7 * 1000 + 5 * 2000) / 1e6
"""What one answer of the fake upstream costs (7 prompt and 5 completion tokens) at the catalog's price."""


def config(up: FakeUpstream) -> str:
    return f"""\
backends:
  b: {{type: openai, url: {up.url}}}
models:
  small: {{backend: b, price: {{input: 1000, output: 2000}}}}
  big:   {{backend: b, price: {{input: 1000, output: 2000}}}}
teams:
  research: {{limits: {{rpm: 100}}, budget: {{usd: 5, period: month}}, metadata: {{owner: ada}}}}
keys:
  ops: {{team: research, limits: {{rpm: 50}}, models: [small]}}
"""


def start(servers: Servers, data: Path, up: FakeUpstream | None = None, **settings: Any) -> str:
    """A gateway with the admin key, the env key `ops` and its store in `data`; its root URL (no /v1)."""
    up = up or servers.upstream()
    settings = {"admin_key": ADMIN, "api_keys": f"ops={OPS}", **settings}
    return servers.gateway(config(up), data_dir=data, exact_tokens=False, **settings).removesuffix("/v1")


def create(http: httpx.Client, root: str, **body: Any) -> dict[str, Any]:
    resp = http.post(f"{root}/admin/keys", json=body, headers=AS_ADMIN)
    assert resp.status_code == 201, resp.text
    made: dict[str, Any] = resp.json()
    return made


def chat(client: Client, root: str, key: str, model: str = "small") -> str:
    reply = client(f"{root}/v1", api_key=key).chat.completions.create(model=model, messages=MESSAGES)
    return str(reply.choices[0].message.content)


def spend(http: httpx.Client, root: str, **params: str) -> dict[str, Any]:
    resp = http.get(f"{root}/admin/spend", params=params, headers=AS_ADMIN)
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


def settled(http: httpx.Client, root: str, requests: int) -> None:
    """Wait until the ledger holds `requests` requests: settlements are written in the background."""
    wait_until(lambda: spend(http, root, group_by="key")["total"]["requests"] == requests)


def show(http: httpx.Client, root: str, key_id: str) -> dict[str, Any]:
    resp = http.get(f"{root}/admin/keys/{key_id}", headers=AS_ADMIN)
    assert resp.status_code == 200, resp.text
    shown: dict[str, Any] = resp.json()
    return shown


# -- making, listing, changing -----------------------------------------------------------------------------


def test_a_new_key_works_at_once_and_its_secret_is_shown_only_when_made(
    servers: Servers, http: httpx.Client, client: Client, tmp_path: Path
) -> None:
    root = start(servers, tmp_path)
    made = create(http, root, name="alice", team="research", metadata={"owner": "alice"})
    secret = made["key"]
    assert secret.startswith("sk-nr-") and len(secret) > 40
    assert made["id"].startswith("key_")
    assert made["source"] == "admin" and made["read_only"] is False
    assert (made["name"], made["team"], made["models"], made["revoked_at"]) == ("alice", "research", None, None)
    assert made["metadata"] == {"owner": "alice"}
    assert "digest" not in made
    assert chat(client, root, secret) == "Hello from the fake upstream."

    listed = http.get(f"{root}/admin/keys", headers=AS_ADMIN)
    assert listed.status_code == 200
    assert secret not in listed.text
    assert hashlib.sha256(secret.encode()).hexdigest() not in listed.text
    data = listed.json()["data"]
    assert [(k["id"], k["source"]) for k in data] == [("ops", "env"), (made["id"], "admin")]
    assert {k: v for k, v in data[1].items() if k != "key"} == {k: v for k, v in made.items() if k != "key"}
    ops = data[0]
    assert ops["read_only"] is True
    assert (ops["team"], ops["models"], ops["policies"]) == ("research", ["small"], None)
    assert ops["limits"] == {"rpm": 50, "tpm": None, "max_in_flight": None}
    assert OPS not in listed.text


def test_a_key_limited_to_other_models_gets_403_from_the_sdk(
    servers: Servers, http: httpx.Client, client: Client, tmp_path: Path
) -> None:
    root = start(servers, tmp_path)
    made = create(http, root, name="bob", models=["small", "big"])
    assert chat(client, root, made["key"]) == "Hello from the fake upstream."
    resp = http.patch(f"{root}/admin/keys/{made['id']}", json={"models": ["big"]}, headers=AS_ADMIN)
    assert resp.status_code == 200
    assert (resp.json()["models"], resp.json()["name"]) == (["big"], "bob")
    with pytest.raises(openai.PermissionDeniedError) as info:
        chat(client, root, made["key"])
    assert error_of(info.value)["code"] == "model_not_allowed"
    assert chat(client, root, made["key"], model="big") == "Hello from the fake upstream."
    cleared = http.patch(f"{root}/admin/keys/{made['id']}", json={"models": None}, headers=AS_ADMIN)
    assert cleared.json()["models"] is None
    assert chat(client, root, made["key"]) == "Hello from the fake upstream."


def test_bad_bodies_are_400_naming_the_field(servers: Servers, http: httpx.Client, tmp_path: Path) -> None:
    root = start(servers, tmp_path)
    cases: list[tuple[Any, str | None, str]] = [
        ({"name": "x", "team": "nope"}, "team", "No team 'nope'"),
        ({"name": "x", "models": ["gpt-9"]}, "models", "No model 'gpt-9'"),
        ({"team": "research"}, "name", "Missing field 'name'"),
        ({"name": "x", "colour": "red"}, "colour", "Unknown field 'colour'"),
        ({"name": "x", "limits": {"rpm": 0}}, "limits.rpm", "Invalid 'limits.rpm'"),
        ({"name": "x", "expires_at": "2030-01-01T00:00:00"}, "expires_at", "Invalid 'expires_at'"),
        ({"name": "has space"}, "name", "Invalid 'name'"),
        (["name"], None, "The body must be a JSON object"),
    ]
    for body, param, message in cases:
        resp = http.post(f"{root}/admin/keys", json=body, headers=AS_ADMIN)
        assert resp.status_code == 400, body
        err = envelope(resp)
        assert (err["type"], err["param"]) == ("invalid_request_error", param), body
        assert err["message"].startswith(message), err
    garbled = http.post(f"{root}/admin/keys", content=b"{name", headers=AS_ADMIN)
    assert envelope(garbled)["message"] == "The body must be a JSON object"
    create(http, root, name="taken")
    again = http.post(f"{root}/admin/keys", json={"name": "taken"}, headers=AS_ADMIN)
    assert (again.status_code, envelope(again)["param"]) == (400, "name")
    assert [k["name"] for k in http.get(f"{root}/admin/keys", headers=AS_ADMIN).json()["data"]] == ["ops", "taken"]


def test_keys_declared_in_the_environment_are_read_only(servers: Servers, http: httpx.Client, tmp_path: Path) -> None:
    root = start(servers, tmp_path)
    for resp in (http.patch(f"{root}/admin/keys/ops", json={"name": "x"}, headers=AS_ADMIN),
                 http.delete(f"{root}/admin/keys/ops", headers=AS_ADMIN)):
        assert resp.status_code == 403
        err = envelope(resp)
        assert (err["type"], err["code"]) == ("permission_error", "key_read_only")
        assert "NANOROUTE_API_KEYS" in err["message"]
    shown = show(http, root, "ops")
    assert [u["scope"] for u in shown["usage"]] == ["key:ops", "team:research"]
    for path in ("/admin/keys/key_000000000000", "/admin/keys/nobody"):
        assert http.get(f"{root}{path}", headers=AS_ADMIN).status_code == 404
        assert http.patch(f"{root}{path}", json={"name": "x"}, headers=AS_ADMIN).status_code == 404
        assert http.delete(f"{root}{path}", headers=AS_ADMIN).status_code == 404


# -- refusals: limits, budgets, revocation, expiry ---------------------------------------------------------


def test_a_key_over_its_rpm_gets_429_with_the_rate_limit_headers(
    servers: Servers, http: httpx.Client, client: Client, tmp_path: Path
) -> None:
    up = servers.upstream()
    root = start(servers, tmp_path, up)
    made = create(http, root, name="rpm2", limits={"rpm": 2})
    sdk = client(f"{root}/v1", api_key=made["key"])
    first = sdk.chat.completions.with_raw_response.create(model="small", messages=MESSAGES)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    sdk.chat.completions.create(model="small", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="small", messages=MESSAGES)
    err = error_of(info.value)
    assert (err["code"], err["type"]) == ("rate_limit_exceeded", "requests")
    headers = info.value.response.headers
    assert 0 < float(headers["retry-after"]) <= 90  # a sliding window: until the older requests weigh under 1
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-reset-requests" in headers
    assert len([s for s in up.seen if not s.check]) == 2


def test_a_key_past_its_budget_gets_insufficient_quota(
    servers: Servers, http: httpx.Client, client: Client, tmp_path: Path
) -> None:
    up = servers.upstream()
    root = start(servers, tmp_path, up)
    made = create(http, root, name="thrifty", budget={"usd": COST / 2, "period": "day"})
    assert chat(client, root, made["key"]) == "Hello from the fake upstream."
    settled(http, root, 1)
    with pytest.raises(openai.RateLimitError) as info:
        chat(client, root, made["key"])
    err = error_of(info.value)
    assert (err["code"], err["type"]) == ("insufficient_quota", "insufficient_quota")
    assert len(up.seen) == 1
    usage = show(http, root, made["id"])["usage"]
    assert usage[0]["spent_usd"] == pytest.approx(COST)
    assert usage[0]["budget_usd"] == pytest.approx(COST / 2)
    assert usage[0]["remaining_usd"] == 0
    assert usage[0]["period_id"] == "d" + dt.datetime.now(dt.UTC).date().isoformat()


def test_a_revoked_key_is_refused_and_listed_only_on_request(
    servers: Servers, http: httpx.Client, client: Client, tmp_path: Path
) -> None:
    root = start(servers, tmp_path)
    made = create(http, root, name="leaver")
    assert chat(client, root, made["key"]) == "Hello from the fake upstream."
    resp = http.delete(f"{root}/admin/keys/{made['id']}", headers=AS_ADMIN)
    assert resp.status_code == 200
    assert resp.json()["revoked_at"] is not None
    with pytest.raises(openai.AuthenticationError) as info:
        chat(client, root, made["key"])
    assert error_of(info.value)["code"] == "invalid_api_key"
    ids = [k["id"] for k in http.get(f"{root}/admin/keys", headers=AS_ADMIN).json()["data"]]
    assert ids == ["ops"]
    everything = http.get(f"{root}/admin/keys", params={"revoked": "true"}, headers=AS_ADMIN).json()["data"]
    assert [k["id"] for k in everything] == ["ops", made["id"]]
    shown = show(http, root, made["id"])
    assert shown["revoked_at"] is not None and shown["usage"] == []
    assert http.delete(f"{root}/admin/keys/{made['id']}", headers=AS_ADMIN).status_code == 404
    assert http.patch(f"{root}/admin/keys/{made['id']}", json={"name": "back"}, headers=AS_ADMIN).status_code == 404


def test_an_expired_key_is_refused(servers: Servers, http: httpx.Client, client: Client, tmp_path: Path) -> None:
    root = start(servers, tmp_path)
    made = create(http, root, name="past", expires_at="2001-01-01T00:00:00Z")
    with pytest.raises(openai.AuthenticationError) as info:
        chat(client, root, made["key"])
    assert "expired" in error_of(info.value)["message"]
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    resp = http.patch(f"{root}/admin/keys/{made['id']}", json={"expires_at": later}, headers=AS_ADMIN)
    assert resp.status_code == 200
    assert chat(client, root, made["key"]) == "Hello from the fake upstream."


# -- usage, teams and spend --------------------------------------------------------------------------------


def test_a_keys_usage_counts_its_requests_tokens_and_spend(
    servers: Servers, http: httpx.Client, client: Client, tmp_path: Path
) -> None:
    root = start(servers, tmp_path)
    made = create(http, root, name="counted", team="research", limits={"rpm": 10, "tpm": 10_000},
                  budget={"usd": 1})
    chat(client, root, made["key"])
    settled(http, root, 1)
    shown = show(http, root, made["id"])
    assert "key" not in shown
    own, team = shown["usage"]
    assert own["scope"] == f"key:{made['id']}"
    assert own["limits"] == {"rpm": 10, "tpm": 10_000, "max_in_flight": None}
    assert own["requests_per_minute"] == pytest.approx(1, abs=0.05)
    assert own["tokens_per_minute"] == pytest.approx(12, abs=0.5)  # corrected to the upstream's usage
    assert own["in_flight"] == 0
    assert (own["period"], own["period_id"]) == ("month", "m" + dt.datetime.now(dt.UTC).strftime("%Y-%m"))
    assert own["spent_usd"] == pytest.approx(COST)
    assert own["reserved_usd"] == 0
    assert own["budget_usd"] == 1
    assert own["remaining_usd"] == pytest.approx(1 - COST)
    assert team["scope"] == "team:research"
    assert team["limits"]["rpm"] == 100
    assert team["spent_usd"] == pytest.approx(COST)
    assert team["budget_usd"] == 5

    teams = http.get(f"{root}/admin/teams", headers=AS_ADMIN)
    assert teams.status_code == 200
    [research] = teams.json()["data"]
    assert research["name"] == "research"
    assert research["limits"] == {"rpm": 100, "tpm": None, "max_in_flight": None}
    assert research["budget"] == {"usd": 5, "period": "month"}
    assert research["metadata"] == {"owner": "ada"}
    assert sorted(research["keys"]) == sorted(["ops", made["id"]])
    assert research["usage"]["spent_usd"] == pytest.approx(COST)
    assert research["usage"]["requests_per_minute"] == pytest.approx(1, abs=0.05)


def test_spend_sums_the_requests_made_by_key_and_by_model(
    servers: Servers, http: httpx.Client, client: Client, tmp_path: Path
) -> None:
    root = start(servers, tmp_path)
    a = create(http, root, name="team-a", team="research")
    b = create(http, root, name="solo")
    for key, model in ((a["key"], "small"), (a["key"], "small"), (a["key"], "big"), (b["key"], "small"),
                       (OPS, "small")):
        chat(client, root, key, model)
    settled(http, root, 5)
    today = dt.datetime.now(dt.UTC).date().isoformat()

    by_key = spend(http, root, group_by="key")
    assert by_key["group_by"] == ["key"]
    assert by_key["until"] == today
    assert by_key["since"] == (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=29)).isoformat()
    rows = by_key["data"]
    assert [(r["key"], r["name"], r["requests"]) for r in rows] == [
        (a["id"], "team-a", 3), *sorted([(b["id"], "solo", 1), ("ops", "ops", 1)])]
    assert rows[0]["cost_usd"] == pytest.approx(3 * COST)
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (21, 15)
    assert by_key["total"] == {"requests": 5, "prompt_tokens": 35, "completion_tokens": 25,
                               "cost_usd": pytest.approx(5 * COST)}

    by_model = spend(http, root, group_by="model", since=today, until=today)["data"]
    assert [(r["model"], r["requests"]) for r in by_model] == [("small", 4), ("big", 1)]
    assert by_model[0]["cost_usd"] == pytest.approx(4 * COST)
    assert "name" not in by_model[0]

    full = spend(http, root)["data"]
    assert {(r["key"], r["team"], r["model"], r["day"], r["requests"]) for r in full} == {
        (a["id"], "research", "small", today, 2), (a["id"], "research", "big", today, 1),
        (b["id"], "-", "small", today, 1), ("ops", "research", "small", today, 1)}
    assert [r["cost_usd"] for r in full] == sorted((r["cost_usd"] for r in full), reverse=True)
    assert spend(http, root, since="2001-01-01", until="2001-12-31")["data"] == []


@pytest.mark.parametrize(("params", "param"), [
    ({"group_by": "key,colour"}, "group_by"), ({"group_by": "key,key"}, "group_by"),
    ({"since": "yesterday"}, "since"), ({"until": "2026-02-30"}, "until"), ({"since": "20260101"}, "since"),
    ({"since": "2026-02-02", "until": "2026-02-01"}, "since"),
])
def test_spend_with_bad_parameters_is_400_naming_them(
    servers: Servers, http: httpx.Client, tmp_path: Path, params: dict[str, str], param: str
) -> None:
    root = start(servers, tmp_path)
    resp = http.get(f"{root}/admin/spend", params=params, headers=AS_ADMIN)
    assert resp.status_code == 400
    assert envelope(resp)["param"] == param


# -- restart and who may ask -------------------------------------------------------------------------------


def test_keys_and_spend_survive_a_restart(
    servers: Servers, http: httpx.Client, client: Client, tmp_path: Path
) -> None:
    up = servers.upstream()
    first = start(servers, tmp_path / "data", up)
    made = create(http, first, name="durable", limits={"rpm": 100})
    chat(client, first, made["key"])
    settled(http, first, 1)
    second = start(servers, tmp_path / "data", up)
    assert chat(client, second, made["key"]) == "Hello from the fake upstream."
    assert [k["id"] for k in http.get(f"{second}/admin/keys", headers=AS_ADMIN).json()["data"]] == ["ops", made["id"]]
    settled(http, second, 2)
    assert spend(http, second, group_by="key")["data"] == [{
        "key": made["id"], "name": "durable", "requests": 2, "prompt_tokens": 14, "completion_tokens": 10,
        "cost_usd": pytest.approx(2 * COST)}]


ROUTES = [("POST", "/admin/keys"), ("GET", "/admin/keys"), ("GET", "/admin/keys/ops"),
          ("PATCH", "/admin/keys/ops"), ("DELETE", "/admin/keys/ops"), ("GET", "/admin/teams"),
          ("GET", "/admin/spend")]


def test_the_admin_key_is_needed(servers: Servers, http: httpx.Client, tmp_path: Path) -> None:
    root = start(servers, tmp_path)
    for method, path in ROUTES:
        for headers in ({}, {"Authorization": f"Bearer {OPS}"}, {"Authorization": "Bearer adm-wrong-0123456789"}):
            resp = http.request(method, f"{root}{path}", json={"name": "sneaky"}, headers=headers)
            assert resp.status_code == 401, (method, path)
            assert envelope(resp)["type"] == "authentication_error"
    assert [k["id"] for k in http.get(f"{root}/admin/keys", headers=AS_ADMIN).json()["data"]] == ["ops"]


def test_without_an_admin_key_the_endpoints_are_off(servers: Servers, http: httpx.Client, tmp_path: Path) -> None:
    root = start(servers, tmp_path, admin_key=None)
    for method, path in ROUTES:
        resp = http.request(method, f"{root}{path}", json={"name": "sneaky"}, headers=AS_ADMIN)
        assert resp.status_code == 404, (method, path)
        assert "NANOROUTE_ADMIN_KEY" in envelope(resp)["message"]
