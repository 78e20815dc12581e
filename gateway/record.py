"""What happened to one request: filled in along the request's path, handed once to the observers
(usage, metrics, access log, capture, rollout) when the request ends. Observers read it; they never
steer the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.config.table import ModelRoute
from gateway.errors import UpstreamError

MAX_KEPT_BYTES = 4 << 20
"""The most of a streamed answer kept for observers that read answers (capture, rollouts); a longer
one is not kept (`kept_bytes` still counts it)."""

NONE = "none"
"""The label value for 'no policy / no model': requests that failed before routing, or unknown names."""


class Outcome:
    """The fixed set of values of the `outcome` label."""

    SUCCESS = "success"
    CLIENT_ERROR = "client_error"  # the gateway refused the request (400/401/404/413)
    UPSTREAM_REJECTED = "upstream_rejected"  # the upstream refused it as such (its 4xx relayed)
    UPSTREAM_ERROR = "upstream_error"  # every attempt failed
    STREAM_ERROR = "stream_error"  # failed after the first bytes reached the client
    CANCELLED = "cancelled"  # the client went away
    INTERNAL_ERROR = "internal_error"


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    started: float
    """`time.perf_counter()` when the request arrived."""
    op: str = ""
    key_id: str | None = None
    task: str | None = None
    stream: bool = False
    policy: str = NONE
    reason: str = NONE
    chosen: ModelRoute | None = None
    """The model the decision put first."""
    model: ModelRoute | None = None
    """The model that answered, if one did."""
    failures: list[UpstreamError] = field(default_factory=list)
    status: int = 0
    outcome: str = Outcome.SUCCESS
    upstream_s: float = 0.0
    """Time spent waiting on upstreams before the response started (all attempts)."""
    first_byte_s: float | None = None
    """Time from arrival to the response's start (JSON) or its first content chunk (streams)."""
    duration_s: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    savings_usd: float | None = None
    error: str | None = None
    delivered: bool = False
    """A stream's closing `data: [DONE]` reached the client: the answer is whole, so the client going away
    afterwards (the official SDKs close the connection as soon as they read it) is no cancellation."""
    usage: dict[str, Any] | None = None
    """The upstream's usage object, as it sent it; the usage observer turns it into tokens and cost."""
    stream_events: int = 0
    """Events a stream's upstream sent (its blank lines): what its tokens are estimated from when it ended
    before its usage (cut, or cancelled by the client)."""
    usage_estimated: bool = False
    """The tokens are the gateway's estimate, not the upstream's count."""
    keep: bool = False
    """An observer reads this request's answer (it was sampled for capture, or a rollout compares it):
    the relay keeps the answer below as it goes."""
    reply: dict[str, Any] | None = None
    """A JSON answer, parsed (kept when `keep`)."""
    events: list[bytes] | None = None
    """A stream's bytes as relayed to the client, up to MAX_KEPT_BYTES (kept when `keep`)."""
    kept_bytes: int = 0
    """The size of the answer: the JSON body's, or all of a stream's relayed bytes."""
    limit_headers: tuple[tuple[bytes, bytes], ...] = ()
    """The `x-ratelimit-*` headers of a key with rate limits, sent with the answer."""
