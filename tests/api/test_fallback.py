"""The attempt chain through the gateway: failures move on to the next model, and the headers say so."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.api.support import CHAT, MESSAGES, Client, error_of
from tests.fakes.servers import Servers, free_port
from tests.fakes.upstream import FakeUpstream


def chain_config(*urls: str) -> str:
    """Backends b0, b1... each serving one model m0, m1...; policy `chain` tries them in order."""
    backends = "".join(f"  b{i}: {{type: openai, url: {u}}}\n" for i, u in enumerate(urls))
    models = "".join(f"  m{i}: {{backend: b{i}, name: served-{i}}}\n" for i in range(len(urls)))
    names = ", ".join(f"m{i}" for i in range(len(urls)))
    return f"""\
backends:
{backends}models:
{models}policies:
  - {{name: chain, match: {{model: auto}}, candidates: [m0], fallback: [{names}]}}
"""


def test_connection_error_falls_back_to_the_next_model(servers: Servers, client: Client) -> None:
    up = servers.upstream("second")
    sdk = client(servers.gateway(chain_config(f"http://127.0.0.1:{free_port()}/v1", up.url)))
    raw = sdk.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == "Hello from the fake upstream."
    assert raw.headers["x-nanoroute-policy"] == "chain"
    assert raw.headers["x-nanoroute-model"] == "m1"
    assert raw.headers["x-nanoroute-fallbacks"] == "1"
    assert up.seen[0].body["model"] == "served-1"


@pytest.mark.parametrize("behaviour", ["status:500", "status:503", "status:404", "status:429", "reset", "garbage",
                                       "context"])
def test_upstream_failures_fall_back(servers: Servers, client: Client, behaviour: str) -> None:
    first, second = servers.upstream("first", behaviour=behaviour), servers.upstream("second")
    sdk = client(servers.gateway(chain_config(first.url, second.url)))
    raw = sdk.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert (raw.headers["x-nanoroute-model"], raw.headers["x-nanoroute-fallbacks"]) == ("m1", "1")
    assert (len(first.seen), len(second.seen)) == (1, 1)
    assert first.seen[0].headers["x-request-id"] == second.seen[0].headers["x-request-id"]


def test_two_failures_then_an_answer(servers: Servers, client: Client) -> None:
    bad = servers.upstream("bad", behaviour="status:502")
    good = servers.upstream("good")
    sdk = client(servers.gateway(chain_config(f"http://127.0.0.1:{free_port()}/v1", bad.url, good.url)))
    raw = sdk.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert (raw.headers["x-nanoroute-model"], raw.headers["x-nanoroute-fallbacks"]) == ("m2", "2")


def test_no_fallback_when_the_first_model_answers(servers: Servers, client: Client) -> None:
    first, second = servers.upstream("first"), servers.upstream("second")
    sdk = client(servers.gateway(chain_config(first.url, second.url)))
    raw = sdk.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert (raw.headers["x-nanoroute-model"], raw.headers["x-nanoroute-fallbacks"]) == ("m0", "0")
    assert second.seen == []


def test_a_rejection_does_not_fall_back(servers: Servers, client: Client) -> None:
    first, second = servers.upstream("first", behaviour="status:400"), servers.upstream("second")
    sdk = client(servers.gateway(chain_config(first.url, second.url)))
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="auto", messages=MESSAGES)
    assert error_of(info.value)["message"] == "fake 400"
    assert second.seen == []


def test_when_every_model_fails_the_last_error_decides_the_status(servers: Servers, client: Client) -> None:
    first = servers.upstream("first", behaviour="status:500")
    second = servers.upstream("second", behaviour="hang")
    config = chain_config(first.url, second.url).replace(
        f"url: {second.url}}}", f"url: {second.url}, timeouts: {{total_s: 0.3}}}}")
    sdk = client(servers.gateway(config))
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="auto", messages=MESSAGES)
    exc = info.value
    assert (exc.status_code, exc.code) == (504, "upstream_timeout")
    assert error_of(exc)["message"] == ("All 2 attempt(s) for policy 'chain' failed: m0: the upstream answered "
                                        "with a server error; m1: the upstream did not answer in time")
    assert exc.response.headers["x-nanoroute-fallbacks"] == "2"
    assert exc.response.headers["x-nanoroute-policy"] == "chain"


def test_stream_falls_back_before_the_first_byte(servers: Servers, client: Client) -> None:
    first = servers.upstream("first", behaviour="status:503")
    second = servers.upstream("second", chunks=2)
    sdk = client(servers.gateway(chain_config(first.url, second.url)))
    with sdk.chat.completions.with_streaming_response.create(model="auto", messages=MESSAGES, stream=True) as resp:
        assert (resp.headers["x-nanoroute-model"], resp.headers["x-nanoroute-fallbacks"]) == ("m1", "1")
        chunks = list(resp.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 "
    assert (len(first.seen), len(second.seen)) == (1, 1)


def test_stream_falls_back_on_a_closed_port(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream("second")
    base = servers.gateway(chain_config(f"http://127.0.0.1:{free_port()}/v1", up.url))
    with http.stream("POST", f"{base}/chat/completions", json={**CHAT, "model": "auto", "stream": True}) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-nanoroute-model"] == "m1"
        assert resp.read().endswith(b"data: [DONE]\n\n")


def test_no_fallback_once_a_stream_has_started(servers: Servers, client: Client) -> None:
    first, second = servers.upstream("first", behaviour="cut"), servers.upstream("second")
    sdk = client(servers.gateway(chain_config(first.url, second.url)))
    with pytest.raises(openai.APIError):
        list(sdk.chat.completions.create(model="auto", messages=MESSAGES, stream=True))
    assert second.seen == []


def test_a_cheaper_policy_falls_back_to_the_dearer_model(servers: Servers, client: Client) -> None:
    small: FakeUpstream = servers.upstream("small", behaviour="status:500")
    large = servers.upstream("large")
    config = f"""\
backends:
  local: {{type: vllm, urls: [{small.url}]}}
  hosted: {{type: openai, url: {large.url}}}
models:
  small: {{backend: local, price: {{input: 0.01, output: 0.01}}}}
  large: {{backend: hosted, price: {{input: 3, output: 15}}}}
policies:
  - {{name: cheap-first, strategy: cheapest, candidates: [large, small]}}
"""
    sdk = client(servers.gateway(config))
    raw = sdk.chat.completions.with_raw_response.create(model="anything", messages=MESSAGES)
    assert (raw.headers["x-nanoroute-model"], raw.headers["x-nanoroute-fallbacks"]) == ("large", "1")
    assert (len(small.seen), len(large.seen)) == (1, 1)
