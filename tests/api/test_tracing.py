"""Traces through a real gateway, exported over OTLP/HTTP to a fake Collector on loopback that decodes them.

Each test starts its gateway with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at the collector, and reads back the
spans it received: the request's (SERVER) and each upstream attempt's (CLIENT), their links, their attributes,
and the `traceparent` each fake upstream was sent.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.errors import ConfigError
from gateway.pipeline.context import Message
from gateway.settings import Settings
from tests.api.support import MESSAGES, Client, single_model, wait_until
from tests.api.test_cascade import config as cascade_config
from tests.fakes.otlp import FakeCollector, ReceivedSpan
from tests.fakes.servers import LoopThread, Servers, free_port
from tests.fakes.upstream import FakeUpstream

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_SPAN = "00f067aa0ba902b7"


def clear_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def collector(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> FakeCollector:
    """A fake Collector, and the environment of the gateways the test starts pointing at it (spans sent every
    20 ms rather than the SDK's 5 s)."""
    fake = FakeCollector()
    fake.port = servers.serve(fake.app())
    clear_otel(monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", fake.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "nanoroute-test")
    return fake


def spans(collector: FakeCollector, clients: int) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    """The request's span and its `clients` attempt spans, in the order they started, once all have arrived."""
    wait_until(lambda: len(collector.of_kind("server")) == 1 and len(collector.of_kind("client")) == clients)
    (server,) = collector.of_kind("server")
    attempts = sorted(collector.of_kind("client"), key=lambda s: s.start_ns)
    for attempt in attempts:
        assert (attempt.trace_id, attempt.parent_span_id) == (server.trace_id, server.span_id)
    return server, attempts


def sent_traceparent(up: FakeUpstream, index: int = -1) -> tuple[str, str, int]:
    """The trace id, span id and flags of the `traceparent` the upstream's request carried."""
    version, trace_id, span_id, flags = up.served[index].headers["traceparent"].split("-")
    assert version == "00"
    return trace_id, span_id, int(flags, 16)


def test_a_json_request_is_a_server_span_with_its_attempt_as_child(client: Client, servers: Servers,
                                                                   collector: FakeCollector) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up, model="m", name="gpt-up"))
    raw = client(base).chat.completions.with_raw_response.create(model="m", messages=MESSAGES, max_tokens=20,
                                                                 temperature=0.5)
    server, (attempt,) = spans(collector, 1)
    assert server.parent_span_id == ""  # no traceparent came in: a new trace
    assert (server.name, attempt.name) == ("chat m", "chat gpt-up")
    assert server.resource["service.name"] == "nanoroute-test" and server.scope == "nanoroute"
    a = server.attributes
    assert {k: a[k] for k in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
                              "gen_ai.response.model", "gen_ai.request.max_tokens", "gen_ai.request.temperature",
                              "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
                              "gen_ai.response.finish_reasons", "http.response.status_code")} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "m",
        "gen_ai.response.model": "gpt-up", "gen_ai.request.max_tokens": 20, "gen_ai.request.temperature": 0.5,
        "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 5, "gen_ai.response.finish_reasons": ["stop"],
        "http.response.status_code": 200}
    assert a["gen_ai.response.id"] == raw.parse().id
    assert {k: a[k] for k in a if k.startswith("nanoroute.") and k not in ("nanoroute.ttfb_s", "nanoroute.cost_usd",
                                                                            "nanoroute.savings_usd")} == {
        "nanoroute.api": "chat", "nanoroute.request_id": raw.headers["x-request-id"], "nanoroute.policy": "direct",
        "nanoroute.reason": raw.headers["x-nanoroute-reason"], "nanoroute.outcome": "success",
        "nanoroute.stream": False, "nanoroute.fallbacks": 0, "nanoroute.model": "m", "nanoroute.backend": "b"}
    assert "error.type" not in a and server.status == "unset"
    b = attempt.attributes
    assert (b["gen_ai.request.model"], b["nanoroute.model"], b["nanoroute.backend"], b["nanoroute.attempt"]) == (
        "gpt-up", "m", "b", 1)
    assert (b["server.address"], b["server.port"]) == ("127.0.0.1", up.port)
    assert b["nanoroute.ttfb_s"] > 0 and attempt.status == "unset"
    assert "gen_ai.usage.input_tokens" not in b  # usage is counted once, on the request's span
    trace_id, span_id, flags = sent_traceparent(up)
    assert (trace_id, span_id) == (attempt.trace_id, attempt.span_id) and flags & 1  # sampled
    assert server.start_ns <= attempt.start_ns <= attempt.end_ns <= server.end_ns


def test_a_fallback_is_two_attempt_spans_the_first_failed(client: Client, servers: Servers,
                                                          collector: FakeCollector) -> None:
    first, second = servers.upstream("first", behaviour="status:500"), servers.upstream("second")
    base = servers.gateway(f"""
backends:
  one: {{type: openai, url: {first.url}}}
  two: {{type: vllm, urls: [{second.url}]}}
models:
  m1: {{backend: one}}
  m2: {{backend: two}}
policies:
  - {{name: chain, match: {{model: auto}}, candidates: [m1], fallback: [m2]}}
""")
    raw = client(base).chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert raw.headers["x-nanoroute-fallbacks"] == "1"
    server, (failed, answered) = spans(collector, 2)
    assert (failed.name, failed.status, failed.attributes["error.type"]) == ("chat m1", "error", "server_error")
    assert "500" in failed.status_message
    assert (failed.attributes["nanoroute.attempt"], answered.attributes["nanoroute.attempt"]) == (1, 2)
    assert (answered.name, answered.status, answered.attributes["gen_ai.provider.name"]) == ("chat m2", "unset", "vllm")
    assert "error.type" not in answered.attributes
    a = server.attributes
    assert (a["nanoroute.policy"], a["nanoroute.fallbacks"], a["nanoroute.model"]) == ("chain", 1, "m2")
    assert server.status == "unset"  # the request itself succeeded
    # Each upstream was sent its own attempt's span as parent, in the same trace.
    assert sent_traceparent(first)[:2] == (failed.trace_id, failed.span_id)
    assert sent_traceparent(second)[:2] == (answered.trace_id, answered.span_id)


def test_every_model_failing_marks_the_request_span_as_an_error(client: Client, servers: Servers,
                                                                 collector: FakeCollector) -> None:
    up = servers.upstream(behaviour="status:503")
    base = servers.gateway(single_model(up))
    r = httpx.post(f"{base}/chat/completions", json={"model": "m", "messages": MESSAGES}, timeout=10)
    assert r.status_code == 502
    server, (attempt,) = spans(collector, 1)
    assert (server.status, server.attributes["error.type"]) == ("error", "upstream_error")
    assert server.attributes["http.response.status_code"] == 502
    assert "nanoroute.model" not in server.attributes and "gen_ai.usage.input_tokens" not in server.attributes
    assert (attempt.status, attempt.attributes["error.type"]) == ("error", "server_error")


def test_a_stream_has_its_usage_on_the_request_span_and_its_attempt_lasts_to_its_end(
        client: Client, servers: Servers, collector: FakeCollector) -> None:
    up = servers.upstream(chunks=4)
    base = servers.gateway(single_model(up, name="gpt-up"))
    chunks = list(client(base).chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert chunks
    server, (attempt,) = spans(collector, 1)
    a = server.attributes
    assert (a["nanoroute.stream"], a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (True, 7, 4)
    assert a["gen_ai.response.model"] == "gpt-up" and a["nanoroute.ttfb_s"] > 0
    assert attempt.attributes["nanoroute.ttfb_s"] > 0 and attempt.status == "unset"
    # The attempt's span covers the stream to its end, not only its opening.
    assert attempt.end_ns - attempt.start_ns > attempt.attributes["nanoroute.ttfb_s"] * 1e9
    assert sent_traceparent(up)[:2] == (attempt.trace_id, attempt.span_id)


def test_a_client_traceparent_is_continued_with_its_tracestate(servers: Servers, collector: FakeCollector) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up))
    headers = {"traceparent": f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01", "tracestate": "vendor=opaque"}
    r = httpx.post(f"{base}/chat/completions", json={"model": "m", "messages": MESSAGES}, headers=headers, timeout=10)
    assert r.status_code == 200
    server, (attempt,) = spans(collector, 1)
    assert (server.trace_id, server.parent_span_id) == (INCOMING_TRACE, INCOMING_SPAN)
    trace_id, span_id, _ = sent_traceparent(up)
    assert (trace_id, span_id) == (INCOMING_TRACE, attempt.span_id)
    assert up.served[-1].headers["tracestate"] == "vendor=opaque"


def test_a_trace_the_client_does_not_sample_sends_no_spans_but_keeps_its_ids(
        servers: Servers, collector: FakeCollector) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up))
    headers = {"traceparent": f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-00"}
    assert httpx.post(f"{base}/chat/completions", json={"model": "m", "messages": MESSAGES}, headers=headers,
                      timeout=10).status_code == 200
    trace_id, span_id, flags = sent_traceparent(up)
    assert trace_id == INCOMING_TRACE and span_id != INCOMING_SPAN and not flags & 1
    # A sampled request after it is exported; the unsampled one never was.
    assert httpx.post(f"{base}/chat/completions", json={"model": "m", "messages": MESSAGES},
                      timeout=10).status_code == 200
    spans(collector, 1)
    assert all(s.trace_id != INCOMING_TRACE for s in collector.spans)


def test_a_cascade_escalation_fails_the_turned_down_attempt(client: Client, servers: Servers,
                                                           collector: FakeCollector) -> None:
    small, big = servers.upstream("small", answer="Invoice 42"), servers.upstream("big", answer='{"n": 42}')
    base = servers.gateway(cascade_config(small, big))
    raw = client(base).chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES, response_format={"type": "json_object"},
        extra_headers={"X-Nanoroute-Task": "extract"})
    assert raw.headers["x-nanoroute-model"] == "big"
    server, (cheap, escalated) = spans(collector, 2)
    assert (cheap.name, cheap.status, cheap.attributes["error.type"]) == ("chat small", "error", "cascade_json")
    assert (escalated.name, escalated.status) == ("chat big", "unset")
    assert (server.attributes["nanoroute.reason"], server.attributes["nanoroute.fallbacks"]) == (
        "cascade_escalated", 1)
    assert server.attributes["nanoroute.cost_usd"] > 0 and server.attributes["nanoroute.savings_usd"] == 0


def test_a_skipped_model_is_an_event_of_the_request_span(client: Client, servers: Servers,
                                                        collector: FakeCollector) -> None:
    up = servers.upstream()
    base = servers.gateway(f"""
backends:
  b: {{type: openai, url: {up.url}}}
models:
  tiny: {{backend: b, context_window: 64}}
  roomy: {{backend: b}}
policies:
  - {{name: p, match: {{model: auto}}, candidates: [tiny], fallback: [roomy]}}
""")
    client(base).chat.completions.create(model="auto", messages=MESSAGES, max_tokens=1000)
    server, (attempt,) = spans(collector, 1)  # the skipped model was never called: no span of its own
    assert attempt.attributes["nanoroute.model"] == "roomy"
    assert server.events == [("nanoroute.skipped", {"nanoroute.model": "tiny", "nanoroute.backend": "b",
                                                    "error.type": "context_window"})]


@pytest.mark.parametrize(("path", "body", "api"), [
    ("/responses", {"model": "m", "input": "hi", "max_output_tokens": 30, "store": False}, "responses"),
    ("/messages", {"model": "m", "max_tokens": 30, "messages": MESSAGES}, "messages"),
])
def test_the_other_apis_are_chats_with_their_own_api(servers: Servers, collector: FakeCollector, path: str,
                                                     body: dict[str, Any], api: str) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up))
    r = httpx.post(base + path, json=body, headers={"anthropic-version": "2023-06-01"}, timeout=10)
    assert r.status_code == 200
    server, (attempt,) = spans(collector, 1)
    assert (server.name, server.attributes["nanoroute.api"], server.attributes["gen_ai.request.max_tokens"]) == (
        "chat m", api, 30)
    assert attempt.attributes["gen_ai.operation.name"] == "chat"


def test_a_refused_request_is_a_span_too(servers: Servers, collector: FakeCollector) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up))
    r = httpx.post(f"{base}/chat/completions", json={"model": "nope", "messages": MESSAGES}, timeout=10)
    assert r.status_code == 404
    server, _ = spans(collector, 0)
    assert (server.attributes["error.type"], server.attributes["http.response.status_code"]) == ("client_error", 404)
    assert server.status == "unset"  # the client's mistake is not the gateway's error


def test_the_last_spans_are_sent_when_the_gateway_stops(loop_thread: LoopThread, servers: Servers,
                                                        collector: FakeCollector, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # nothing is sent before the stop
    up = servers.upstream()
    path = tmp_path / "config.yaml"
    path.write_text(single_model(up))
    gateway = create_app(Settings(config=path, data_dir=tmp_path / "data", reload_interval_s=0))
    assert gateway.tracing is not None
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    statuses: list[int] = []

    async def serve_one() -> None:
        sent = asyncio.Event()

        async def receive() -> Message:
            if sent.is_set():
                await asyncio.Event().wait()  # the client stays until the gateway cancels its watch
            sent.set()
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "query_string": b""}
        async with gateway.lifespan():
            await gateway(scope, receive, send)
            await asyncio.sleep(0.05)
            assert not collector.spans

    loop_thread.run(serve_one())
    assert statuses == [200]
    assert [s.kind for s in sorted(collector.spans, key=lambda s: s.start_ns)] == ["server", "client"]


def test_litellm_chats_carry_the_traceparent(servers: Servers, collector: FakeCollector,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("litellm")
    monkeypatch.setenv("NANOROUTE_TEST_ANTHROPIC_KEY", "sk-ant-test")
    fake = servers.anthropic()
    base = servers.gateway(f"""
backends:
  anthropic: {{type: litellm, provider: anthropic, api_key_env: NANOROUTE_TEST_ANTHROPIC_KEY, url: {fake.url}}}
models:
  claude: {{backend: anthropic, name: claude-3-5-haiku-20241022}}
""")
    assert httpx.post(f"{base}/chat/completions", json={"model": "claude", "messages": MESSAGES, "max_tokens": 9},
                      timeout=10).status_code == 200
    _, (attempt,) = spans(collector, 1)
    assert attempt.attributes["gen_ai.provider.name"] == "anthropic"
    headers, _ = fake.seen[-1]
    assert headers["traceparent"].split("-")[1:3] == [attempt.trace_id, attempt.span_id]


# Without the variables: nothing of OpenTelemetry is built, or even imported.

@pytest.fixture
def no_otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    clear_otel(monkeypatch)
    yield


def test_without_the_variables_no_tracer_is_built(client: Client, servers: Servers, no_otel: None) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up))
    assert servers.app_of().tracing is None
    client(base).chat.completions.create(model="m", messages=MESSAGES)
    assert "traceparent" not in up.served[-1].headers


def test_without_the_variables_the_sdk_is_not_imported(tmp_path: Path, no_otel: None) -> None:
    script = ("import sys; from gateway.app import create_app; from gateway.settings import Settings; "
              f"gw = create_app(Settings(data_dir={str(tmp_path)!r})); "
              "print(gw.tracing, sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True,
                          env={**os.environ, "NANOROUTE_PORT": str(free_port())})
    assert done.stdout.split() == ["None", "[]"], done.stderr


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
])
def test_which_variables_turn_traces_on(env: dict[str, str], on: bool) -> None:
    from gateway.tracing import wanted

    assert wanted(env) is on


@pytest.mark.parametrize(("name", "value", "said"), [
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "'http/json' is not supported"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc", "grpc needs opentelemetry-exporter-otlp-proto-grpc"),
    ("OTEL_TRACES_EXPORTER", "console", "over OTLP only"),
])
def test_what_cannot_be_exported_fails_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                                                 value: str, said: str) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    if value == "grpc" and _has_grpc_exporter():
        pytest.skip("the grpc exporter is installed here")
    clear_otel(monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        create_app(Settings(data_dir=tmp_path))
    assert name in caught.value.message and said in caught.value.message


def _has_grpc_exporter() -> bool:
    try:
        import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401
    except ImportError:
        return False
    return True
