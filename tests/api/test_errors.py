"""Every error reaches the client as OpenAI's envelope with the right status, and never leaks a key."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.api.support import CHAT, MESSAGES, Client, envelope, single_model
from tests.fakes.servers import Servers, free_port

SECRET = "sk-upstream-secret-do-not-leak-7f3a"
KEY_ENV = "NANOROUTE_TEST_PROVIDER_KEY"


@pytest.fixture
def provider_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return f", api_key_env: {KEY_ENV}"


# -- the request is wrong -------------------------------------------------------------------------------


def test_malformed_json_is_400(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up))
    resp = http.post(f"{base}/chat/completions", content=b'{"model": "m", "messages": [',
                     headers={"content-type": "application/json", "x-request-id": "bad-json-1"})
    assert resp.status_code == 400
    err = envelope(resp)
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith("The request body is not valid JSON")
    assert resp.headers["x-request-id"] == "bad-json-1"
    assert up.seen == []


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/chat/completions", {"messages": MESSAGES}, "model"),
        ("/chat/completions", {"model": "m"}, "messages"),
        ("/completions", {"model": "m"}, "prompt"),
        ("/embeddings", {"model": "m"}, "input"),
        ("/chat/completions", {**CHAT, "stream": "yes"}, "stream"),
        ("/embeddings", {"model": "m", "input": "x", "stream": True}, "stream"),
    ],
)
def test_missing_or_mistyped_fields_are_400(
    servers: Servers, http: httpx.Client, path: str, body: dict[str, object], param: str
) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up))
    resp = http.post(f"{base}{path}", json=body)
    assert resp.status_code == 400
    err = envelope(resp)
    assert (err["type"], err["param"]) == ("invalid_request_error", param)
    assert up.seen == []


def test_unknown_model_is_404_model_not_found(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    sdk = client(servers.gateway(single_model(up)))
    with pytest.raises(openai.NotFoundError) as info:
        sdk.chat.completions.create(model="gpt-9", messages=MESSAGES)
    exc = info.value
    assert (exc.status_code, exc.code, exc.param, exc.type) == (404, "model_not_found", "model", "not_found_error")
    assert "'gpt-9'" in exc.message
    assert up.seen == []


def test_a_body_over_the_limit_is_413(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    sdk = client(servers.gateway(single_model(up), max_body_bytes=2048))
    sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 1500}])
    with pytest.raises(openai.APIStatusError) as info:
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 3000}])
    exc = info.value
    assert (exc.status_code, exc.code) == (413, "request_too_large")
    assert "2048 bytes" in exc.message
    assert len(up.seen) == 1


@pytest.mark.parametrize("pieces", [1, 12])
def test_a_chunked_body_over_the_limit_is_413(servers: Servers, http: httpx.Client, pieces: int) -> None:
    # No content-length: the gateway must count what it reads, whether the server hands the body
    # over in one message or in several.
    up = servers.upstream()
    base = servers.gateway(single_model(up), max_body_bytes=2048)
    body = json.dumps({**CHAT, "pad": "x" * 5000}).encode()
    size = -(-len(body) // pieces)
    resp = http.post(f"{base}/chat/completions", content=iter([body[i:i + size] for i in range(0, len(body), size)]))
    assert resp.status_code == 413
    assert envelope(resp)["code"] == "request_too_large"
    assert up.seen == []


def test_a_chunked_body_under_the_limit_is_read_whole(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up), max_body_bytes=2048)
    body = json.dumps({**CHAT, "pad": "x" * 1500}).encode()
    resp = http.post(f"{base}/chat/completions", content=iter([body[:700], body[700:1400], body[1400:]]))
    assert resp.status_code == 200
    assert up.seen[0].body["pad"] == "x" * 1500


# -- the upstream failed ----------------------------------------------------------------------------------


def assert_no_secret(exc: openai.APIStatusError) -> None:
    assert SECRET not in exc.response.text
    assert SECRET not in json.dumps(dict(exc.response.headers))


def test_upstream_down_is_503(servers: Servers, client: Client, provider_key: str) -> None:
    config = f"""\
backends:
  local: {{type: openai, url: http://127.0.0.1:{free_port()}/v1{provider_key}}}
models:
  small: {{backend: local}}
"""
    sdk = client(servers.gateway(config))
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="small", messages=MESSAGES)
    exc = info.value
    assert (exc.status_code, exc.code, exc.type) == (503, "upstream_unavailable", "upstream_error")
    assert "small: the upstream could not be reached" in exc.message
    assert "local" not in exc.message and "127.0.0.1" not in exc.message  # no backend, no address
    assert exc.response.headers["x-nanoroute-fallbacks"] == "1"
    assert_no_secret(exc)


def test_upstream_500_is_502(servers: Servers, client: Client, provider_key: str) -> None:
    up = servers.upstream(behaviour="status:500")
    sdk = client(servers.gateway(single_model(up, model="small", backend_extra=provider_key)))
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="small", messages=MESSAGES)
    exc = info.value
    assert (exc.status_code, exc.code) == (502, "upstream_server_error")
    assert "small: the upstream answered with a server error" in exc.message
    assert up.seen[0].headers["authorization"] == f"Bearer {SECRET}", "the key did go upstream"
    assert_no_secret(exc)


def test_upstream_timeout_is_504(servers: Servers, client: Client, provider_key: str) -> None:
    up = servers.upstream(behaviour="hang")
    extra = provider_key + ", timeouts: {total_s: 0.3}"
    sdk = client(servers.gateway(single_model(up, model="small", backend_extra=extra)))
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="small", messages=MESSAGES)
    exc = info.value
    assert (exc.status_code, exc.code) == (504, "upstream_timeout")
    assert "small: the upstream did not answer in time" in exc.message
    assert_no_secret(exc)


def test_upstream_rejecting_the_gateways_key_is_502(servers: Servers, client: Client, provider_key: str) -> None:
    up = servers.upstream(behaviour="status:401",
                          error_body={"error": {"message": f"Incorrect API key provided: {SECRET}",
                                                "type": "invalid_request_error", "param": None,
                                                "code": "invalid_api_key"}})
    sdk = client(servers.gateway(single_model(up, model="small", backend_extra=provider_key)))
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="small", messages=MESSAGES)
    exc = info.value
    assert (exc.status_code, exc.code) == (502, "upstream_auth_failed")
    assert "small: the upstream refused the gateway's credentials" in exc.message
    assert KEY_ENV not in exc.message  # where the gateway keeps its key is the operator's business
    assert_no_secret(exc)


def test_upstream_rate_limit_is_429_with_retry_after(servers: Servers, client: Client) -> None:
    up = servers.upstream(behaviour="status:429")
    sdk = client(servers.gateway(single_model(up)))
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="m", messages=MESSAGES)
    assert (info.value.code, info.value.type) == ("rate_limit_exceeded", "rate_limit_error")  # OpenAI's own
    assert info.value.response.headers["retry-after"] == "1"


def test_upstream_rejection_is_relayed_with_its_status_and_body(servers: Servers, client: Client) -> None:
    body = {"error": {"message": "Invalid value for 'temperature'", "type": "invalid_request_error",
                      "param": "temperature", "code": "invalid_value"}}
    up = servers.upstream(behaviour="status:422", error_body=body)
    sdk = client(servers.gateway(single_model(up)))
    with pytest.raises(openai.UnprocessableEntityError) as info:
        sdk.chat.completions.create(model="m", messages=MESSAGES, temperature=9)
    assert info.value.response.json() == body
    assert info.value.param == "temperature"


def test_context_length_is_400(servers: Servers, client: Client) -> None:
    up = servers.upstream(behaviour="context")
    sdk = client(servers.gateway(single_model(up)))
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.code == "context_length_exceeded"


def test_a_200_that_is_not_json_is_502(servers: Servers, client: Client) -> None:
    up = servers.upstream(behaviour="garbage")
    sdk = client(servers.gateway(single_model(up)))
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="m", messages=MESSAGES)
    assert (info.value.status_code, info.value.code) == (502, "upstream_malformed_response")


def test_stream_errors_before_the_first_byte_are_envelopes_too(servers: Servers, client: Client) -> None:
    up = servers.upstream(behaviour="status:503")
    sdk = client(servers.gateway(single_model(up)))
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert (info.value.status_code, info.value.code) == (502, "upstream_server_error")
    assert info.value.response.headers["content-type"] == "application/json"
    assert info.value.response.headers["x-nanoroute-policy"] == "direct"


# -- the path is wrong --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completion", "/v2/chat/completions", "/", "/v1/response"])
def test_unknown_path_is_a_404_envelope(servers: Servers, http: httpx.Client, path: str) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up)).removesuffix("/v1")
    resp = http.post(f"{base}{path}", json=CHAT)
    assert resp.status_code == 404
    assert (envelope(resp)["type"], envelope(resp)["code"]) == ("invalid_request_error", "unknown_url")  # OpenAI's
    assert up.seen == []
