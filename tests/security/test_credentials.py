"""Attack: move a request, or the gateway's provider key, to a host the client chooses.

A client may put anything in a request body. Through a `litellm` backend, fields such as `api_base` or
`extra_headers` used to become litellm's own arguments, so the provider's key went to the client's host.
An upstream may answer with a redirect to another host. In every case the "attacker" server below, on
loopback, must never receive a request, whatever the body says.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiohttp import web

from tests.fakes.servers import Servers

SECRET = "sk-provider-secret-0123456789"


@dataclass
class Attacker:
    """A server that records every request it gets, on any path and method."""

    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        async def record(request: web.Request) -> web.Response:
            self.seen.append((request.path, dict(request.headers)))
            return web.json_response({"error": {"message": "stolen", "type": "x", "param": None, "code": None}})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        return app


@pytest.fixture
def attacker(servers: Servers) -> Attacker:
    a = Attacker()
    a.port = servers.serve(a.app())
    return a


@pytest.fixture(autouse=True)
def _provider_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("NANOROUTE_TEST_PROVIDER_KEY", SECRET)
    yield


def hijack(target: str) -> dict[str, object]:
    """Every field a client might use to send the call, or its credentials, elsewhere."""
    return {
        "api_base": target, "base_url": target, "api_key": "sk-attacker", "api_version": "2099-01-01",
        "extra_headers": {"x-exfil": "1"}, "headers": {"x-exfil": "1"}, "custom_llm_provider": "openai",
        "aws_bedrock_runtime_endpoint": target, "azure_ad_token": "x", "litellm_params": {"api_base": target},
        "extra_body": {"api_base": target}, "mock_response": "forged answer", "input_cost_per_token": 0,
    }


def test_a_litellm_backend_takes_no_url_key_or_header_from_the_body(servers: Servers, attacker: Attacker) -> None:
    fake = servers.anthropic()
    base = servers.gateway(f"""
backends:
  anthropic: {{type: litellm, provider: anthropic, api_key_env: NANOROUTE_TEST_PROVIDER_KEY, url: {fake.url},
               timeouts: {{ttft_s: 5, total_s: 10}}}}
models:
  claude: {{backend: anthropic, name: claude-3-5-haiku-20241022}}
""")
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20,
            **hijack(attacker.url)}
    for stream in (False, True):
        resp = httpx.post(f"{base}/chat/completions", json={**body, "stream": stream}, timeout=20)
        assert resp.status_code == 200
        assert "forged answer" not in resp.text  # litellm's mock_response is not the client's to set
    assert attacker.seen == []
    assert len(fake.seen) == 2
    for headers, sent in fake.seen:
        assert headers["x-api-key"] == SECRET  # the configured provider, with the configured key
        assert "x-exfil" not in {k.lower() for k in headers}
        assert not set(sent) & set(hijack(""))


def test_an_openai_backend_sends_the_body_only_where_the_config_says(servers: Servers, attacker: Attacker) -> None:
    up = servers.upstream()
    base = servers.gateway(f"""
backends:
  oai: {{type: openai, url: {up.url}, api_key_env: NANOROUTE_TEST_PROVIDER_KEY}}
models:
  m: {{backend: oai}}
""")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **hijack(attacker.url)}
    headers = {"Host": "127.0.0.1:1", "X-Forwarded-Host": "evil.example", "Forwarded": f"host={attacker.url}"}
    assert httpx.post(f"{base}/chat/completions", json=body, headers=headers).status_code == 200
    assert attacker.seen == []
    assert up.seen[0].headers["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("kind", ["openai", "azure"])
def test_upstream_redirects_are_not_followed(servers: Servers, attacker: Attacker, kind: str) -> None:
    """aiohttp follows redirects by default, and takes `api-key` (Azure) and configured headers along
    to the new origin; the gateway's calls never follow one."""

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{attacker.port}{request.path_qs}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    port = servers.serve(app)
    url = f"http://127.0.0.1:{port}" + ("/v1" if kind == "openai" else "")
    base = servers.gateway(f"""
backends:
  up: {{type: {kind}, url: "{url}", api_key_env: NANOROUTE_TEST_PROVIDER_KEY, headers: {{x-tenant-secret: s3cret}},
        health: {{enabled: false}}}}
models:
  m: {{backend: up}}
""")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    for stream in (False, True):
        resp = httpx.post(f"{base}/chat/completions", json={**body, "stream": stream})
        assert resp.status_code == 502
    assert attacker.seen == []
