"""Attack: learn the deployment from error messages (backend names, addresses, where keys are kept).

Answers to clients used to carry the gateway's own detail: `small (secret-backend): cannot connect to
upstream: ... ssl:<ssl.SSLContext object at 0x...>`, `(is OPENAI_API_KEY set?)`, `litellm.BadRequestError:
AnthropicException - ...`. Clients are now told what happened in words of their own, and the access
log keeps the whole detail under the request id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from tests.api.support import CHAT, wait_until
from tests.fakes.servers import Servers

ENV = "NANOROUTE_TEST_SECRET_PROVIDER_KEY"
BACKEND = "secret-backend-name"
LEAKS = (BACKEND, ENV, "0x", "SSLContext", "aiohttp", "litellm", "Exception", "127.0.0.1", "ssl:")


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(ENV, "sk-provider-0123456789abcdef")
    yield


def one_backend(spec: str) -> str:
    return f"backends:\n  {BACKEND}: {spec}\nmodels:\n  m: {{backend: {BACKEND}}}\n"


def assert_discreet(text: str, port: int | None = None) -> None:
    leaked = [word for word in LEAKS if word in text]
    assert not leaked, f"{leaked} in {text!r}"
    assert port is None or str(port) not in text


def access_lines(caplog: pytest.LogCaptureFixture, n: int) -> list[dict[str, object]]:
    wait_until(lambda: sum(r.name == "nanoroute.access" for r in caplog.records) >= n)
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "nanoroute.access"]


def test_a_tls_failure_says_the_upstream_could_not_be_reached_and_no_more(
        servers: Servers, caplog: pytest.LogCaptureFixture) -> None:
    plain = servers.upstream()  # speaks plain HTTP: a TLS handshake with it fails
    base = servers.gateway(one_backend(f"{{type: openai, url: 'https://127.0.0.1:{plain.port}/v1', "
                                       f"api_key_env: {ENV}}}"), access_log=True)
    with caplog.at_level(logging.INFO, logger="nanoroute.access"):
        for body in (CHAT, {**CHAT, "stream": True}):
            resp = httpx.post(f"{base}/chat/completions", json=body)
            assert resp.status_code == 503
            assert resp.json()["error"]["message"] == ("All 1 attempt(s) for policy 'direct' failed: m: the upstream "
                                                       "could not be reached")
            assert_discreet(resp.text, plain.port)
        [line, _] = access_lines(caplog, 2)
    assert BACKEND in str(line["error"]) and line["request_id"]  # the operator's log has the detail


def test_rejected_credentials_do_not_name_the_variable_that_holds_them(servers: Servers) -> None:
    up = servers.upstream(behaviour="status:401")
    base = servers.gateway(one_backend(f"{{type: openai, url: {up.url}, api_key_env: {ENV}}}"))
    resp = httpx.post(f"{base}/chat/completions", json=CHAT)
    assert (resp.status_code, resp.json()["error"]["code"]) == (502, "upstream_auth_failed")
    assert_discreet(resp.text, up.port)


def test_a_provider_failure_through_litellm_names_no_library(servers: Servers) -> None:
    fake = servers.anthropic(behaviour="status:500")
    base = servers.gateway(one_backend(f"{{type: litellm, provider: anthropic, api_key_env: {ENV}, url: {fake.url}, "
                                       "timeouts: {ttft_s: 5, total_s: 10}}"))
    resp = httpx.post(f"{base}/chat/completions", json={**CHAT, "max_tokens": 10}, timeout=30)
    assert resp.status_code == 502
    assert_discreet(resp.text, fake.port)
    fake.behaviour = "status:400"
    resp = httpx.post(f"{base}/chat/completions", json={**CHAT, "max_tokens": 10}, timeout=30)
    assert resp.status_code == 400
    assert_discreet(resp.text, fake.port)


def test_a_stream_cut_midway_ends_with_a_discreet_error_event(servers: Servers) -> None:
    up = servers.upstream(behaviour="cut")
    base = servers.gateway(one_backend(f"{{type: openai, url: {up.url}}}"))
    with httpx.stream("POST", f"{base}/chat/completions", json={**CHAT, "stream": True}) as resp:
        text = resp.read().decode()
    assert '"message":"the upstream\'s answer was cut off before its end"' in text
    assert_discreet(text, up.port)
