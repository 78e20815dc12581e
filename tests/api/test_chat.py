"""POST /v1/chat/completions through the official SDK: JSON and streams, relayed as the upstream sent them."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

from tests.api.support import CHAT, MESSAGES, Client, envelope, single_model
from tests.fakes.servers import Servers

UNKNOWN_FIELDS = {
    "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "lookup"}},
    "response_format": {"type": "json_object"},
    "logprobs": True,
    "n": 2,
    "seed": 42,
}


def test_chat_json(servers: Servers, client: Client) -> None:
    up = servers.upstream("m")
    sdk = client(servers.gateway(single_model(up)))
    raw = sdk.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    assert completion.usage is not None and completion.usage.total_tokens == 12
    assert raw.headers["x-nanoroute-policy"] == "direct"
    assert raw.headers["x-nanoroute-model"] == "m"
    assert raw.headers["x-nanoroute-fallbacks"] == "0"
    assert re.fullmatch(r"[0-9a-f]{32}", raw.headers["x-request-id"])
    assert len(up.seen) == 1


def test_the_upstreams_body_comes_back_byte_for_byte(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream("m")
    base = servers.gateway(single_model(up))
    resp = http.post(f"{base}/chat/completions", json=CHAT)
    assert resp.status_code == 200
    # The fake answers with json.dumps' default separators; a gateway that re-encoded the body
    # (orjson, pydantic) would write it differently.
    assert resp.content.decode() == json.dumps(json.loads(resp.content))
    assert resp.headers["content-length"] == str(len(resp.content))
    assert json.loads(resp.content)["id"] == "cmpl-m-1"


def test_request_id_is_echoed_and_sent_upstream(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    sdk = client(servers.gateway(single_model(up)))
    raw = sdk.chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, extra_headers={"x-request-id": "trace-abc-123"})
    assert raw.headers["x-request-id"] == "trace-abc-123"
    assert up.seen[0].headers["x-request-id"] == "trace-abc-123"


def test_a_request_id_that_is_not_printable_ascii_is_replaced(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up))
    for given in ("x" * 129, "tab\there"):
        resp = http.post(f"{base}/chat/completions", json=CHAT, headers={"x-request-id": given})
        assert resp.status_code == 200
        assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["x-request-id"])


def test_each_request_gets_its_own_id(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    sdk = client(servers.gateway(single_model(up)))
    ids = {sdk.chat.completions.with_raw_response.create(model="m", messages=MESSAGES).headers["x-request-id"]
           for _ in range(3)}
    assert len(ids) == 3
    assert {s.headers["x-request-id"] for s in up.seen} == ids


def test_the_model_name_is_rewritten_to_the_upstream_name(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    sdk = client(servers.gateway(single_model(up, model="support", name="org/support-v3")))
    raw = sdk.chat.completions.with_raw_response.create(model="support", messages=MESSAGES)
    assert up.seen[0].body["model"] == "org/support-v3"
    assert raw.headers["x-nanoroute-model"] == "support"
    assert raw.parse().model == "org/support-v3", "the upstream's answer is relayed as it is"


def test_unknown_openai_fields_reach_the_upstream_unchanged(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    sdk = client(servers.gateway(single_model(up)))
    sdk.chat.completions.create(
        model="m", messages=MESSAGES, tools=UNKNOWN_FIELDS["tools"], tool_choice=UNKNOWN_FIELDS["tool_choice"],
        response_format={"type": "json_object"}, logprobs=True, n=2, seed=42,
        stream_options={"include_usage": True}, extra_body={"vendor_knob": {"depth": [1, 2], "on": None}})
    assert up.seen[0].body == {"model": "m", "messages": MESSAGES, **UNKNOWN_FIELDS,
                               "stream_options": {"include_usage": True},
                               "vendor_knob": {"depth": [1, 2], "on": None}}


def test_unknown_fields_survive_the_model_rewrite(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    sdk = client(servers.gateway(single_model(up, name="served")))
    sdk.chat.completions.create(model="m", messages=MESSAGES, **UNKNOWN_FIELDS,
                                extra_body={"vendor_knob": {"x": 1}})
    assert up.seen[0].body == {"model": "served", "messages": MESSAGES, **UNKNOWN_FIELDS, "vendor_knob": {"x": 1}}


def test_headers_of_the_client_are_not_sent_upstream(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    sdk = client(servers.gateway(single_model(up)), api_key="sk-client-secret")
    sdk.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"x-custom": "1"})
    headers = up.seen[0].headers
    assert "authorization" not in headers
    assert "x-custom" not in headers
    assert "sk-client-secret" not in json.dumps(headers)


def test_chat_stream_with_the_sdk(servers: Servers, client: Client) -> None:
    up = servers.upstream(chunks=5)
    sdk = client(servers.gateway(single_model(up)))
    chunks = list(sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2 tok3 tok4 "
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks), "usage the client did not ask for is not relayed"


def test_chat_stream_with_usage_when_asked(servers: Servers, client: Client) -> None:
    up = servers.upstream(chunks=2)
    sdk = client(servers.gateway(single_model(up)))
    chunks = list(sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True,
                                              stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


def test_chat_stream_relays_the_events_intact_and_ends(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream(chunks=3)
    base = servers.gateway(single_model(up, name="served"))
    with http.stream("POST", f"{base}/chat/completions", json={**CHAT, "stream": True}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-nanoroute-model"] == "m"
        assert resp.headers["x-nanoroute-fallbacks"] == "0"
        body = resp.read()
    events = body.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""], "the stream ends with [DONE] and a blank line"
    data = [json.loads(e.removeprefix(b"data: ")) for e in events[:-2]]
    assert [d["choices"][0]["delta"].get("content") for d in data] == ["tok0 ", "tok1 ", "tok2 ", None]
    assert all(e.startswith(b"data: {") for e in events[:-2])
    assert {d["model"] for d in data} == {"served"}
    assert up.seen[0].body["stream"] is True


def test_a_stream_that_fails_after_the_first_byte_ends_with_an_error_event(
    servers: Servers, client: Client
) -> None:
    up = servers.upstream(behaviour="cut")
    sdk = client(servers.gateway(single_model(up)))
    stream = sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert info.value.message == "the upstream's answer was cut off before its end"
    assert received[0].choices[0].delta.content == "tok0 "


def test_messages_must_be_a_list(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    sdk = client(servers.gateway(single_model(up)))
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="m", messages="hi")  # type: ignore[arg-type]
    assert (info.value.status_code, info.value.param, info.value.type) == (400, "messages", "invalid_request_error")
    assert up.seen == []


def test_get_is_not_allowed(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up))
    resp = http.get(f"{base}/chat/completions")
    assert resp.status_code == 405
    err = envelope(resp)
    assert err["message"] == "Use POST for /v1/chat/completions"
    assert err["type"] == "invalid_request_error"
