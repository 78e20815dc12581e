"""Backends that speak OpenAI's HTTP API: OpenAI itself and any compatible server, vLLM included.

One aiohttp session (one connection pool) per backend, opened in the app's lifespan. Bodies go out as
the bytes they are; answers come back as bytes, parsed once only to check them and read usage.
Every failure is classified here, at the boundary, into the tree in `gateway.errors`.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from gateway.backends.base import Attempt, Reply
from gateway.config import schema
from gateway.errors import (
    ContextLengthExceeded,
    UpstreamAuthFailed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
)

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "maximum model length",
    "prompt is too long",
    "too many tokens",
)


class OpenAIBackend:
    """An OpenAI-compatible server at one or more base URLs (replicas are taken in turn)."""

    def __init__(self, name: str, spec: schema.OpenAIBackend | schema.VllmBackend) -> None:
        self.name = name
        self.spec = spec
        urls = spec.urls if isinstance(spec, schema.VllmBackend) else [spec.url]
        self._urls = itertools.cycle(urls)
        self._single = urls[0] if len(urls) == 1 else None
        self._timeout = aiohttp.ClientTimeout(total=spec.timeouts.total_s, sock_connect=spec.timeouts.connect_s)
        # Bodies are relayed as the bytes they are (auto_decompress=False), so ask for them uncompressed:
        # aiohttp would otherwise offer gzip, and OpenAI's servers take the offer.
        self._headers = {"content-type": "application/json", "accept-encoding": "identity", **spec.headers}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        key = _read_key(self.spec.api_key_env, self.spec.api_key_file)
        if key:
            self._headers["authorization"] = f"Bearer {key}"
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

    def _url(self, attempt: Attempt) -> str:
        return (self._single or next(self._urls)) + attempt.op.value

    async def call(self, attempt: Attempt) -> Reply:
        assert self._session is not None, "backend used before start()"
        headers = {**self._headers, "x-request-id": attempt.request_id}
        with self._translate(attempt):
            async with self._session.post(self._url(attempt), data=attempt.body, headers=headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise self._classify(attempt, resp.status, body, resp.headers)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            msg = "upstream answered 200 with a body that is not a JSON object"
            raise UpstreamMalformed(msg, model=attempt.model.name, backend=self.name)
        return Reply(body, parsed)

    async def stream(self, attempt: Attempt) -> _Stream:
        assert self._session is not None, "backend used before start()"
        headers = {**self._headers, "x-request-id": attempt.request_id}
        with self._translate(attempt):
            resp = await self._session.post(self._url(attempt), data=attempt.body, headers=headers)
            if resp.status != 200:
                body = await resp.read()
                resp.release()
                raise self._classify(attempt, resp.status, body, resp.headers)
        return _Stream(self, attempt, resp)

    @contextmanager
    def _translate(self, attempt: Attempt) -> Iterator[None]:
        """The one place where aiohttp's and asyncio's exceptions become the gateway's."""
        ids = {"model": attempt.model.name, "backend": self.name}
        try:
            yield
        except UpstreamError:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout("upstream did not answer in time", **ids) from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectError(f"cannot connect to upstream: {exc.os_error.strerror or exc}", **ids) from None
        except aiohttp.ServerDisconnectedError:
            raise UpstreamConnectError("upstream closed the connection before answering", **ids) from None
        except aiohttp.ClientPayloadError:
            raise UpstreamMalformed("upstream sent a truncated or invalid body", **ids) from None
        except aiohttp.ClientResponseError as exc:
            raise UpstreamMalformed(f"upstream sent an invalid HTTP response: {exc.message}", **ids) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamConnectError(f"connection to upstream failed: {type(exc).__name__}", **ids) from None

    def _classify(self, attempt: Attempt, status: int, body: bytes, headers: Any) -> UpstreamError:
        ids = {"model": attempt.model.name, "backend": self.name}
        detail = _error_message(body)
        if status == 429:
            return UpstreamRateLimited(f"upstream is rate limiting: {detail}", retry_after=_retry_after(headers), **ids)
        if status in (401, 403):
            hint = f" (is {self.spec.api_key_env} set?)" if self.spec.api_key_env else ""
            return UpstreamAuthFailed(f"upstream rejected the gateway's credentials with {status}{hint}", **ids)
        if status >= 500:
            return UpstreamServerError(f"upstream answered {status}: {detail}", **ids)
        if status in (400, 413, 422) and any(m in detail.lower() for m in _CONTEXT_MARKERS):
            return ContextLengthExceeded(f"the request does not fit the model's context window: {detail}", **ids)
        if 400 <= status < 500 and status != 404:
            return UpstreamRejected(f"upstream rejected the request with {status}: {detail}",
                                    status=status, body=_as_envelope(body, detail), **ids)
        # 404 (the upstream does not serve this model or path) and 1xx/3xx are the gateway's config's
        # problem, not the client's: another model may serve it.
        return UpstreamServerError(f"upstream answered {status}: {detail}", **ids)


class _Stream:
    """An open upstream SSE response; yields raw chunks as they arrive, translating mid-stream failures."""

    def __init__(self, backend: OpenAIBackend, attempt: Attempt, resp: aiohttp.ClientResponse) -> None:
        self._backend = backend
        self._attempt = attempt
        self._resp = resp

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with self._backend._translate(self._attempt):
            async for chunk in self._resp.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # Closing (not releasing) drops the connection, which is what cancels generation upstream
        # when the stream did not finish.
        if not self._resp.content.at_eof():
            self._resp.close()
        else:
            self._resp.release()


def _read_key(env: str | None, path: os.PathLike[str] | None) -> str | None:
    if path is not None:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    return os.environ.get(env) if env else None


def _error_message(body: bytes) -> str:
    """The upstream's own error message, shortened; OpenAI's, vLLM's and plain-text shapes."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("code")
            if msg:
                return str(msg)[:500]
        elif isinstance(err, str):
            return err[:500]
    return body[:200].decode("utf-8", "replace")


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
