"""Every error Nanoroute raises, the HTTP status each maps to, and the OpenAI error envelope.

The tree::

    NanorouteError                      base; carries status, type, code, param
    ├── ConfigError                     a config file is invalid (never reaches a client)
    ├── ClientError                     the request itself is wrong; no upstream is tried
    │   ├── InvalidRequest              400 malformed JSON, missing or mistyped fields
    │   ├── AuthenticationFailed        401 missing or unknown API key
    │   ├── PermissionDenied            403 the key may not do this
    │   │   └── ModelNotAllowed         403 the key may not use that model (the config's `keys`)
    │   ├── NotFound                    404 a disabled endpoint
    │   │   └── ModelNotFound           404 no policy matches and no catalog model has that name
    │   ├── ResponseNotFound            404 no stored response by that id for this key (the Responses API)
    │   ├── UnknownPath                 404 no endpoint at this path (OpenAI's "Invalid URL (GET /v1/foo)")
    │   ├── MethodNotAllowed            405 a proxied endpoint called with another method than POST
    │   ├── PayloadTooLarge             413 body over the configured limit
    │   ├── RateLimited                 429 `rate_limit_exceeded`: the key's (or its team's) rate or in-flight cap
    │   └── QuotaExceeded               429 `insufficient_quota`: the key's (or its team's) budget is spent
    ├── PolicyUnmet                     503 no candidate meets the policy's requirements and it says `reject`
    ├── StorageUnavailable              503 the gateway could not read or write what it keeps (feedback, the store)
    ├── DistillError                    a `nanoroute distill` step cannot go on (no data, no manifest, a failed run)
    └── UpstreamError                   one attempt at one model failed; flags say what may help (below)
        ├── UpstreamConnectError        503 connection refused, reset or DNS failure before a response
        ├── UpstreamTimeout             504 no (complete) answer in time; `phase` says which limit
        ├── UpstreamRateLimited         429 from the upstream; `retry_after` when it said
        ├── UpstreamServerError         502 the upstream answered 5xx
        ├── UpstreamMalformed           502 the upstream answered something that is not what the protocol says
        │   └── UpstreamCut                 its body ended before its end (the connection dropped)
        ├── UpstreamAuthFailed          502 the upstream rejected the gateway's own credentials
        ├── UpstreamModelNotFound       404 the upstream does not serve the model (the config's problem)
        ├── AdapterLoadFailed           502 vLLM would not load a LoRA adapter the config routes to
        ├── ContextLengthExceeded       400 the prompt does not fit this model; a larger one may take it
        ├── UpstreamRejected            4xx the upstream refused the request as such; relayed as it answered
        │   └── ContentFiltered         4xx the provider's content filter refused it; relayed as it answered
        ├── CascadeEscalated            a cascade's check turned the answer down; the next model answers
        └── Skipped                     the gateway did not send this attempt; `retry_after` when known
            ├── CircuitOpen             503 every replica of the model is open (breaker, health check)
            ├── Overloaded              503 the model is at its in-flight cap or its queue is too long
            ├── ContextWindowTooSmall   400 the prompt plus max_tokens cannot fit the model's context_window
            └── NotTranslatable         400 the request needs its own API (Responses, Messages), which the model lacks
    AllAttemptsFailed                   every model in the chain failed; keeps each attempt's error in order;
    │                                   429 `rate_limit_exceeded` when each one failed or was skipped for rate limits
    └── AllCandidatesUnavailable        503 no model was tried: each was skipped as open or overloaded

What a client is told is not always what the gateway logs: an `UpstreamError`'s `message` is for the
operator (backend names, addresses, the upstream's own words, the environment variable a key comes
from) and goes to the access log; its `public` text, which the error envelope carries, says what
happened without any of that.

An `UpstreamError` says what may help through four flags: `fallback` (another model may succeed),
`retryable` (the same model may, after a pause), `attempted` (the upstream was actually called) and
`unhealthy` (it counts against the model's circuit breaker). docs/reliability.md has the table.
A fifth, `rate_limited`, says the failure is the upstream limiting the rate: a 429, or a circuit opened
by 429s. When every attempt is one, the client is told so as OpenAI says it (429 `rate_limit_exceeded`).

Foreign exceptions (aiohttp, asyncio, litellm) are translated into this tree only at the backend boundary.

The classes below repeat one shape (class attributes that say what each error is); that is the tree
itself, written out, rather than code that one helper could share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson


class NanorouteError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None
    retry_after: float | None = None
    """Seconds after which the client may try again, when known: sent as `Retry-After`."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> list[tuple[bytes, bytes]]:
        return _retry_after(self.retry_after)

    @property
    def public(self) -> str:
        """What a client is told: the message, unless the error's class says less (`UpstreamError`)."""
        return self.message

    def envelope(self) -> bytes:
        return error_body(self.public, self.type, self.code, self.param)


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

    def __init__(self, model: str, why: str = "no policy matches it and it is not in the catalog") -> None:
        super().__init__(f"The model '{_clip(model)}' does not exist: {why}", param="model")


class ModelNotAllowed(PermissionDenied):
    """The key may not use the model, or any model of the policy that matched (the config's `keys`)."""

    code = "model_not_allowed"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="model")


class ResponseNotFound(ClientError):
    """A stored response that is not there for this key (unknown, expired, deleted, or another key's): OpenAI's
    words and type for it."""

    status = 404

    def __init__(self, response_id: str) -> None:
        super().__init__(f"Response with id '{_clip(response_id)}' not found.")


class UnknownPath(ClientError):
    """No endpoint at this path: OpenAI's words and type (`Invalid URL (GET /v1/foo)`, invalid_request_error)."""

    status = 404
    code = "unknown_url"

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"Invalid URL ({_clip(method, 16)} {_clip(path)})")


class MethodNotAllowed(ClientError):
    status = 405

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"allow", b"POST")]


class PayloadTooLarge(ClientError):
    status = 413
    code = "request_too_large"


class RateLimited(ClientError):
    """A key (or its team) is at its requests or tokens per minute, or its requests at once: OpenAI's 429,
    its `type` the limit (`requests`, `tokens`), with `Retry-After` and the `x-ratelimit-*` headers."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, kind: str, retry_after: float | None,
                 limit_headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        super().__init__(message)
        self.type = kind
        self.retry_after = retry_after
        self.limit_headers = tuple(limit_headers)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [*_retry_after(self.retry_after), *self.limit_headers]


class QuotaExceeded(ClientError):
    """A key's (or its team's) budget for the period is spent: OpenAI's 429 `insufficient_quota`, which its
    SDKs do not retry. `Retry-After`: when the period ends, if it does."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str, *, retry_after: float | None,
                 limit_headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit_headers = tuple(limit_headers)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [*_retry_after(self.retry_after), *self.limit_headers]


class PolicyUnmet(NanorouteError):
    status = 503
    type = "server_error"
    code = "no_eligible_model"


class StorageUnavailable(NanorouteError):
    """The gateway could not read or write what it keeps (feedback, the store: the Responses API's
    conversations): 503, and nothing the request asked for is half done."""

    status = 503
    type = "server_error"
    code = "storage_unavailable"


class DistillError(NanorouteError):
    """A `nanoroute distill` step cannot go on; the message says what is missing or what failed."""


class UpstreamError(NanorouteError):
    """One attempt at one model failed.

    `fallback`: another model may succeed. `retryable`: the same model may, after a pause.
    `attempted`: the upstream was called (False for the gateway's own skips). `unhealthy`: the error
    says the model or its replica is unwell, so it counts against the circuit breaker.
    """

    status = 502
    type = "upstream_error"
    fallback = True
    retryable = False
    attempted = True
    unhealthy = True
    systemic = False
    """The failure says the model is unwell for every client, whatever the request asked (a refused
    connection, a 429, rejected credentials): the breaker may open on it without checking the model first."""

    public_message = "the upstream failed"
    """What a client is told of this failure, when the message may say more than a client should see."""
    message_is_public = False
    """The message says nothing a client should not see (the gateway's own reasons), so it is told as is."""

    rate_limited = False
    """The upstream is limiting the rate of requests (a 429, or a circuit that 429s opened): waiting helps."""

    def __init__(self, message: str, *, model: str = "", backend: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.backend = backend
        self.retry_after = retry_after

    @property
    def kind(self) -> str:
        """A short, fixed name for logs, headers and metric labels."""
        return _KIND[type(self)]

    @property
    def public(self) -> str:
        return self.message if self.message_is_public else self.public_message


class UpstreamConnectError(UpstreamError):
    status = 503
    code = "upstream_unavailable"
    public_message = "the upstream could not be reached"
    retryable = True
    systemic = True


class UpstreamTimeout(UpstreamError):
    """`phase`: which limit ran out: `connect`, `first_token` (streams: to the first content),
    `idle` (streams: between chunks), `total` (the backend's limit for one attempt) or `deadline`
    (the request's overall deadline: nothing more may be tried, and the model is not blamed)."""

    status = 504
    code = "upstream_timeout"

    def __init__(self, message: str, *, model: str = "", backend: str = "", phase: str = "total") -> None:
        super().__init__(message, model=model, backend=backend)
        self.phase = phase
        self.message_is_public = phase == "deadline"  # the gateway's own limit, which the client may set
        self.public_message = _TIMEOUTS.get(phase, "the upstream did not answer in time")
        self.retryable = self.systemic = phase == "connect"
        if phase == "deadline":
            self.fallback = self.unhealthy = False


_TIMEOUTS = {
    "connect": "the upstream did not accept the connection in time",
    "first_token": "the upstream sent no content in time",
    "idle": "the upstream stalled in the middle of the stream",
}


class UpstreamRateLimited(UpstreamError):
    status = 429
    type = "rate_limit_error"
    code = "upstream_rate_limited"
    retryable = True
    systemic = True
    rate_limited = True
    public_message = "the upstream is limiting the rate of requests"


class UpstreamServerError(UpstreamError):
    code = "upstream_server_error"
    public_message = "the upstream answered with a server error"
    retryable = True


class UpstreamMalformed(UpstreamError):
    code = "upstream_malformed_response"
    public_message = "the upstream sent a malformed answer"


class UpstreamCut(UpstreamMalformed):
    """The upstream's body ended before its end (a connection dropped mid-stream): counted as a malformed
    answer, told as what happened."""

    public_message = "the upstream's answer was cut off before its end"


class UpstreamAuthFailed(UpstreamError):
    code = "upstream_auth_failed"
    public_message = "the upstream refused the gateway's credentials"
    systemic = True


class UpstreamModelNotFound(UpstreamError):
    """The upstream answered 404 saying it has no such model (OpenAI's `model_not_found`, vLLM's "The model `x`
    does not exist.", litellm's NotFoundError). The gateway config's problem for that one model: the next model
    is tried; when it is the chain's last error the client gets OpenAI's own 404 for it."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"
    public_message = "the upstream does not serve the model"


class AdapterLoadFailed(UpstreamError):
    """A vLLM replica would not load (or serve) a LoRA adapter: a bad path, a rank over --max-lora-rank,
    runtime loading off. Another replica, or another model, may still answer."""

    code = "adapter_load_failed"
    retryable = True
    systemic = True
    public_message = "the model's LoRA adapter could not be loaded"


class ContextLengthExceeded(UpstreamError):
    status = 400
    type = "invalid_request_error"
    code = "context_length_exceeded"
    unhealthy = False
    message_is_public = True  # what the upstream said of the request's size tells the client what to fix


class UpstreamRejected(UpstreamError):
    """The upstream refused the request itself (a 4xx other than the ones above); no other model is tried.

    The upstream's own status and body are relayed, since they tell the client what to fix.
    """

    fallback = False
    unhealthy = False
    message_is_public = True  # the upstream's words about the request, for the client that sent it

    def __init__(self, message: str, *, model: str = "", backend: str = "", status: int, body: bytes):
        super().__init__(message, model=model, backend=backend)
        self.status = status
        self.body = body

    def envelope(self) -> bytes:
        return self.body


class ContentFiltered(UpstreamRejected):
    """The provider's content filter refused the prompt (Azure's `content_filter`, OpenAI's
    `content_policy_violation`, litellm's ContentPolicyViolationError). Not retried and not fallen back:
    sending what one provider's safety filter refused to another is a policy decision, not resilience."""

    code = "content_filter"


class CascadeEscalated(UpstreamError):
    """A cascade's check turned a model's answer down (`check`: json, refusal, regex, logprob or size); the next
    model answers instead. Not an upstream error: the model answered, just not well enough."""

    unhealthy = False
    message_is_public = True

    def __init__(self, check: str, *, model: str = "", backend: str = "") -> None:
        super().__init__(f"the answer failed the cascade's {check} check", model=model, backend=backend)
        self.check = check

    @property
    def kind(self) -> str:
        return f"cascade_{self.check}"


class Skipped(UpstreamError):
    """The gateway passed over a model without calling it. `retry_after`: seconds until it may take
    requests again, when known (sent as `Retry-After` when every model was skipped)."""

    status = 503
    attempted = False
    unhealthy = False
    message_is_public = True


class CircuitOpen(Skipped):
    """`rate_limited`: what opened the circuit was the upstream's 429s (or a Retry-After it asked to wait out)."""

    code = "circuit_open"

    def __init__(self, message: str, *, model: str = "", backend: str = "", retry_after: float | None = None,
                 rate_limited: bool = False) -> None:
        super().__init__(message, model=model, backend=backend, retry_after=retry_after)
        self.rate_limited = rate_limited


class Overloaded(Skipped):
    code = "model_overloaded"


class ContextWindowTooSmall(Skipped):
    status = 400
    type = "invalid_request_error"
    code = "context_length_exceeded"


class NotTranslatable(Skipped):
    """The request uses what only its own API can carry (a built-in or server tool, a document), and this
    model does not speak that API: only a model that does may take it."""

    status = 400
    type = "invalid_request_error"
    code = "unsupported_by_model"

    def __init__(self, message: str, *, model: str = "", backend: str = "", param: str | None = None) -> None:
        super().__init__(message, model=model, backend=backend)
        self.param = param
        """The field at fault, as the translation named it (`tools.1.type`)."""


_KIND: dict[type[UpstreamError], str] = {
    UpstreamError: "error",
    UpstreamConnectError: "connect",
    UpstreamTimeout: "timeout",
    UpstreamRateLimited: "rate_limited",
    UpstreamServerError: "server_error",
    UpstreamMalformed: "malformed",
    UpstreamCut: "malformed",
    UpstreamAuthFailed: "auth",
    UpstreamModelNotFound: "model_not_found",
    AdapterLoadFailed: "adapter_load",
    ContextLengthExceeded: "context_length",
    UpstreamRejected: "rejected",
    ContentFiltered: "content_filter",
    Skipped: "skipped",
    CircuitOpen: "circuit_open",
    Overloaded: "overloaded",
    ContextWindowTooSmall: "context_window",
    NotTranslatable: "not_translatable",
}


class AllAttemptsFailed(NanorouteError):
    """Every model in the chain failed. The status follows the last error, the message names them all.

    When every one failed or was skipped because its upstream limits the rate (`rate_limited`), the answer
    is OpenAI's own for a rate limit (429, `rate_limit_exceeded`) with the soonest known `Retry-After`, so
    that SDKs raise their RateLimitError and back off; a mix with any other failure keeps the last error's.
    """

    type = "upstream_error"

    def __init__(self, policy: str, errors: Sequence[UpstreamError]) -> None:
        self.errors = tuple(errors)
        last = self.errors[-1]
        self.status = last.status
        self.code = last.code
        self.type = last.type
        parts = "; ".join(f"{e.model} ({e.backend}): {e.message}" for e in self.errors)
        n = len(self.errors)
        super().__init__(f"All {n} attempt(s) for policy '{policy}' failed: {parts}", param=last.param)
        self._public = (f"All {n} attempt(s) for policy '{policy}' failed: "
                        + "; ".join(f"{e.model}: {e.public}" for e in self.errors))
        self.rate_limited = all(e.rate_limited for e in self.errors)
        if self.rate_limited:
            self.status, self.type, self.code = 429, "rate_limit_error", "rate_limit_exceeded"
            self.retry_after = min((e.retry_after for e in self.errors if e.retry_after is not None), default=None)
            wait = "" if self.retry_after is None else f"; retry after {max(1, math.ceil(self.retry_after))} s"
            self._public = (f"Rate limit reached for policy '{policy}': every model is limiting the rate of "
                            f"requests{wait}: " + "; ".join(f"{e.model}: {e.public}" for e in self.errors))

    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.rate_limited:
            return _retry_after(self.retry_after)
        return self.errors[-1].headers()

    @property
    def public(self) -> str:
        """Each attempt's model and its own public text."""
        return self._public

    def envelope(self) -> bytes:
        last = self.errors[-1]
        if isinstance(last, UpstreamRejected):
            return last.envelope()
        return super().envelope()


class AllCandidatesUnavailable(AllAttemptsFailed):
    """No model was called: every one was skipped because its circuit was open or it was saturated.
    Answered at once with 503 and `Retry-After` (when the soonest one may take requests again),
    rather than queued."""

    def __init__(self, policy: str, errors: Sequence[UpstreamError]) -> None:
        super().__init__(policy, errors)
        if self.rate_limited:  # every circuit was opened by 429s: the rate limit is what the client is told
            return
        self.status, self.type, self.code = 503, "upstream_error", "models_unavailable"
        waits = [e.retry_after for e in self.errors if isinstance(e, Skipped) and e.retry_after is not None]
        self.retry_after = min(waits, default=1.0)
        self.message = self._public = (
            f"No model can take the request now for policy '{policy}' (each is open or at capacity); "
            f"retry after {max(1, math.ceil(self.retry_after))} s: " + "; ".join(f"{e.model}: {e.message}"
                                                                                for e in self.errors))

    def headers(self) -> list[tuple[bytes, bytes]]:  # its own wait, not the last error's
        return _retry_after(self.retry_after)


def _retry_after(seconds: float | None) -> list[tuple[bytes, bytes]]:
    """`Retry-After` in whole seconds, rounded up (never sooner than the wait), at least one; none when unknown."""
    if seconds is None:
        return []
    return [(b"retry-after", str(max(1, math.ceil(seconds))).encode())]


def _clip(text: str, limit: int = 128) -> str:
    """A client's string, cut to a length fit for a message."""
    return text if len(text) <= limit else text[:limit] + "..."


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    """OpenAI's error envelope, as bytes."""
    err: dict[str, Any] = {"message": message, "type": type_, "param": param, "code": code}
    return orjson.dumps({"error": err})
