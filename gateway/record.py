"""What happened to one request: filled in along the hot path, handed once to the observers
(metrics, access log) when the request ends. Observers read it; they never steer the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config.table import ModelRoute
from gateway.errors import UpstreamError

if TYPE_CHECKING:
    from gateway.capture.capture import Sample
    from gateway.rollout import Probe

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
    capture: Sample | None = None
    """Set when the policy captures and this request was sampled: it collects the answer as it goes."""
    rollout: Probe | None = None
    """Set when the policy has a rollout and this request's answer is compared off the request path."""
