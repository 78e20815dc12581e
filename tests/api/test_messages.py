"""POST /v1/messages and /v1/messages/count_tokens through the official `anthropic` SDK: translated for an
OpenAI-compatible upstream, passed through to Anthropic, with Anthropic's errors."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.api.support import single_model, wait_until
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.servers import Servers

KEY = "sk-ant-test-secret-key"
TOOL = {"name": "get_weather", "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
def sdk() -> Iterator[Any]:
    made: list[anthropic.Anthropic] = []

    def make(base_v1: str, api_key: str = "sk-client") -> anthropic.Anthropic:
        c = anthropic.Anthropic(base_url=base_v1.removesuffix("/v1"), api_key=api_key, max_retries=0, timeout=10)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture(autouse=True)
def _anthropic_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOROUTE_TEST_ANTHROPIC_KEY", KEY)


def native_config(fake: FakeAnthropic, extra: str = "") -> str:
    return f"""
backends:
  anthropic: {{type: litellm, provider: anthropic, api_key_env: NANOROUTE_TEST_ANTHROPIC_KEY, url: {fake.url},
               timeouts: {{ttft_s: 2, idle_s: 2, total_s: 5}}}}{extra}
models:
  claude: {{backend: anthropic, name: claude-sonnet-4-5, price: {{input: 3.0, output: 15.0}}}}
"""


def test_create_is_translated_for_an_openai_upstream(servers: Servers, sdk: Any) -> None:
    up = servers.upstream("m")
    client = sdk(servers.gateway(single_model(up)))
    raw = client.messages.with_raw_response.create(
        model="m", max_tokens=50, system="Be brief.", stop_sequences=["END"],
        messages=[{"role": "user", "content": "hi"}])
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text == "Hello from the fake upstream."
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 7 and message.usage.output_tokens == 5
    assert raw.headers["x-nanoroute-model"] == "m"
    sent = up.served[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert sent.body["max_tokens"] == 50 and sent.body["stop"] == ["END"]


def test_stream_is_translated_into_anthropics_events(servers: Servers, sdk: Any) -> None:
    up = servers.upstream("m")
    client = sdk(servers.gateway(single_model(up)))
    with client.messages.stream(model="m", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds and "message_delta" in kinds
    assert final.content[0].type == "text" and final.content[0].text == "tok0 tok1 tok2 "
    assert final.usage.output_tokens == 3 and final.stop_reason == "end_turn"
    assert up.served[0].body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_over_two_turns(servers: Servers, sdk: Any, stream: bool) -> None:
    up = servers.upstream("m", tools=True)
    client = sdk(servers.gateway(single_model(up)))
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with client.messages.stream(model="m", max_tokens=100, tools=[TOOL], messages=messages) as s:
            first = s.get_final_message()
    else:
        first = client.messages.create(model="m", max_tokens=100, tools=[TOOL], messages=messages)
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
    messages += [{"role": "assistant", "content": [c.model_dump() for c in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}]}]
    second = client.messages.create(model="m", max_tokens=100, tools=[TOOL], messages=messages)
    assert second.content[0].text == "The tool said: 18C"
    sent = up.served[1].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "18C"}


def test_count_tokens_is_answered_by_the_gateway(servers: Servers, sdk: Any) -> None:
    up = servers.upstream("m")
    client = sdk(servers.gateway(single_model(up)))
    short = client.messages.count_tokens(model="m", messages=[{"role": "user", "content": "hi"}])
    long = client.messages.count_tokens(model="m", messages=[{"role": "user", "content": "hello there " * 50}])
    assert 0 < short.input_tokens < long.input_tokens
    assert up.served == []
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nope", messages=[{"role": "user", "content": "hi"}])


def test_errors_come_back_in_anthropics_envelope(servers: Servers, sdk: Any) -> None:
    up = servers.upstream("m")
    base = servers.gateway(single_model(up), api_keys="sk-client-key-0123456789")
    client = sdk(base, api_key="sk-client-key-0123456789")
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["type"] == "error"  # type: ignore[index]
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError):
        sdk(base, api_key="sk-wrong-key-0123456789").messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}])
    assert "document" in bad.value.body["error"]["message"]  # type: ignore[index]
    resp = httpx.post(base + "/messages", content=b"{not json", headers={"x-api-key": "sk-client-key-0123456789"})
    assert resp.status_code == 400
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "invalid_request_error"
    assert up.served == []


def test_upstream_failure_is_anthropics_error_type(servers: Servers, sdk: Any) -> None:
    up = servers.upstream("m", behaviour="status:500")
    client = sdk(servers.gateway(single_model(up)))
    with pytest.raises(anthropic.InternalServerError) as failed:
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert failed.value.status_code == 502
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]


THINKING = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "I should call the tool.", "signature": "sig-abc=="},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}]},
]


def test_native_anthropic_gets_the_clients_bytes_and_headers(servers: Servers, sdk: Any) -> None:
    fake = servers.anthropic()
    client = sdk(servers.gateway(native_config(fake)))
    message = client.messages.create(
        model="claude", max_tokens=2000, tools=[TOOL], messages=THINKING,
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14", "anthropic-version": "2023-06-01"})
    assert message.content[0].text == "Hello from the fake Anthropic."
    headers, body = fake.seen[0]
    assert body["messages"] == THINKING  # thinking blocks and signatures, untouched
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert body["model"] == "claude-sonnet-4-5"
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["x-api-key"] == KEY  # the backend's key, never the client's
    assert lower["anthropic-version"] == "2023-06-01"
    assert lower["anthropic-beta"] == "interleaved-thinking-2025-05-14"


def test_native_anthropic_stream_is_relayed_and_counted(servers: Servers, sdk: Any) -> None:
    fake = servers.anthropic()
    base = servers.gateway(native_config(fake))
    client = sdk(base)
    with client.messages.stream(model="claude", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
        final = s.get_final_message()
    assert final.content[0].text == "Hello from the fake Anthropic."
    assert final.usage.input_tokens == 11 and final.usage.output_tokens == 6
    metrics = httpx.get(base.removesuffix("/v1") + "/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith('nanoroute_tokens_total{kind="prompt",model="claude"}')
                or x.startswith('nanoroute_tokens_total{model="claude",kind="prompt"}'))
    assert float(line.rsplit(" ", 1)[1]) == 11.0


def test_server_tools_go_only_to_a_model_that_speaks_messages(servers: Servers, sdk: Any) -> None:
    fake = servers.anthropic()
    up = servers.upstream("m")
    extra = f"\n  oai: {{type: openai, url: {up.url}}}"
    config = native_config(fake, extra) + "  m: {backend: oai}\n"
    client = sdk(servers.gateway(config))
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="m", max_tokens=50, tools=[search],  # type: ignore[list-item]
                               messages=[{"role": "user", "content": "news?"}])
    assert "web_search_20250305" in refused.value.body["error"]["message"]  # type: ignore[index]
    assert up.served == []
    client.messages.create(model="claude", max_tokens=50, tools=[search],  # type: ignore[list-item]
                           messages=[{"role": "user", "content": "news?"}])
    assert fake.seen[0][1]["tools"] == [search]


def test_access_log_records_the_api(servers: Servers, sdk: Any, caplog: pytest.LogCaptureFixture) -> None:
    up = servers.upstream("m")
    client = sdk(servers.gateway(single_model(up)))
    with caplog.at_level(logging.INFO, logger="nanoroute.access"):
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        # the line is written once the answer went out: it may come just after the client has it
        wait_until(lambda: any(r.name == "nanoroute.access" for r in caplog.records))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "nanoroute.access"]
    assert [(x["op"], x["prompt_tokens"]) for x in lines] == [("messages", 7)]


def test_anthropic_gets_a_version_when_the_client_sent_none(servers: Servers) -> None:
    """Anthropic refuses a request without `anthropic-version`: curl users, and the gateway's own checks of
    a failing model, send none."""
    fake = servers.anthropic()
    base = servers.gateway(native_config(fake))
    resp = httpx.post(base + "/messages", json={"model": "claude", "max_tokens": 5,
                                                "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    assert resp.status_code == 200 and resp.json()["type"] == "message"
    headers = {k.lower(): v for k, v in fake.seen[0][0].items()}
    assert headers["anthropic-version"] == "2023-06-01"
