"""A `litellm` backend through the gateway, against a fake Anthropic Messages API on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.api.support import Client
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream

KEY = "sk-ant-test-secret-key"
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def _anthropic_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOROUTE_TEST_ANTHROPIC_KEY", KEY)


def config(anthropic: FakeAnthropic, openai_up: FakeUpstream | None = None, policies: str = "") -> str:
    other = ""
    if openai_up is not None:
        other = f"""
  oai: {{type: openai, url: {openai_up.url}}}"""
    models = """
  mini: {backend: oai, name: gpt-4o-mini, price: {input: 0.15, output: 0.6}}""" if openai_up else ""
    return f"""
backends:
  anthropic: {{type: litellm, provider: anthropic, api_key_env: NANOROUTE_TEST_ANTHROPIC_KEY, url: {anthropic.url},
               timeouts: {{ttft_s: 2, idle_s: 2, total_s: 5}}}}{other}
models:
  claude: {{backend: anthropic, name: claude-3-5-haiku-20241022, price: {{input: 0.8, output: 4.0}}}}{models}
{policies}
"""


def metric(base: str, name: str) -> float:
    for line in httpx.get(base.removesuffix("/v1") + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_chat_is_translated_both_ways_and_usage_is_costed(client: Client, servers: Servers) -> None:
    fake = servers.anthropic()
    base = servers.gateway(config(fake))
    raw = client(base).chat.completions.with_raw_response.create(
        model="claude", messages=[{"role": "system", "content": "Be brief."}, *MSG], max_tokens=50, temperature=0.2)
    reply = raw.parse()
    assert raw.headers["x-nanoroute-model"] == "claude"
    assert reply.choices[0].message.content == "Hello from the fake Anthropic."
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (11, 6)
    headers, body = fake.seen[-1]
    assert headers["x-api-key"] == KEY
    assert body["model"] == "claude-3-5-haiku-20241022"
    assert body["system"] == "Be brief." or body["system"][0]["text"] == "Be brief."
    assert body["max_tokens"] == 50 and body["temperature"] == 0.2
    assert metric(base, 'nanoroute_tokens_total{kind="prompt",model="claude"}') == 11
    expected = (11 * 0.8 + 6 * 4.0) / 1e6
    assert metric(base, 'nanoroute_cost_usd_total{model="claude",policy="direct"}') == pytest.approx(expected)


def test_streaming_is_relayed_as_openai_events_with_usage(client: Client, servers: Servers) -> None:
    fake = servers.anthropic()
    base = servers.gateway(config(fake))
    chunks = list(client(base).chat.completions.create(model="claude", messages=MSG, max_tokens=20, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake Anthropic."
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage...
    assert metric(base, 'nanoroute_tokens_total{kind="completion",model="claude"}') == 6  # ...but it was counted
    with_usage = list(client(base).chat.completions.create(
        model="claude", messages=MSG, max_tokens=20, stream=True, stream_options={"include_usage": True}))
    assert with_usage[-1].usage is not None and with_usage[-1].usage.completion_tokens == 6


def test_tool_calls_come_back_in_openai_shape(client: Client, servers: Servers) -> None:
    fake = servers.anthropic(behaviour="tool")
    base = servers.gateway(config(fake))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    reply = client(base).chat.completions.create(model="claude", messages=MSG, max_tokens=20, tools=tools)
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert reply.choices[0].finish_reason == "tool_calls"
    assert fake.seen[-1][1]["tools"][0]["name"] == "get_weather"
    stream = list(client(base).chat.completions.create(model="claude", messages=MSG, max_tokens=20, tools=tools,
                                                       stream=True))
    args = "".join(tc.function.arguments or "" for c in stream if c.choices
                   for tc in (c.choices[0].delta.tool_calls or []) if tc.function)
    assert json.loads(args) == {"city": "Paris"}


@pytest.mark.parametrize(("behaviour", "error", "status", "kind"), [
    ("status:429", openai.RateLimitError, 429, "rate_limited"),
    ("status:529", openai.InternalServerError, 502, "server_error"),
    ("status:500", openai.InternalServerError, 502, "server_error"),
    ("status:401", openai.InternalServerError, 502, "auth"),
    ("context", openai.BadRequestError, 400, "context_length"),
    ("content_filter", openai.BadRequestError, 400, "content_filter"),
    ("status:400", openai.BadRequestError, 400, "rejected"),
])
def test_each_provider_error_maps_to_the_gateway_class(
    client: Client, servers: Servers, behaviour: str, error: type[openai.APIStatusError], status: int, kind: str
) -> None:
    fake = servers.anthropic(behaviour=behaviour)
    base = servers.gateway(config(fake, policies="""
policies:
  - {name: only, match: {model: claude}, candidates: [claude], reliability: {retries: {max: 0}}}
"""))
    with pytest.raises(error) as caught:
        client(base).chat.completions.create(model="claude", messages=MSG, max_tokens=20)
    assert caught.value.status_code == status
    assert KEY not in caught.value.response.text
    assert metric(base, f'nanoroute_upstream_errors_total{{kind="{kind}",model="claude"}}') == 1


def test_rate_limit_passes_retry_after_on(client: Client, servers: Servers) -> None:
    fake = servers.anthropic(behaviour="status:429")
    base = servers.gateway(config(fake, policies="""
policies:
  - {name: only, match: {model: claude}, candidates: [claude], reliability: {retries: {max: 0}}}
"""))
    r = httpx.post(f"{base}/chat/completions", json={"model": "claude", "messages": MSG, "max_tokens": 5})
    assert r.status_code == 429 and r.headers["retry-after"] == "2"


def test_fallback_from_anthropic_to_openai_compatible_and_back(client: Client, servers: Servers) -> None:
    fake = servers.anthropic(behaviour="status:529")
    up = servers.upstream("gpt-4o-mini")
    base = servers.gateway(config(fake, up, policies="""
policies:
  - {name: a-first, match: {model: "claude*"}, candidates: [claude], fallback: [mini],
     reliability: {retries: {max: 0}}}
  - {name: o-first, match: {model: "gpt*"}, candidates: [mini], fallback: [claude],
     reliability: {retries: {max: 0}}}
"""))
    raw = client(base).chat.completions.with_raw_response.create(model="claude-any", messages=MSG, max_tokens=5)
    assert (raw.headers["x-nanoroute-model"], raw.headers["x-nanoroute-fallbacks"]) == ("mini", "1")
    assert raw.parse().choices[0].message.content == "Hello from the fake upstream."
    fake.behaviour, up.behaviour = "ok", "status:503"
    raw = client(base).chat.completions.with_raw_response.create(model="gpt-any", messages=MSG, max_tokens=5)
    assert (raw.headers["x-nanoroute-model"], raw.headers["x-nanoroute-fallbacks"]) == ("claude", "1")
    assert raw.parse().choices[0].message.content == "Hello from the fake Anthropic."
    chunks = list(client(base).chat.completions.create(model="gpt-any", messages=MSG, max_tokens=5, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the fake Anthropic."


_PROBE = textwrap.dedent("""
    import sys, threading, json
    seen = []
    def hook(event, args):
        if event == "socket.connect":
            seen.append(repr(args[1]))
        elif event == "socket.getaddrinfo":
            seen.append("dns:" + repr(args[0]))
    sys.addaudithook(hook)
    from gateway.settings import Settings
    from gateway.server import run
    threading.Thread(target=run, args=(Settings(),), daemon=True).start()
    sys.stdin.readline()  # the test has sent its requests
    print(json.dumps({"seen": seen, "litellm": "litellm" in sys.modules}), flush=True)
""")


def _connections(config_text: str, tmp_path: Path, port: int, drive: object) -> dict[str, object]:
    cfg = tmp_path / "probe.yaml"
    cfg.write_text(config_text)
    env = {**os.environ, "NANOROUTE_CONFIG": str(cfg), "NANOROUTE_PORT": str(port), "NANOROUTE_RELOAD_INTERVAL_S": "0"}
    proc = subprocess.Popen([sys.executable, "-c", _PROBE], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        base = f"http://127.0.0.1:{port}/v1"
        for _ in range(400):
            try:
                if httpx.get(base.removesuffix("/v1") + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        assert callable(drive)
        drive(base)
        out, _ = proc.communicate("done\n", timeout=60)
    finally:
        proc.kill()
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.e2e
def test_litellm_connects_nowhere_but_the_configured_upstream(client: Client, servers: Servers, tmp_path: Path) -> None:
    from tests.fakes.servers import free_port

    fake = servers.anthropic()
    port = free_port()

    def drive(base: str) -> None:
        assert client(base).chat.completions.create(model="claude", messages=MSG, max_tokens=5).choices
        list(client(base).chat.completions.create(model="claude", messages=MSG, max_tokens=5, stream=True))

    result = _connections(config(fake), tmp_path, port, drive)
    assert result["litellm"] is True
    targets = [s for s in result["seen"] if not s.startswith("dns:")]  # type: ignore[union-attr]
    assert targets, "the probe saw no connection at all"
    assert all(f"'127.0.0.1', {fake.port})" in t for t in targets), targets
    assert all("127.0.0.1" in s or "localhost" in s for s in result["seen"]), result["seen"]  # type: ignore[union-attr]


@pytest.mark.e2e
def test_litellm_is_not_imported_without_a_litellm_backend(client: Client, servers: Servers, tmp_path: Path) -> None:
    from tests.fakes.servers import free_port

    up = servers.upstream("m")

    def drive(base: str) -> None:
        assert client(base).chat.completions.create(model="m", messages=MSG).choices

    result = _connections(f"backends:\n  b: {{type: openai, url: {up.url}}}\nmodels:\n  m: {{backend: b}}\n",
                          tmp_path, free_port(), drive)
    assert result["litellm"] is False
