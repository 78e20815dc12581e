"""Backends that speak OpenAI's HTTP API: `OpenAIBackend` (OpenAI, Azure OpenAI, any compatible server),
and the `Transport` it shares with the vLLM backend (`vllm.py`), which composes it too.

One aiohttp session (one connection pool) per backend, opened in the app's lifespan. Bodies go out as
the bytes they are; answers come back as bytes, parsed once only to check them and read usage.
Every failure is classified here, at the boundary, into the tree in `gateway.errors`: `_translate`
for what aiohttp and asyncio raise, `_classify` for what the upstream answered.

Time limits: `timeouts.connect_s` (aiohttp's socket connect), one timer per JSON call for the sooner of
`timeouts.total_s` and the request's deadline, and for streams `timeouts.ttft_s` until the first content
(see `stream.hold`), then `timeouts.idle_s` between chunks and the same hard limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson

from gateway.backends.base import Attempt, Operation, Reply, attempt_limit, read_key
from gateway.backends.replica import Replica
from gateway.backends.stream import ErrorEvent, NotEventStream, UpstreamStream, hold
from gateway.config import schema
from gateway.config.table import ModelRoute, RoutingTable
from gateway.errors import (
    ContentFiltered,
    ContextLengthExceeded,
    UpstreamAuthFailed,
    UpstreamConnectError,
    UpstreamCut,
    UpstreamError,
    UpstreamMalformed,
    UpstreamModelNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
)

# Lower-cased fragments of a context-window error's message or code: OpenAI ("This model's maximum
# context length is ...", code context_length_exceeded), vLLM ("... maximum context length ...",
# "Input prompt (N tokens) is too long and exceeds limit of M"), litellm ("ContextWindowExceededError"),
# Anthropic through compatible servers ("prompt is too long").
_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "contextwindowexceedederror",
    "context_window_exceeded",
    "maximum model length",
    "prompt is too long",
    "is too long and exceeds limit",
    "too many tokens",
)


# Azure OpenAI (code content_filter), OpenAI (content_policy_violation), litellm (ContentPolicyViolationError).
_FILTER_MARKERS = ("content_filter", "content_policy_violation", "contentpolicyviolationerror",
                   "content management policy")


MAX_ERROR_BYTES = 64 << 10
"""Of an error answer, only this much is read: its message is what the gateway uses."""
MAX_PROBE_BYTES = 16 << 20
"""Health checks and vLLM's /v1/models and /metrics."""


async def read_upto(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or its first `limit` bytes and one more when it is longer (the rest is not read, and the
    connection is dropped when the response is released)."""
    length = resp.content_length
    if length is not None and length <= limit:
        return await resp.read()
    parts: list[bytes] = []
    size = 0
    while size <= limit and (chunk := await resp.content.read(limit + 1 - size)):
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


class OpenAIBackend:
    """A server that speaks OpenAI's HTTP API at one base URL (OpenAI, Azure OpenAI, any compatible one)."""

    def __init__(self, name: str, spec: schema.OpenAIBackend | schema.AzureBackend) -> None:
        self.name = name
        self.transport = Transport(name, spec)
        self.replicas: tuple[Replica, ...] = (Replica(name, 0, spec.url),)
        self.stream_usage = spec.stream_usage
        openai = urlsplit(spec.url).hostname == "api.openai.com"
        self.native = native_apis(spec.native, (Operation.RESPONSES,) if openai else ())
        self._url = spec.url
        self._azure_version = spec.api_version if isinstance(spec, schema.AzureBackend) else None

    async def start(self) -> None:
        await self.transport.start(key_header="api-key" if self._azure_version is not None else "authorization")

    async def close(self) -> None:
        await self.transport.close()

    def configure(self, table: RoutingTable) -> None:
        return None  # nothing to set up per model

    def _endpoint(self, attempt: Attempt) -> str:
        if self._azure_version is not None:  # deployments by name; one endpoint
            return (f"{self._url}/openai/deployments/{attempt.model.upstream_name}{attempt.op.value}"
                    f"?api-version={self._azure_version}")
        return self._url + attempt.op.value

    async def call(self, attempt: Attempt) -> Reply:
        return await self.transport.call(self._endpoint(attempt), attempt)

    async def stream(self, attempt: Attempt) -> UpstreamStream:
        return await self.transport.stream(self._endpoint(attempt), attempt)

    def prefer(self, model: ModelRoute) -> list[int] | None:
        return None  # one replica

    async def probe(self, replica: int, path: str, timeout_s: float) -> bytes:
        return await self.transport.get(urljoin(self._url + "/", path), timeout_s)

    async def queue_length(self, replica: int, timeout_s: float) -> float | None:
        return None  # an OpenAI-compatible server does not say

    def describe(self) -> list[dict[str, Any]] | None:
        return None


def native_apis(configured: Sequence[str] | None, default: Iterable[Operation] = ()) -> frozenset[Operation]:
    """The APIs beyond chat completions a backend speaks (`Backend.native`): the config's `native` (names
    of operations), else the backend type's `default`."""
    if configured is None:
        return frozenset(default)
    return frozenset(Operation[name.upper()] for name in configured)


class Transport:
    """One backend's HTTP side, which the OpenAI and vLLM backends compose: one aiohttp pool, the backend's
    headers (its key among them) and timeouts. It posts an attempt's body to a URL as a JSON call or a
    stream, gets a URL for checks, and classifies every failure into the gateway's errors.

    `not_found`: for a 404, the error to raise instead of the usual one, or None (vLLM: an adapter the
    replica lost)."""

    def __init__(self, name: str, spec: schema.OpenAIBackend | schema.AzureBackend | schema.VllmBackend,
                 not_found: Callable[[Attempt], UpstreamError | None] | None = None) -> None:
        self.name = name
        self.spec = spec
        self._not_found = not_found
        t = spec.timeouts
        self._total_s, self._ttft_s, self._idle_s = t.total_s, t.ttft_s, t.idle_s
        # Our own timers bound each attempt (total, first token, idle, deadline); aiohttp bounds the connect.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect_s)
        # Bodies are relayed as the bytes they are (auto_decompress=False), so ask for them uncompressed:
        # aiohttp would otherwise offer gzip, and OpenAI's servers take the offer.
        self._headers = {"content-type": "application/json", "accept-encoding": "identity", **spec.headers}
        self._session: aiohttp.ClientSession | None = None
        self._max_bytes = spec.max_response_bytes

    async def start(self, *, key_header: str = "authorization") -> None:
        """Open the pool; the key goes in `key_header`: `authorization` (as a Bearer token), or `api-key`
        (Azure) or `x-api-key` (Anthropic) as it is."""
        key = read_key(self.spec.api_key_env, self.spec.api_key_file)
        if key:
            self._headers[key_header] = f"Bearer {key}" if key_header == "authorization" else key
        connector = aiohttp.TCPConnector(limit=self.spec.max_connections, keepalive_timeout=30, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,  # bodies are relayed as bytes: never ask for or undo a content encoding
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, url: str, attempt: Attempt) -> Reply:
        """POST the attempt's body to `url`; the whole JSON answer, or the failure classified."""
        assert self._session is not None, "backend used before start()"
        headers = {**self._headers, "x-request-id": attempt.request_id, **dict(attempt.headers)}
        limit, phase = attempt_limit(asyncio.get_running_loop().time(), self._total_s, attempt.deadline)
        try:
            async with asyncio.timeout_at(limit):
                with self._translate(attempt):
                    async with self._session.post(url, data=attempt.body, headers=headers,
                                                  allow_redirects=False) as resp:
                        if resp.status != 200:
                            body = await read_upto(resp, MAX_ERROR_BYTES)
                            raise self._classify(attempt, resp.status, body, resp.headers)
                        body = await read_upto(resp, self._max_bytes)
                        if len(body) > self._max_bytes:
                            raise UpstreamMalformed(f"upstream answered more than {self._max_bytes} bytes "
                                                    "(max_response_bytes)", model=attempt.model.name,
                                                    backend=self.name)
        except TimeoutError:  # only our timer's: aiohttp's own are translated inside
            raise self._timed_out(attempt, phase) from None
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            msg = "upstream answered 200 with a body that is not a JSON object"
            raise UpstreamMalformed(msg, model=attempt.model.name, backend=self.name)
        if "error" in parsed and parsed["error"] is not None and "choices" not in parsed and "data" not in parsed:
            raise self._classify_event(attempt, parsed, "in a 200 answer")  # some servers say 200 and mean 5xx
        return Reply(body, parsed)

    async def stream(self, url: str, attempt: Attempt) -> UpstreamStream:
        """POST the attempt's body to `url` for a stream; returns once the upstream has sent its first content,
        what fails before that is raised here."""
        assert self._session is not None, "backend used before start()"
        headers = {**self._headers, "x-request-id": attempt.request_id, **dict(attempt.headers)}
        start = asyncio.get_running_loop().time()
        hard, hard_phase = attempt_limit(start, self._total_s, attempt.deadline)
        first, first_phase = (start + self._ttft_s, "first_token")
        if hard <= first:
            first, first_phase = hard, hard_phase
        # Its timer bounds the opening too (the first-token limit), then the stream's idle time and hard limit.
        stream = UpstreamStream(first=first, idle_s=self._idle_s, hard=hard, hard_phase=hard_phase,
                                model=attempt.model.name, backend=self.name, translate=_translated)
        resp: aiohttp.ClientResponse | None = None
        try:
            with self._translate(attempt):
                resp = await self._session.post(url, data=attempt.body, headers=headers, allow_redirects=False)
                if resp.status != 200:
                    body = await read_upto(resp, MAX_ERROR_BYTES)
                    raise self._classify(attempt, resp.status, body, resp.headers)
                held = await hold(resp.content)
        except BaseException as exc:
            if resp is not None:
                resp.close()
            if stream.stop_opening(exc):
                raise self._timed_out(attempt, first_phase) from None
            raise
        stream.opened(resp, held)
        return stream

    async def get(self, url: str, timeout_s: float) -> bytes:
        """GET `url` (a health check, vLLM's model list or metrics): its body, or an UpstreamError."""
        assert self._session is not None, "backend used before start()"
        ids: dict[str, Any] = {"model": "", "backend": self.name}
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session.get(url, headers=self._headers, allow_redirects=False) as resp:
                    body = await read_upto(resp, MAX_PROBE_BYTES)
        except TimeoutError:
            raise UpstreamTimeout(f"health check {url} got no answer within {timeout_s:g} s", **ids) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _translated(exc, "", self.name) from None
        if resp.status >= 400:
            raise UpstreamServerError(f"health check {url} answered {resp.status}", **ids)
        return body

    def _timed_out(self, attempt: Attempt, phase: str) -> UpstreamTimeout:
        why = {
            "first_token": f"upstream sent no content in time (timeouts.ttft_s: {self._ttft_s:g} s)",
            "total": "upstream did not answer in time",  # within timeouts.total_s
            "deadline": "the request's deadline ran out (reliability.deadline_ms)",
        }[phase]
        return UpstreamTimeout(why, model=attempt.model.name, backend=self.name, phase=phase)

    async def post_json(self, url: str, payload: dict[str, str]) -> tuple[int, bytes]:
        """POST a small JSON payload (vLLM's adapter API): the status and the start of the body. Raises
        aiohttp's and the OS's errors for the caller to word."""
        assert self._session is not None, "backend used before start()"
        async with self._session.post(url, data=orjson.dumps(payload), headers=self._headers,
                                      allow_redirects=False) as resp:
            return resp.status, await read_upto(resp, MAX_ERROR_BYTES)

    def _translate(self, attempt: Attempt) -> _Translate:
        """The one place where aiohttp's exceptions, and what is not SSE, become the gateway's."""
        return _Translate(self, attempt)

    def _classify(self, attempt: Attempt, status: int, body: bytes, headers: Any) -> UpstreamError:
        ids: dict[str, Any] = {"model": attempt.model.name, "backend": self.name}
        detail, code = _error_info(body)
        if status == 429:
            return UpstreamRateLimited(f"upstream is rate limiting: {detail}", retry_after=_retry_after(headers), **ids)
        if status in (401, 403):
            hint = f" (is {self.spec.api_key_env} set?)" if self.spec.api_key_env else ""
            return UpstreamAuthFailed(f"upstream rejected the gateway's credentials with {status}{hint}", **ids)
        if status >= 500:
            return UpstreamServerError(f"upstream answered {status}: {detail}", **ids)
        said = f"{detail} {code}".lower()
        if status in (400, 413, 422) and any(m in said for m in _CONTEXT_MARKERS):
            return ContextLengthExceeded(f"the request does not fit the model's context window: {detail}", **ids)
        if 400 <= status < 500 and any(m in said for m in _FILTER_MARKERS):
            return ContentFiltered(f"the provider's content filter refused the request: {detail}",
                                   status=status, body=_as_envelope(body, detail), **ids)
        if status == 404 and self._not_found is not None and (instead := self._not_found(attempt)) is not None:
            return instead
        if status == 404 and _names_a_missing_model(said):
            return UpstreamModelNotFound(f"upstream does not serve the model: {detail}", **ids)
        if 400 <= status < 500 and status != 404:
            return UpstreamRejected(f"upstream rejected the request with {status}: {detail}",
                                    status=status, body=_as_envelope(body, detail), **ids)
        # Another 404 (a wrong base URL or path) and 1xx/3xx are the gateway's config's problem, not the
        # client's: another model may serve it, but asking this one again will not help.
        failure = UpstreamServerError(f"upstream answered {status}: {detail}", **ids)
        failure.retryable = False
        return failure

    def _classify_event(self, attempt: Attempt, obj: dict[str, Any],
                        where: str = "in the stream, before any content") -> UpstreamError:
        """An error inside a 200: an error event before any content (vLLM and OpenAI send errors inside a
        200 stream), or an error body with status 200. Its `code`, when a status, stands for the status."""
        body = orjson.dumps(obj)
        err = obj.get("error")
        status = err.get("code") if isinstance(err, dict) else None
        status = status if isinstance(status, int) and 400 <= status < 600 else 500
        failure = self._classify(attempt, status, body, {})
        failure.message = f"{where}: {failure.message}"
        return failure


class _Translate:
    """`Transport._translate`: a class rather than a generator-based context manager, since it is
    entered on every request and costs a third as much."""

    __slots__ = ("_attempt", "_backend")

    def __init__(self, backend: Transport, attempt: Attempt) -> None:
        self._backend, self._attempt = backend, attempt

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None or isinstance(exc, UpstreamError):
            return
        backend, attempt = self._backend, self._attempt
        if isinstance(exc, NotEventStream):
            raise UpstreamMalformed(str(exc), model=attempt.model.name, backend=backend.name) from None
        if isinstance(exc, ErrorEvent):
            raise backend._classify_event(attempt, exc.obj) from None
        if isinstance(exc, aiohttp.ClientError | OSError):
            raise _translated(exc, attempt.model.name, backend.name) from None


def _translated(exc: BaseException, model: str, backend: str) -> UpstreamError:
    """aiohttp's and the OS's exceptions as the gateway's."""
    ids: dict[str, Any] = {"model": model, "backend": backend}
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout("upstream did not accept the connection in time (timeouts.connect_s)",
                               phase="connect", **ids)
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout("upstream did not answer in time", **ids)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamConnectError(f"cannot connect to upstream: {exc.os_error.strerror or exc}", **ids)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamConnectError("upstream closed the connection before answering", **ids)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamCut("upstream's body ended before its end (the connection was cut)", **ids)
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamMalformed(f"upstream sent an invalid HTTP response: {exc.message}", **ids)
    return UpstreamConnectError(f"connection to upstream failed: {type(exc).__name__}", **ids)



def _error_info(body: bytes) -> tuple[str, str]:
    """The upstream's own error message, shortened, and its code; OpenAI's, vLLM's, litellm's and plain text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip() or "(empty body)", ""
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            code = err.get("code") or err.get("type") or ""
            msg = err.get("message") or err.get("detail") or err.get("code")
            if msg:
                return str(msg)[:500], str(code)
        elif isinstance(err, str):
            return err[:500], ""
    return body[:200].decode("utf-8", "replace"), ""


def _names_a_missing_model(said: str) -> bool:
    """A 404's lower-cased message and code say the model does not exist: OpenAI's code model_not_found,
    vLLM's "The model `x` does not exist.", Ollama's 'model "x" not found', Anthropic's not_found_error
    "model: x", litellm's NotFoundError text. A 404 that names no model (a wrong path) is not one."""
    return "model_not_found" in said or ("model" in said and any(
        m in said for m in ("does not exist", "not found", "not_found")))


def _as_envelope(body: bytes, message: str) -> bytes:
    """Relay an OpenAI envelope as is; wrap anything else (vLLM's older shape, plain text) into one."""
    try:
        data = orjson.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return body
    except orjson.JSONDecodeError:
        pass
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}})


def _retry_after(headers: Any) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
