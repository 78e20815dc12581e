"""Provider specifics on the fast path: Azure OpenAI deployments, servers without stream usage."""

from __future__ import annotations

import pytest

from tests.api.support import Client
from tests.fakes.servers import Servers

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def _azure_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOROUTE_TEST_AZURE_KEY", "azure-secret")


def test_azure_deployments_are_addressed_by_name_and_api_version(client: Client, servers: Servers) -> None:
    up = servers.upstream("azure")
    base = servers.gateway(f"""
backends:
  azure: {{type: azure, url: {up.url.removesuffix('/v1')}, api_version: "2024-10-21",
           api_key_env: NANOROUTE_TEST_AZURE_KEY}}
models:
  gpt-4o-eu: {{backend: azure, name: my-gpt4o-deployment, price: {{input: 2.5, output: 10}}}}
""")
    sdk = client(base)
    reply = sdk.chat.completions.create(model="gpt-4o-eu", messages=MSG)
    assert reply.choices[0].message.content == "Hello from the fake upstream."
    seen = up.seen[-1]
    assert seen.path == "/openai/deployments/my-gpt4o-deployment/chat/completions?api-version=2024-10-21"
    assert seen.headers["api-key"] == "azure-secret" and "authorization" not in seen.headers
    chunks = list(sdk.chat.completions.create(model="gpt-4o-eu", messages=MSG, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2 "
    sdk.embeddings.create(model="gpt-4o-eu", input="x")
    assert up.seen[-1].path == "/openai/deployments/my-gpt4o-deployment/embeddings?api-version=2024-10-21"


def test_stream_usage_can_be_turned_off_for_servers_that_reject_it(client: Client, servers: Servers) -> None:
    plain, strict = servers.upstream("plain"), servers.upstream("strict")
    base = servers.gateway(f"""
backends:
  plain:  {{type: openai, url: {plain.url}}}
  strict: {{type: openai, url: {strict.url}, stream_usage: false}}
models:
  a: {{backend: plain}}
  b: {{backend: strict}}
""")
    for model in ("a", "b"):
        list(client(base).chat.completions.create(model=model, messages=MSG, stream=True))
    assert plain.seen[-1].body["stream_options"] == {"include_usage": True}
    assert "stream_options" not in strict.seen[-1].body
