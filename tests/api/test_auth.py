"""Client API keys at the gateway's door: every API surface refuses a missing or wrong key."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.api.support import CHAT, MESSAGES, Client, envelope, error_of, single_model
from tests.fakes.servers import Servers

KEYS = "sk-alpha-0123456789, sk-beta-0123456789"


@pytest.mark.parametrize("path", ["/chat/completions", "/completions", "/embeddings", "/models", "/models/m"])
def test_no_key_is_401(servers: Servers, http: httpx.Client, path: str) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up), api_keys=KEYS)
    body = {**CHAT, "prompt": "x", "input": "x"}
    resp = http.post(f"{base}{path}", json=body) if "models" not in path else http.get(f"{base}{path}")
    assert resp.status_code == 401
    err = envelope(resp)
    assert (err["type"], err["code"]) == ("authentication_error", "invalid_api_key")
    assert "Missing API key" in err["message"]
    assert up.seen == []


def test_wrong_key_is_401(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    sdk = client(servers.gateway(single_model(up), api_keys=KEYS), api_key="sk-gamma-0123456789")
    with pytest.raises(openai.AuthenticationError) as info:
        sdk.chat.completions.create(model="m", messages=MESSAGES)
    assert error_of(info.value) == {"message": "Incorrect API key provided", "type": "authentication_error",
                                    "param": None, "code": "invalid_api_key"}
    with pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert up.seen == []


def test_models_are_protected_too(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up), api_keys=KEYS)
    with pytest.raises(openai.AuthenticationError) as info:
        client(base, api_key="sk-gamma-0123456789").models.list()
    assert error_of(info.value)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(base, api_key="sk-gamma-0123456789").models.retrieve("m")
    assert [m.id for m in client(base, api_key="sk-beta-0123456789").models.list().data] == ["m"]


def test_each_right_key_works(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up), api_keys=KEYS)
    for key in ("sk-alpha-0123456789", "sk-beta-0123456789"):
        reply = client(base, api_key=key).chat.completions.create(model="m", messages=MESSAGES)
        assert reply.choices[0].message.content == "Hello from the fake upstream."
    chunks = list(client(base, api_key="sk-alpha-0123456789").chat.completions.create(model="m", messages=MESSAGES,
                                                                            stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len(up.seen) == 3
    assert all("authorization" not in s.headers for s in up.seen), "the client's key never goes upstream"


def test_the_key_is_checked_before_the_body(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up), api_keys=KEYS)
    resp = http.post(f"{base}/chat/completions", content=b"not json")
    assert resp.status_code == 401


def test_without_keys_any_key_works(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    sdk = client(servers.gateway(single_model(up)), api_key="whatever")
    assert sdk.chat.completions.create(model="m", messages=MESSAGES).choices


def test_probes_need_no_key(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream()
    root = servers.gateway(single_model(up), api_keys=KEYS).removesuffix("/v1")
    assert http.get(f"{root}/healthz").status_code == 200
    assert http.get(f"{root}/readyz").status_code == 200
