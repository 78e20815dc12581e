"""Providers with their own protocols (Anthropic, Gemini, Bedrock, Cohere...), through litellm's async API.

litellm translates OpenAI-shaped requests into each provider's protocol and the answers back, so on the
gateway's side everything stays OpenAI-shaped (tools and tool calls, JSON mode, usage, streams).
litellm is imported only when a `litellm` backend starts: a gateway without one never loads it. It runs
offline and quiet: its bundled cost map (no fetch at import), no telemetry, no callbacks of its own.
Its exceptions are translated here, at the boundary, into the gateway's error classes, so the fallback
chain treats every provider alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.backends.base import Attempt, Operation, Reply, ReplyStream, attempt_limit, read_key
from gateway.backends.openai import Transport, native_apis
from gateway.backends.replica import Replica
from gateway.config import schema
from gateway.config.table import ModelRoute, RoutingTable

# Much the same classes as openai.py imports: every backend words its failures in the one tree of errors.py.
from gateway.errors import (
    ContentFiltered,
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
    error_body,
)

# The request fields handed to litellm, per operation: OpenAI's own, and the few provider fields litellm
# maps (`top_k`, Anthropic's `thinking`). Nothing else: litellm also takes `api_base`, `base_url`,
# `api_key`, `extra_headers`, `custom_llm_provider`, cloud credentials and prices as keyword arguments,
# and a client that could set those would send the provider's key, or the request, wherever it liked.
_COMMON = frozenset({"user", "stream_options"})
_FIELDS = {
    Operation.CHAT: _COMMON | {
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "modalities", "n", "parallel_tool_calls", "prediction",
        "presence_penalty", "prompt_cache_key", "reasoning_effort", "response_format", "safety_identifier", "seed",
        "service_tier", "stop", "temperature", "thinking", "tool_choice", "tools", "top_k", "top_logprobs", "top_p",
        "verbosity", "web_search_options"},
    Operation.COMPLETIONS: _COMMON | {
        "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n", "presence_penalty",
        "seed", "stop", "suffix", "temperature", "top_p"},
    Operation.EMBEDDINGS: _COMMON | {"dimensions", "encoding_format"},
}


def _import_litellm() -> Any:
    # Before the import: litellm reads these when it loads.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # its bundled prices; no fetch
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.success_callback = []
    litellm.failure_callback = []
    litellm.callbacks = []
    return litellm


class LitellmBackend:
    stream_usage = True

    def __init__(self, name: str, spec: schema.LitellmBackend) -> None:
        self.name = name
        self.spec = spec
        self.native = native_apis(spec.native, (Operation.MESSAGES,) if spec.provider == "anthropic" else ())
        self.replicas: tuple[Replica, ...] = (Replica(name, 0, f"litellm:{spec.provider}"),)
        """One: the provider's endpoint."""
        self._litellm: Any = None
        self._key: str | None = None
        self._messages = _messages_transport(name, spec) if self.native else None
        """Anthropic's Messages API, called over HTTP as the client's request is (not through litellm)."""
        self._ttft_s, self._idle_s, self._total_s = spec.timeouts.ttft_s, spec.timeouts.idle_s, spec.timeouts.total_s

    async def start(self) -> None:
        self._litellm = await asyncio.to_thread(_import_litellm)  # a slow import: keep the loop free
        self._key = read_key(self.spec.api_key_env, self.spec.api_key_file)
        if self._messages is not None:
            await self._messages.start(key_header="x-api-key")

    async def close(self) -> None:
        if self._messages is not None:
            await self._messages.close()
        # litellm's HTTP clients are its own, cached process-wide and shared by every litellm backend;
        # closing them here would break the others (its aiohttp session is not re-created), so they
        # live as long as the process.
        return None

    def configure(self, table: RoutingTable) -> None:
        return None  # nothing to set up per model

    def _kwargs(self, attempt: Attempt) -> dict[str, Any]:
        body = orjson.loads(attempt.body)
        fields = _FIELDS[attempt.op]
        kwargs = {k: v for k, v in body.items() if k in fields}
        kwargs.update(self.spec.settings)
        kwargs["model"] = f"{self.spec.provider}/{attempt.model.upstream_name}"
        kwargs.setdefault("drop_params", True)  # OpenAI fields a provider lacks (e.g. seed) are dropped
        kwargs["api_key"] = self._key  # None too: litellm then reads the provider's own variable, never the body
        if self.spec.url:
            kwargs["api_base"] = self.spec.url
        kwargs["timeout"] = self._total_s
        kwargs["num_retries"] = 0  # retries are the gateway's (docs/reliability.md)
        if attempt.op is Operation.CHAT:
            kwargs["messages"] = body["messages"]
            if attempt.headers:  # the trace's `traceparent` (gateway.tracing); litellm takes headers for chats only
                kwargs["extra_headers"] = {**(kwargs.get("extra_headers") or {}), **dict(attempt.headers)}
        elif attempt.op is Operation.COMPLETIONS:
            kwargs["prompt"] = body["prompt"]
        else:
            kwargs["input"] = body["input"]
        return kwargs

    async def call(self, attempt: Attempt) -> Reply:
        if attempt.op is Operation.MESSAGES and self._messages is not None:
            return await self._messages.call(self._messages_url, attempt)
        lit = self._litellm
        fn = {Operation.CHAT: lit.acompletion, Operation.COMPLETIONS: lit.atext_completion,
              Operation.EMBEDDINGS: lit.aembedding}[attempt.op]
        limit, phase = attempt_limit(asyncio.get_running_loop().time(), self._total_s, attempt.deadline)
        try:
            async with asyncio.timeout_at(limit):
                response = await fn(**self._kwargs(attempt))
        except TimeoutError:
            raise self._timeout(attempt, phase) from None
        except Exception as exc:
            raise self._translate(exc, attempt) from None
        try:
            body = orjson.dumps(response.model_dump(exclude_none=False))
        except (AttributeError, TypeError) as exc:
            raise UpstreamMalformed(f"litellm returned an answer that cannot be encoded: {exc}",
                                    model=attempt.model.name, backend=self.name) from None
        parsed = orjson.loads(body)
        return Reply(body, parsed)

    async def stream(self, attempt: Attempt) -> ReplyStream:
        """Returns once the provider sent its first content, like every backend's `stream()`."""
        if attempt.op is Operation.MESSAGES and self._messages is not None:
            return await self._messages.stream(self._messages_url, attempt)
        if attempt.op is Operation.EMBEDDINGS:
            body = error_body("Embeddings cannot be streamed", "invalid_request_error")
            raise UpstreamRejected("embeddings cannot be streamed", model=attempt.model.name, backend=self.name,
                                   status=400, body=body)
        lit = self._litellm
        fn = lit.acompletion if attempt.op is Operation.CHAT else lit.atext_completion
        hard, hard_phase = attempt_limit(asyncio.get_running_loop().time(), self._total_s, attempt.deadline)
        loop = asyncio.get_running_loop()
        first = min(hard, loop.time() + self._ttft_s)
        first_phase = "first_token" if first < hard else hard_phase
        try:
            async with asyncio.timeout_at(first):
                chunks = await fn(stream=True, **self._kwargs(attempt))
                iterator = chunks.__aiter__()
                held: list[bytes] = []
                while True:
                    chunk = await iterator.__anext__()
                    data = orjson.dumps(chunk.model_dump(exclude_none=True))
                    held.append(b"data: " + data + b"\n\n")
                    if _has_content(chunk):
                        break
        except TimeoutError:
            raise self._timeout(attempt, first_phase) from None
        except StopAsyncIteration:
            raise UpstreamMalformed("the provider ended the stream before any content",
                                    model=attempt.model.name, backend=self.name) from None
        except Exception as exc:
            raise self._translate(exc, attempt) from None
        return _LitellmStream(self, attempt, iterator, b"".join(held), hard, hard_phase)

    @property
    def _messages_url(self) -> str:
        return (self.spec.url or ANTHROPIC_URL) + "/v1/messages"

    def prefer(self, model: ModelRoute) -> list[int] | None:
        return None  # one provider endpoint

    async def probe(self, replica: int, path: str, timeout_s: float) -> None:
        return None  # hosted providers have no health endpoint; attempts feed the circuit breaker

    async def queue_length(self, replica: int, timeout_s: float) -> float | None:
        return None  # a provider does not say

    def describe(self) -> list[dict[str, Any]] | None:
        return None

    def _timeout(self, attempt: Attempt, phase: str) -> UpstreamTimeout:
        why = {"first_token": f"the provider sent no content in time (timeouts.ttft_s: {self._ttft_s:g} s)",
               "idle": f"the provider stalled in the middle of the stream (timeouts.idle_s: {self._idle_s:g} s)",
               "deadline": "the request's deadline ran out (reliability.deadline_ms)"}.get(
            phase, "the provider did not answer in time (timeouts.total_s)")
        return UpstreamTimeout(why, model=attempt.model.name, backend=self.name, phase=phase)

    def _translate(self, exc: Exception, attempt: Attempt) -> UpstreamError:
        """The one place where litellm's exceptions become the gateway's."""
        if isinstance(exc, UpstreamError):
            return exc
        lit = self._litellm
        ids: dict[str, Any] = {"model": attempt.model.name, "backend": self.name}
        msg = _short(getattr(exc, "message", None) or str(exc))
        status = getattr(exc, "status_code", None)
        if isinstance(exc, lit.ContextWindowExceededError):
            return ContextLengthExceeded(f"the request does not fit the model's context window: {msg}", **ids)
        if isinstance(exc, lit.ContentPolicyViolationError):
            body = error_body(msg, "invalid_request_error", "content_filter")
            return ContentFiltered(f"the provider's content filter refused the request: {msg}",
                                   status=status if isinstance(status, int) and 400 <= status < 500 else 400,
                                   body=body, **ids)
        if isinstance(exc, lit.RateLimitError):
            return UpstreamRateLimited(f"the provider is rate limiting: {msg}", retry_after=_retry_after(exc), **ids)
        if isinstance(exc, lit.AuthenticationError | lit.PermissionDeniedError):
            hint = f" (is {self.spec.api_key_env} set?)" if self.spec.api_key_env else ""
            return UpstreamAuthFailed(f"the provider rejected the gateway's credentials{hint}", **ids)
        if isinstance(exc, lit.NotFoundError):  # litellm's word for a 404: the provider has no such model
            return UpstreamModelNotFound(f"the provider does not serve the model: {msg}", **ids)
        if isinstance(exc, lit.Timeout):
            return UpstreamTimeout(f"the provider did not answer in time: {msg}", **ids)
        if isinstance(exc, lit.APIConnectionError):
            return UpstreamConnectError(f"cannot reach the provider: {msg}", **ids)
        if isinstance(exc, lit.BadRequestError | lit.UnprocessableEntityError | lit.UnsupportedParamsError):
            code = status if isinstance(status, int) and 400 <= status < 500 else 400
            return UpstreamRejected(f"the provider rejected the request with {code}: {msg}", status=code,
                                    body=error_body(msg, "invalid_request_error"), **ids)
        if isinstance(status, int) and status < 500 and status != 404:
            return UpstreamRejected(f"the provider rejected the request with {status}: {msg}", status=status,
                                    body=error_body(msg, "invalid_request_error"), **ids)
        return UpstreamServerError(f"the provider failed ({status or type(exc).__name__}): {msg}", **ids)


class _LitellmStream:
    """The rest of a litellm stream as OpenAI server-sent events, with the same bounded waits."""

    def __init__(self, backend: LitellmBackend, attempt: Attempt, iterator: AsyncIterator[Any], held: bytes,
                 hard: float, hard_phase: str) -> None:
        self._backend, self._attempt, self._iterator = backend, attempt, iterator
        self._held = held
        self._hard, self._hard_phase = hard, hard_phase
        self._done = False

    def __aiter__(self) -> _LitellmStream:
        return self

    async def __anext__(self) -> bytes:
        if self._held:
            held, self._held = self._held, b""
            return held
        if self._done:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        idle = loop.time() + self._backend._idle_s
        limit, phase = (idle, "idle") if idle < self._hard else (self._hard, self._hard_phase)
        try:
            async with asyncio.timeout_at(limit):
                chunk = await self._iterator.__anext__()
        except StopAsyncIteration:
            self._done = True
            return b"data: [DONE]\n\n"
        except TimeoutError:
            raise self._backend._timeout(self._attempt, phase) from None
        except Exception as exc:
            raise self._backend._translate(exc, self._attempt) from None
        return b"data: " + orjson.dumps(chunk.model_dump(exclude_none=True)) + b"\n\n"

    async def aclose(self) -> None:
        closer = getattr(self._iterator, "aclose", None)
        if closer is not None and not self._done:
            with contextlib.suppress(Exception):  # closing a provider stream early must not fail the request
                await closer()


ANTHROPIC_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
"""The Messages API's version the gateway's own calls (a breaker's check) send; a client's request is
sent with the client's `anthropic-version`."""


def _messages_transport(name: str, spec: schema.LitellmBackend) -> Transport:
    """An HTTP transport for Anthropic's own API, with the backend's key, timeouts and address: the same
    pool, limits and classification of failures as every OpenAI-compatible backend's."""
    http = schema.OpenAIBackend(type="openai", url=spec.url or ANTHROPIC_URL, api_key_env=spec.api_key_env,
                                api_key_file=spec.api_key_file, timeouts=spec.timeouts,
                                headers={"anthropic-version": ANTHROPIC_VERSION})  # a client's own replaces it
    return Transport(name, http)


def _has_content(chunk: Any) -> bool:
    if getattr(chunk, "usage", None) is not None and not getattr(chunk, "choices", None):
        return True
    for choice in getattr(chunk, "choices", None) or ():
        if getattr(choice, "finish_reason", None) or getattr(choice, "text", None):
            return True
        delta = getattr(choice, "delta", None)
        if delta is not None and (getattr(delta, "content", None) or getattr(delta, "tool_calls", None)):
            return True
    return False


def _retry_after(exc: Exception) -> float | None:
    """The provider's Retry-After: litellm keeps the response headers on the exception."""
    for headers in (getattr(exc, "litellm_response_headers", None), getattr(exc, "headers", None),
                    getattr(getattr(exc, "response", None), "headers", None)):
        value = headers.get("retry-after") if headers is not None else None
        if value is not None:
            try:
                return float(value)
            except ValueError:
                return None
    return None


# litellm puts its own class names before the provider's message: "litellm.BadRequestError:
# AnthropicException - {...}". The client is told the provider's words, not the library's.
_LIBRARY_PREFIX = re.compile(r"^(?:litellm\.\w+:\s*)?(?:\w+Exception\s*-\s*)?")


def _short(text: str) -> str:
    return _LIBRARY_PREFIX.sub("", " ".join(text.split()))[:300]
