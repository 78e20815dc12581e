"""Every error Nanoroute raises, the HTTP status each maps to, and the OpenAI error envelope.

The tree::

    NanorouteError                      base; carries status, type, code, param
    ├── ConfigError                     a config file is invalid (never reaches a client)
    ├── ClientError                     the request itself is wrong; no upstream is tried
    │   ├── InvalidRequest              400 malformed JSON, missing or mistyped fields
    │   ├── AuthenticationFailed        401 missing or unknown API key
    │   ├── PermissionDenied            403 the key may not do this
    │   ├── NotFound                    404 unknown path or disabled endpoint
    │   │   └── ModelNotFound           404 no policy matches and no catalog model has that name
    │   └── PayloadTooLarge             413 body over the configured limit
    └── UpstreamError                   one attempt at one model failed; `fallback` says if another model may help
        ├── UpstreamConnectError        503 connection refused, reset or DNS failure before a response
        ├── UpstreamTimeout             504 no (complete) answer in time
        ├── UpstreamRateLimited         429 from the upstream; `retry_after` when it said
        ├── UpstreamServerError         502 the upstream answered 5xx
        ├── UpstreamMalformed           502 the upstream answered something that is not what the protocol says
        ├── UpstreamAuthFailed          502 the upstream rejected the gateway's own credentials
        ├── ContextLengthExceeded       400 the prompt does not fit this model; a larger one may take it
        └── UpstreamRejected            4xx the upstream refused the request as such; relayed as it answered
    AllAttemptsFailed                   every model in the chain failed; keeps each attempt's error in order

Foreign exceptions (aiohttp, asyncio, litellm) are translated into this tree only at the backend boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson


class NanorouteError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> list[tuple[bytes, bytes]]:
        return []

    def envelope(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)


class ConfigError(NanorouteError):
    """A config file is invalid. `problems` lists each as (path inside the file, what was expected)."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = [f"{source}: {len(self.problems)} problem(s)"]
        lines += [f"  {path or '<top>'}: {why}" for path, why in self.problems]
        super().__init__("\n".join(lines))


class ClientError(NanorouteError):
    status = 400
    type = "invalid_request_error"


class InvalidRequest(ClientError):
    status = 400


class AuthenticationFailed(ClientError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ClientError):
    status = 403
    type = "permission_error"


class NotFound(ClientError):
    status = 404
    type = "not_found_error"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist: no policy matches it and it is not in the catalog",
            param="model",
        )


class PayloadTooLarge(ClientError):
    status = 413
    code = "request_too_large"


class UpstreamError(NanorouteError):
    """One attempt at one model failed. `fallback` is True when another attempt may succeed."""

    status = 502
    type = "upstream_error"
    fallback = True

    def __init__(self, message: str, *, model: str = "", backend: str = "") -> None:
        super().__init__(message)
        self.model = model
        self.backend = backend

    @property
    def kind(self) -> str:
        """A short, fixed name for logs, headers and metric labels."""
        return _KIND[type(self)]


class UpstreamConnectError(UpstreamError):
    status = 503
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamRateLimited(UpstreamError):
    status = 429
    type = "rate_limit_error"
    code = "upstream_rate_limited"

    def __init__(self, message: str, *, model: str = "", backend: str = "", retry_after: float | None = None):
        super().__init__(message, model=model, backend=backend)
        self.retry_after = retry_after

    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.retry_after is None:
            return []
        return [(b"retry-after", str(max(1, round(self.retry_after))).encode())]


class UpstreamServerError(UpstreamError):
    code = "upstream_server_error"


class UpstreamMalformed(UpstreamError):
    code = "upstream_malformed_response"


class UpstreamAuthFailed(UpstreamError):
    code = "upstream_auth_failed"


class ContextLengthExceeded(UpstreamError):
    status = 400
    type = "invalid_request_error"
    code = "context_length_exceeded"


class UpstreamRejected(UpstreamError):
    """The upstream refused the request itself (a 4xx other than the ones above); no other model is tried.

    The upstream's own status and body are relayed, since they tell the client what to fix.
    """

    fallback = False

    def __init__(self, message: str, *, model: str = "", backend: str = "", status: int, body: bytes):
        super().__init__(message, model=model, backend=backend)
        self.status = status
        self.body = body

    def envelope(self) -> bytes:
        return self.body


_KIND: dict[type[UpstreamError], str] = {
    UpstreamError: "error",
    UpstreamConnectError: "connect",
    UpstreamTimeout: "timeout",
    UpstreamRateLimited: "rate_limited",
    UpstreamServerError: "server_error",
    UpstreamMalformed: "malformed",
    UpstreamAuthFailed: "auth",
    ContextLengthExceeded: "context_length",
    UpstreamRejected: "rejected",
}


class AllAttemptsFailed(NanorouteError):
    """Every model in the chain failed. The status follows the last error, the message names them all."""

    type = "upstream_error"

    def __init__(self, policy: str, errors: Sequence[UpstreamError]) -> None:
        self.errors = tuple(errors)
        last = self.errors[-1]
        self.status = last.status
        self.code = last.code
        self.type = last.type
        parts = "; ".join(f"{e.model} ({e.backend}): {e.message}" for e in self.errors)
        n = len(self.errors)
        super().__init__(f"All {n} attempt(s) for policy '{policy}' failed: {parts}")

    def headers(self) -> list[tuple[bytes, bytes]]:
        return self.errors[-1].headers()

    def envelope(self) -> bytes:
        last = self.errors[-1]
        if isinstance(last, UpstreamRejected):
            return last.envelope()
        return super().envelope()


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    """OpenAI's error envelope, as bytes."""
    err: dict[str, Any] = {"message": message, "type": type_, "param": param, "code": code}
    return orjson.dumps({"error": err})
