"""What one request carries along the pipeline: the state it started with, its headers, what each stage
made of it, and its record.

The snapshot is taken when the request arrives and kept to its end, its observers included: a reload
that swaps in a new table and backends meanwhile changes nothing for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.backends.base import Backend, Operation
from gateway.config.table import RoutingTable
from gateway.record import RequestRecord
from gateway.reliability.health import Health
from gateway.routing.cascade import Gate
from gateway.routing.decide import Decision
from gateway.routing.request import RoutedRequest
from gateway.routing.signals import Signals

if TYPE_CHECKING:
    from gateway.capture.capture import Sample
    from gateway.governance.counters import Ask
    from gateway.governance.principal import Principal
    from gateway.pipeline.ingress import Ingress
    from gateway.rollout import Probe
    from gateway.store.turns import Turn
    from gateway.tracing.otel import RequestTrace

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a request reads of the gateway, swapped as a whole by a reload."""

    table: RoutingTable
    backends: Mapping[str, Backend]
    health: Health
    """Breakers and health checks: per process, kept across reloads for what did not change."""
    signals: Signals
    """What routing learns from traffic: per process, outlives reloads."""
    max_body_bytes: int


class Headers:
    """The request headers the pipeline reads, in one pass over the ASGI header list."""

    __slots__ = ("anthropic_beta", "anthropic_version", "api_key", "authorization", "content_length", "pin",
                 "request_id", "task", "x_api_key")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.authorization = self.content_length = self.request_id = self.task = self.pin = None
        self.x_api_key = self.api_key = self.anthropic_version = self.anthropic_beta = None
        # One comparison chain rather than a dict of names: it runs for every header of every request, and
        # a request holds a dozen headers or so.
        for name, value in raw:
            if name == b"authorization":
                self.authorization = value
            elif name == b"x-api-key":
                self.x_api_key = value
            elif name == b"api-key":
                self.api_key = value
            elif name == b"content-length":
                self.content_length = value
            elif name == b"x-request-id":
                self.request_id = value
            elif name == b"x-nanoroute-task":
                self.task = value
            elif name == b"x-nanoroute-model":
                self.pin = value
            elif name == b"anthropic-version":
                self.anthropic_version = value
            elif name == b"anthropic-beta":
                self.anthropic_beta = value


class RequestContext:
    """One request, from arrival to its observers. Each stage fills in what it owns."""

    __slots__ = ("answer", "ask", "decision", "gate", "headers", "ingress", "op", "principal", "probe", "record",
                 "request", "sample", "state", "trace", "turn")

    def __init__(self, state: Snapshot, ingress: Ingress, op: Operation, headers: Headers,
                 record: RequestRecord) -> None:
        self.state = state
        self.ingress = ingress
        """The protocol the request came in by: it parses the request and words its errors."""
        self.op = op
        self.headers = headers
        self.record = record
        self.principal: Principal | None = None
        """Who the request comes from: set by the keys check (None when the API is open)."""
        self.request: RoutedRequest | None = None
        """Set by the ingress once the body is read and parsed."""
        self.decision: Decision | None = None
        """Set by the route stage: where the request goes and why."""
        self.gate: Gate | None = None
        """A cascade's checks, when the policy cascades this request."""
        self.sample: Sample | None = None
        """Set when the policy captures and this request was sampled."""
        self.probe: Probe | None = None
        """Set when the policy has a rollout and this request's answer is compared off the request path."""
        self.turn: Turn | None = None
        """Set by the Responses API's ingress for a response to store (`store: true`)."""
        self.ask: Ask | None = None
        """What the limits check counted for the request, to be settled once it ends (None: nothing counted)."""
        self.answer: dict[str, Any] | None = None
        """The answer in the client's API, when the ingress keeps it for the store (a Responses API response)."""
        self.trace: RequestTrace | None = None
        """The request's spans, when traces are on (`gateway.tracing`)."""
