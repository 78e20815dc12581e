"""gateway/backends/openai.py: how failures are classified, beyond the basics in test_openai.py: the
shapes of context-window and content-filter errors across providers, timeouts by phase, health probes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.backends.base import Attempt, Operation
from gateway.backends.openai import OpenAIBackend
from gateway.config.loader import load_text
from gateway.errors import (
    ContentFiltered,
    ContextLengthExceeded,
    UpstreamError,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
)
from tests.fakes.servers import Servers, free_port
from tests.unit.backends.conftest import Make

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
def attempt(body: dict[str, Any] = CHAT, deadline_in: float | None = None) -> Attempt:
    table = load_text("backends:\n  b: {type: openai, url: http://x}\nmodels:\n  m: {backend: b}\n")
    deadline = None if deadline_in is None else asyncio.get_running_loop().time() + deadline_in
    return Attempt(Operation.CHAT, table.models["m"], json.dumps(body).encode(), "r", None, deadline)


def error(servers: Servers, backend: OpenAIBackend, *, stream: bool = False,
          deadline_in: float | None = None) -> UpstreamError:
    async def run() -> None:
        a = attempt({**CHAT, "stream": stream}, deadline_in)
        if stream:
            s = await backend.stream(a)
            await s.aclose()
        else:
            await backend.call(a)

    with pytest.raises(UpstreamError) as info:
        servers.loop.run(run())
    return info.value


LITELLM_CONTEXT = {"error": {"message": "litellm.ContextWindowExceededError: litellm.BadRequestError: "
                             "ContextWindowExceededError: OpenAIException - This model's maximum context length "
                             "is 128000 tokens.", "type": None, "param": None, "code": "400"}}
VLLM_PROMPT_TOO_LONG = {"object": "error", "message": "Input prompt (3000 tokens) is too long and exceeds limit "
                        "of 2048", "type": "BadRequestError", "param": None, "code": 400}
ANTHROPIC_STYLE = {"error": {"message": "prompt is too long: 201234 tokens > 200000 maximum",
                             "type": "invalid_request_error"}}


@pytest.mark.parametrize("body", [LITELLM_CONTEXT, VLLM_PROMPT_TOO_LONG, ANTHROPIC_STYLE],
                         ids=["litellm", "vllm-prompt", "anthropic"])
def test_context_length_in_each_providers_shape(servers: Servers, make: Make, body: dict[str, Any]) -> None:
    up = servers.upstream(behaviour="status:400", error_body=body)
    err = error(servers, make(up.url))
    assert isinstance(err, ContextLengthExceeded)
    assert (err.fallback, err.retryable, err.unhealthy) == (True, False, False)


AZURE_FILTER = {"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's "
                          "content management policy.", "type": None, "param": "prompt", "code": "content_filter",
                          "status": 400}}
OPENAI_POLICY = {"error": {"message": "Your request was rejected as a result of our safety system.",
                           "type": "invalid_request_error", "param": None, "code": "content_policy_violation"}}
LITELLM_FILTER = {"error": {"message": "litellm.ContentPolicyViolationError: litellm.BadRequestError: blocked",
                            "type": None, "param": None, "code": "400"}}


@pytest.mark.parametrize("body", [AZURE_FILTER, OPENAI_POLICY, LITELLM_FILTER], ids=["azure", "openai", "litellm"])
def test_content_filter_is_relayed_and_ends_the_chain(servers: Servers, make: Make, body: dict[str, Any]) -> None:
    up = servers.upstream(behaviour="status:400", error_body=body)
    err = error(servers, make(up.url))
    assert isinstance(err, ContentFiltered) and isinstance(err, UpstreamRejected)
    assert (err.status, err.kind, err.fallback, err.retryable) == (400, "content_filter", False, False)
    assert json.loads(err.envelope()) == body


def test_404_moves_on_but_is_not_retried(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="status:404")
    err = error(servers, make(up.url))
    assert type(err) is UpstreamServerError
    assert (err.fallback, err.retryable) == (True, False)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_may_be_retried(servers: Servers, make: Make, status: int) -> None:
    up = servers.upstream(behaviour=f"status:{status}")
    assert error(servers, make(up.url)).retryable


def test_timeouts_say_which_limit(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="hang")
    backend = make(up.url, ", timeouts: {total_s: 0.3, ttft_s: 0.2}")
    total = error(servers, backend)
    assert isinstance(total, UpstreamTimeout) and (total.phase, total.retryable) == ("total", False)
    first = error(servers, backend, stream=True)
    assert isinstance(first, UpstreamTimeout) and first.phase == "first_token"
    deadline = error(servers, backend, deadline_in=0.1)
    assert isinstance(deadline, UpstreamTimeout) and deadline.phase == "deadline"
    assert (deadline.fallback, deadline.unhealthy) == (False, False)


def test_probe_passes_on_2xx_and_raises_otherwise(servers: Servers, make: Make) -> None:
    up = servers.upstream()
    backend = make(up.url)
    assert b'"object": "list"' in servers.loop.run(backend.probe(0, "models", 1.0))
    servers.loop.run(backend.probe(0, "/health", 1.0))
    assert up.health_checks == 1
    up.health_status = 503
    with pytest.raises(UpstreamServerError, match=r"health check .*/health answered 503"):
        servers.loop.run(backend.probe(0, "/health", 1.0))
    with pytest.raises(UpstreamError, match="cannot connect"):
        servers.loop.run(make(f"http://127.0.0.1:{free_port()}/v1").probe(0, "models", 1.0))


def test_an_error_body_with_status_200_is_classified_not_relayed(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="status:200", error_body={"error": {"message": "model overloaded", "code": 503}})
    err = error(servers, make(up.url))
    assert type(err) is UpstreamServerError
    assert err.message == "in a 200 answer: upstream answered 503: model overloaded"
