"""gateway/backends/openai.py against a real fake upstream: requests as sent, failures as classified."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.backends import build_backend
from gateway.backends.base import Attempt, Backend, Operation
from gateway.config.loader import load_text
from gateway.errors import (
    ContextLengthExceeded,
    UpstreamAuthFailed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamMalformed,
    UpstreamModelNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
)
from tests.fakes.servers import Servers, free_port

CHAT = {"model": "served-name", "messages": [{"role": "user", "content": "hi"}]}
VLLM_CONTEXT = {"object": "error", "message": "This model's maximum context length is 2048 tokens. However, you "
                "requested 3000 tokens (2000 in the messages, 1000 in the completion).",
                "type": "BadRequestError", "code": 400}

Make = Callable[..., Backend]


@pytest.fixture
def make(servers: Servers) -> Iterator[Make]:
    """Build and start a backend named `b` (OpenAI's or vLLM's, which share the transport) from a backend
    spec in YAML flow style."""
    started: list[Backend] = []

    def build(spec: str) -> Backend:
        table = load_text(f"backends:\n  b: {spec}\nmodels:\n  m: {{backend: b, name: served-name}}\n")
        backend = build_backend("b", table.config.backends["b"])
        servers.loop.run(backend.start())
        started.append(backend)
        return backend

    yield build
    for backend in started:
        servers.loop.run(backend.close())


def attempt(body: dict[str, Any] | bytes = CHAT, op: Operation = Operation.CHAT) -> Attempt:
    table = load_text("backends:\n  b: {type: openai, url: http://x}\nmodels:\n  m: {backend: b}\n")
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Attempt(op, table.models["m"], raw, "req-1")


def call_error(servers: Servers, backend: Backend, body: dict[str, Any] | bytes = CHAT) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        servers.loop.run(backend.call(attempt(body)))
    err = info.value
    assert (err.model, err.backend) == ("m", "b")
    return err


def read_stream(servers: Servers, backend: Backend, body: dict[str, Any]) -> bytes:
    async def run() -> bytes:
        stream = await backend.stream(attempt(body))
        try:
            return b"".join([chunk async for chunk in stream])
        finally:
            await stream.aclose()

    return servers.loop.run(run())


# -- what goes upstream -----------------------------------------------------------------------------


def test_a_call_sends_the_body_and_returns_the_reply(servers: Servers, make: Make) -> None:
    up = servers.upstream()
    backend = make(f"{{type: openai, url: {up.url}}}")
    raw = b'{"model":"served-name","messages":[],"seed":3,"vendor":{"x":[1,2]}}'
    reply = servers.loop.run(backend.call(attempt(raw)))
    assert reply.parsed == orjson.loads(reply.body)
    assert reply.parsed["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    [seen] = up.seen
    assert seen.path == "/v1/chat/completions"
    assert seen.body == orjson.loads(raw)
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["x-request-id"] == "req-1"
    assert "authorization" not in seen.headers
    assert "user-agent" not in seen.headers


@pytest.mark.parametrize(("op", "path"), [(Operation.COMPLETIONS, "/v1/completions"),
                                          (Operation.EMBEDDINGS, "/v1/embeddings")])
def test_each_operation_goes_to_its_path(servers: Servers, make: Make, op: Operation, path: str) -> None:
    up = servers.upstream()
    backend = make(f"{{type: openai, url: {up.url}}}")
    body = json.dumps({"model": "served-name", "prompt": "x", "input": "x"}).encode()
    servers.loop.run(backend.call(Attempt(op, attempt().model, body, "r")))
    assert [s.path for s in up.seen] == [path]


def test_the_key_from_the_environment_and_extra_headers(
    servers: Servers, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NANOROUTE_TEST_UPSTREAM_KEY", "sk-upstream")
    up = servers.upstream()
    backend = make(f"{{type: openai, url: {up.url}, api_key_env: NANOROUTE_TEST_UPSTREAM_KEY, "
                   "headers: {OpenAI-Organization: org-1}}")
    servers.loop.run(backend.call(attempt()))
    assert up.seen[0].headers["authorization"] == "Bearer sk-upstream"
    assert up.seen[0].headers["openai-organization"] == "org-1"


def test_the_key_from_a_file(servers: Servers, make: Make, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-from-file\n")
    up = servers.upstream()
    backend = make(f"{{type: vllm, urls: [{up.url}], api_key_file: {key}}}")
    servers.loop.run(backend.call(attempt()))
    assert up.seen[0].headers["authorization"] == "Bearer sk-from-file"


def test_an_attempt_goes_to_the_vllm_replica_it_names(servers: Servers, make: Make) -> None:
    """(Which replica takes each request is the health state's choice: tests/unit/reliability/test_health.py.)"""
    one, two = servers.upstream("one"), servers.upstream("two")
    backend = make(f"{{type: vllm, urls: [{one.url}, {two.url}], health: {{enabled: false}}}}")
    for replica in (1, 1, 0):
        servers.loop.run(backend.call(dataclasses.replace(attempt(), replica=replica)))
    assert (len(one.seen), len(two.seen)) == (1, 2)


def test_a_stream_is_relayed_as_raw_bytes(servers: Servers, make: Make) -> None:
    up = servers.upstream(chunks=2)
    backend = make(f"{{type: openai, url: {up.url}}}")
    raw = read_stream(servers, backend, {**CHAT, "stream": True})
    events = raw.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    first = orjson.loads(events[0].removeprefix(b"data: "))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "tok0 "}
    assert up.open_requests == 0


def test_a_compressing_upstream_still_gives_a_json_reply(servers: Servers, make: Make) -> None:
    # OpenAI compresses when the client accepts it; the backend reads and relays the bytes as they are,
    # so it must not accept a compressed answer.
    up = servers.upstream(compress=True)
    backend = make(f"{{type: openai, url: {up.url}}}")
    reply = servers.loop.run(backend.call(attempt()))
    assert reply.parsed["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    raw = read_stream(servers, backend, {**CHAT, "stream": True})
    assert raw.endswith(b"data: [DONE]\n\n")


# -- how failures are classified ----------------------------------------------------------------------


def test_a_closed_port_is_a_connect_error(servers: Servers, make: Make) -> None:
    backend = make(f"{{type: openai, url: http://127.0.0.1:{free_port()}/v1}}")
    err = call_error(servers, backend)
    assert isinstance(err, UpstreamConnectError)
    assert err.message.startswith("cannot connect to upstream")
    assert (err.status, err.fallback) == (503, True)


def test_a_connection_closed_without_an_answer_is_a_connect_error(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="reset")
    err = call_error(servers, make(f"{{type: openai, url: {up.url}}}"))
    assert isinstance(err, UpstreamConnectError)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_a_server_error(servers: Servers, make: Make, status: int) -> None:
    up = servers.upstream(behaviour=f"status:{status}")
    err = call_error(servers, make(f"{{type: openai, url: {up.url}}}"))
    assert type(err) is UpstreamServerError
    assert err.message == f"upstream answered {status}: fake {status}"
    assert err.fallback


def test_404_is_a_server_error_so_another_model_may_serve(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="status:404")
    err = call_error(servers, make(f"{{type: openai, url: {up.url}}}"))
    assert type(err) is UpstreamServerError
    assert err.fallback


MISSING_MODEL_404 = {
    "openai": {"error": {"message": "The model `gpt-9` does not exist or you do not have access to it.",
                         "type": "invalid_request_error", "param": None, "code": "model_not_found"}},
    "vllm": {"error": {"message": "The model `served-name` does not exist.", "type": "NotFoundError",
                       "param": "model", "code": 404}},
    "vllm-old": {"object": "error", "message": "The model `served-name` does not exist.", "type": "NotFoundError",
                 "param": None, "code": 404},
    "ollama": {"error": "model \"served-name\" not found, try pulling it first"},
    "anthropic": {"type": "error", "error": {"type": "not_found_error", "message": "model: served-name"}},
}
OTHER_404 = {
    "fastapi": {"detail": "Not Found"},
    "openai-path": {"error": {"message": "Invalid URL (POST /v1/chat/completion)", "type": "invalid_request_error",
                              "param": None, "code": None}},
    "anthropic-path": {"type": "error", "error": {"type": "not_found_error", "message": "Not Found"}},
}


@pytest.mark.parametrize("body", MISSING_MODEL_404.values(), ids=MISSING_MODEL_404.keys())
def test_a_404_that_says_the_model_does_not_exist(servers: Servers, make: Make, body: dict[str, Any]) -> None:
    up = servers.upstream(behaviour="status:404", error_body=body)
    err = call_error(servers, make(f"{{type: openai, url: {up.url}}}"))
    assert type(err) is UpstreamModelNotFound
    assert (err.status, err.code, err.fallback, err.retryable) == (404, "model_not_found", True, False)
    assert err.public == "the upstream does not serve the model"


@pytest.mark.parametrize("body", OTHER_404.values(), ids=OTHER_404.keys())
def test_a_404_that_names_no_model_stays_a_server_error(servers: Servers, make: Make, body: dict[str, Any]) -> None:
    up = servers.upstream(behaviour="status:404", error_body=body)
    err = call_error(servers, make(f"{{type: openai, url: {up.url}}}"))
    assert type(err) is UpstreamServerError
    assert (err.status, err.fallback, err.retryable) == (502, True, False)


def test_429_is_rate_limited_with_retry_after(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="status:429")
    err = call_error(servers, make(f"{{type: openai, url: {up.url}}}"))
    assert isinstance(err, UpstreamRateLimited)
    assert err.retry_after == 1.0
    assert err.headers() == [(b"retry-after", b"1")]


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_mean_the_gateways_credentials_failed(
    servers: Servers, make: Make, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    monkeypatch.setenv("NANOROUTE_TEST_UPSTREAM_KEY", "sk-wrong-secret")
    up = servers.upstream(behaviour=f"status:{status}")
    err = call_error(servers, make(f"{{type: openai, url: {up.url}, api_key_env: NANOROUTE_TEST_UPSTREAM_KEY}}"))
    assert isinstance(err, UpstreamAuthFailed)
    assert err.message == (f"upstream rejected the gateway's credentials with {status} "
                           "(is NANOROUTE_TEST_UPSTREAM_KEY set?)")
    assert b"sk-wrong-secret" not in err.envelope()
    assert err.status == 502


def test_openais_context_length_error(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="context")
    err = call_error(servers, make(f"{{type: openai, url: {up.url}}}"))
    assert isinstance(err, ContextLengthExceeded)
    assert "maximum context length is 10 tokens" in err.message
    assert (err.status, err.fallback) == (400, True)


def test_vllms_context_length_error(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="status:400", error_body=VLLM_CONTEXT)
    err = call_error(servers, make(f"{{type: vllm, urls: [{up.url}]}}"))
    assert isinstance(err, ContextLengthExceeded)
    assert "maximum context length is 2048 tokens" in err.message


def test_another_400_is_a_rejection_relayed_as_sent(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="status:400")
    err = call_error(servers, make(f"{{type: openai, url: {up.url}}}"))
    assert isinstance(err, UpstreamRejected)
    assert (err.status, err.fallback) == (400, False)
    assert orjson.loads(err.envelope()) == {
        "error": {"message": "fake 400", "type": "server_error", "param": None, "code": None}}


def test_a_rejection_in_vllms_shape_is_wrapped_in_an_envelope(servers: Servers, make: Make) -> None:
    body = {"object": "error", "message": "temperature must be non-negative", "type": "BadRequestError",
            "param": None, "code": 400}
    up = servers.upstream(behaviour="status:400", error_body=body)
    err = call_error(servers, make(f"{{type: vllm, urls: [{up.url}]}}"))
    assert isinstance(err, UpstreamRejected)
    assert orjson.loads(err.envelope()) == {"error": {
        "message": "temperature must be non-negative", "type": "invalid_request_error", "param": None, "code": None}}


def test_422_is_a_rejection_with_its_status(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="status:422")
    err = call_error(servers, make(f"{{type: openai, url: {up.url}}}"))
    assert isinstance(err, UpstreamRejected)
    assert err.status == 422


def test_a_200_that_is_not_json_is_malformed(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="garbage")
    err = call_error(servers, make(f"{{type: openai, url: {up.url}}}"))
    assert isinstance(err, UpstreamMalformed)
    assert err.status == 502


def test_no_answer_in_time_is_a_timeout(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="hang")
    err = call_error(servers, make(f"{{type: openai, url: {up.url}, timeouts: {{total_s: 0.2}}}}"))
    assert isinstance(err, UpstreamTimeout)
    assert err.status == 504


def test_stream_errors_before_the_first_byte_are_raised_by_stream(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="status:500")
    backend = make(f"{{type: openai, url: {up.url}}}")
    with pytest.raises(UpstreamServerError):
        read_stream(servers, backend, {**CHAT, "stream": True})


def test_a_stream_cut_midway_is_malformed(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="cut")
    backend = make(f"{{type: openai, url: {up.url}}}")
    with pytest.raises(UpstreamMalformed):
        read_stream(servers, backend, {**CHAT, "stream": True})


def test_a_stream_stalled_midway_times_out(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="stall_mid")
    backend = make(f"{{type: openai, url: {up.url}, timeouts: {{total_s: 0.3}}}}")
    with pytest.raises(UpstreamTimeout):
        read_stream(servers, backend, {**CHAT, "stream": True})

