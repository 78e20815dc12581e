"""The OpenTelemetry side of `gateway.tracing`: the tracer provider built from the environment, and one
`RequestTrace` per proxied request, which owns the request's span and the spans of its upstream attempts.

Spans are ended on the event loop and handed to a `BatchSpanProcessor`, whose own thread encodes and posts
them (OTLP/HTTP, protobuf): nothing on the request path waits for the collector. A request span is created
when the request arrives and its attributes set when it ends (`RequestTrace.end`, from the `Traced`
observer, once `Usage` has counted tokens and cost). An attempt span covers one call of an upstream: a JSON
answer's end is when the answer was read; a stream's, when the request ends (its stream closed).

Semantic conventions: the GenAI ones (`gen_ai.*`, opentelemetry.io/docs/specs/semconv/gen-ai/, with
`gen_ai.provider.name` rather than the deprecated `gen_ai.system`), HTTP's status and `error.type`, and the
gateway's own under `nanoroute.*`. Token usage and the answer's `gen_ai.response.*` are on the request's span
only, so that a tool summing `gen_ai.usage.*` over spans counts each request once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from time import perf_counter
from typing import Any, TypeVar
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__
from gateway.backends.base import Attempt, Backend, Operation, Reply
from gateway.config import schema
from gateway.config.table import RoutingTable
from gateway.errors import ConfigError, UpstreamError
from gateway.record import Outcome, RequestRecord
from gateway.routing.request import RoutedRequest

log = logging.getLogger("nanoroute")

T = TypeVar("T")

OPERATIONS = {
    Operation.CHAT: "chat",
    Operation.COMPLETIONS: "text_completion",
    Operation.EMBEDDINGS: "embeddings",
    Operation.RESPONSES: "chat",
    Operation.MESSAGES: "chat",
    Operation.COUNT_TOKENS: "count_tokens",
}
"""`gen_ai.operation.name` of each operation: the Responses and Messages APIs are chats too (the span's
`nanoroute.api` says which API the client spoke); a token count is answered by the gateway itself."""

_PROVIDERS = {"openai": "openai", "azure": "azure.ai.openai", "vllm": "vllm"}
"""`gen_ai.provider.name` of each backend type; a litellm backend's is its provider's, below."""
_LITELLM_PROVIDERS = {"anthropic": "anthropic", "gemini": "gcp.gemini", "vertex_ai": "gcp.vertex_ai",
                      "bedrock": "aws.bedrock", "azure": "azure.ai.openai", "azure_ai": "azure.ai.inference",
                      "mistral": "mistral_ai", "xai": "x_ai", "watsonx": "ibm.watsonx.ai"}

ENVIRONMENT = "the environment (OTEL_* variables)"
"""Where a ConfigError of tracing's says the problem is."""

_FAILED = frozenset({Outcome.UPSTREAM_ERROR, Outcome.STREAM_ERROR, Outcome.INTERNAL_ERROR})
"""Outcomes that mark the request's span as an error; a client's mistake, an upstream's refusal of the request
as such and a client that went away carry `error.type` without it (the HTTP conventions for a server span)."""


class Tracing:
    """The process's tracer, its provider and exporter: built once by `create_app`, shut down (its last spans
    sent) when the gateway stops."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("nanoroute", __version__)
        self._propagator = TraceContextTextMapPropagator()
        self._addresses: dict[str, tuple[str, int | None]] = {}

    @classmethod
    def from_environment(cls) -> Tracing:
        """A provider with a batch processor and the OTLP exporter, each reading its own `OTEL_*` variables."""
        provider = TracerProvider(resource=_resource(os.environ), shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(_exporter(os.environ)))
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        log.info("tracing: spans are exported over OTLP to %s", endpoint)
        return cls(provider)

    def shutdown(self) -> None:
        """Send what is left and stop the processor's thread. Blocks (up to the exporter's timeout): call it
        from a thread, not the event loop."""
        self.provider.shutdown()

    def begin(self, scope: Mapping[str, Any], rec: RequestRecord, op: Operation, table: RoutingTable) -> RequestTrace:
        """The span of a request that just arrived, as the child of the client's `traceparent` if it sent one."""
        parent = None
        carrier: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"traceparent" or name == b"tracestate":
                carrier[name.decode()] = value.decode("latin-1")
        if carrier:
            parent = self._propagator.extract(carrier)
        operation = OPERATIONS[op]
        span = self.tracer.start_span(operation, parent, SpanKind.SERVER, attributes={
            "gen_ai.operation.name": operation,
            "http.request.method": scope["method"],
            "url.path": scope["path"],
            "nanoroute.api": rec.op,
            "nanoroute.request_id": rec.request_id,
        })
        return RequestTrace(self, span, operation, table)

    def address(self, url: str) -> tuple[str, int | None]:
        """`server.address` and `server.port` of a replica's URL (parsed once per URL)."""
        found = self._addresses.get(url)
        if found is None:
            parts = urlsplit(url)
            found = self._addresses[url] = (parts.hostname or "", parts.port)
        return found


class RequestTrace:
    """One request's spans: its own, and its attempts'. `attempt` runs in the attempt chain, `turned_down` when
    a cascade's check refuses an answer, `end` once the request has ended."""

    __slots__ = ("_attempts", "_operation", "_parent", "_pending", "_pending_end", "_recording", "_reply", "_table",
                 "_tracing", "span")

    def __init__(self, tracing: Tracing, span: Span, operation: str, table: RoutingTable) -> None:
        self._tracing = tracing
        self.span = span
        self._recording = span.is_recording()
        """False for a request the sampler left out."""
        self._operation = operation
        self._parent: Context | None = set_span_in_context(span) if self._recording else None
        """The context attempts' spans start in (a recorded request's only)."""
        self._table = table
        self._attempts = 0
        self._pending: Span | None = None
        """The last attempt that answered: ended when the request ends, or when its answer is turned down."""
        self._pending_end: int | None = None
        """When that answer was read (a JSON answer); None for a stream, which lasts until the request ends."""
        self._reply: dict[str, Any] = {}
        """`gen_ai.response.*` of the last JSON answer, for the request's span."""

    async def attempt(self, attempt: Attempt, backend: Backend, call: Callable[[Attempt], Awaitable[T]]) -> T:
        """`call(attempt)` inside a client span, with the span's `traceparent` among the attempt's headers."""
        self._attempts += 1
        if not self._recording:  # an unsampled request: its ids go upstream, flagged unsampled, and nothing more
            return await call(_carrying(attempt, self.span))
        operation = OPERATIONS[attempt.op]
        span = self._tracing.tracer.start_span(f"{operation} {attempt.model.upstream_name}", self._parent,
                                               SpanKind.CLIENT,
                                               attributes=self._attempt_attributes(attempt, backend, operation))
        started = perf_counter()
        try:
            result = await call(_carrying(attempt, span))
        except UpstreamError as exc:
            _failed(span, exc.kind, exc.message)
            span.end()
            raise
        except BaseException:
            _failed(span, "cancelled", "the request was cancelled (the client went away)")
            span.end()
            raise
        span.set_attribute("nanoroute.ttfb_s", perf_counter() - started)
        if isinstance(result, Reply):
            self._reply = _response(result.parsed)  # for the request's span only: an attribute costs ~5 us, sent
            self._pending, self._pending_end = span, time.time_ns()
        else:
            self._pending, self._pending_end = span, None
        return result

    def _attempt_attributes(self, attempt: Attempt, backend: Backend, operation: str) -> dict[str, Any]:
        model = attempt.model
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": self._provider(model.backend),
            "gen_ai.request.model": model.upstream_name,
            "nanoroute.model": model.name,
            "nanoroute.backend": model.backend,
            "nanoroute.attempt": self._attempts,
        }
        replicas = backend.replicas
        replica = attempt.replica if attempt.replica is not None else 0 if len(replicas) == 1 else None
        if replica is not None and replica < len(replicas):
            host, port = self._tracing.address(replicas[replica].url)
            attributes["server.address"] = host
            if port is not None:
                attributes["server.port"] = port
            attributes["nanoroute.replica"] = replica
        return attributes

    def turned_down(self, err: UpstreamError) -> None:
        """A cascade's check refused the last answer: its span ends as failed, and the next model is tried."""
        span, self._pending, self._reply = self._pending, None, {}
        if span is not None:
            _failed(span, err.kind, err.message)
            span.end(self._pending_end)

    def _provider(self, backend: str) -> str:
        """`gen_ai.provider.name` of a backend of the table the request started with."""
        spec = self._table.config.backends.get(backend)
        if isinstance(spec, schema.LitellmBackend):
            return _LITELLM_PROVIDERS.get(spec.provider, spec.provider)
        return _PROVIDERS.get(spec.type, spec.type) if spec is not None else "_OTHER"

    def end(self, rec: RequestRecord, req: RoutedRequest | None) -> None:
        """The request has ended: its last attempt's span and its own get what happened, and end."""
        pending = self._pending
        if pending is not None:
            if rec.outcome in (Outcome.STREAM_ERROR, Outcome.CANCELLED) and self._pending_end is None:
                _failed(pending, rec.outcome, rec.error or "the client went away during the stream")
            pending.end(self._pending_end)
        span = self.span
        if not self._recording:
            return
        attributes = _request_attributes(req) if req is not None else {}
        attributes.update({
            "http.response.status_code": rec.status,
            "nanoroute.policy": rec.policy,
            "nanoroute.reason": rec.reason,
            "nanoroute.outcome": rec.outcome,
            "nanoroute.stream": rec.stream,
            "nanoroute.fallbacks": len(rec.failures),
        })
        if req is not None:
            span.update_name(f"{self._operation} {req.model}")
        if rec.task is not None:
            attributes["nanoroute.task"] = rec.task
        if rec.key_id is not None:
            attributes["nanoroute.key_id"] = rec.key_id
        if rec.model is not None:
            attributes.update({"gen_ai.provider.name": self._provider(rec.model.backend),
                               "gen_ai.response.model": rec.model.upstream_name,
                               "nanoroute.model": rec.model.name, "nanoroute.backend": rec.model.backend})
            attributes.update(self._reply)
        _usage(attributes, rec)
        for failure in rec.failures:
            if not failure.attempted:  # the gateway passed over the model (open circuit, at its cap...)
                span.add_event("nanoroute.skipped", {"nanoroute.model": failure.model,
                                                     "nanoroute.backend": failure.backend,
                                                     "error.type": failure.kind})
        if rec.outcome != Outcome.SUCCESS:
            attributes["error.type"] = rec.outcome
            if rec.outcome in _FAILED:
                span.set_status(Status(StatusCode.ERROR, rec.error))
        span.set_attributes(attributes)
        span.end()


def _request_attributes(req: RoutedRequest) -> dict[str, Any]:
    """`gen_ai.request.*` the client set (read from the chat completions body, translated for the other APIs)."""
    body = req.body
    attributes: dict[str, Any] = {"gen_ai.request.model": req.model}
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            attributes["gen_ai.request.max_tokens"] = value
            break
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[f"gen_ai.request.{key}"] = float(value)
    return attributes


def _response(parsed: dict[str, Any]) -> dict[str, Any]:
    """`gen_ai.response.*` of an upstream's JSON answer: chat completions', or the Messages API's passed through."""
    attributes: dict[str, Any] = {}
    for key, name in (("id", "gen_ai.response.id"), ("model", "gen_ai.response.model")):
        value = parsed.get(key)
        if isinstance(value, str):
            attributes[name] = value
    choices = parsed.get("choices")
    if isinstance(choices, list):
        reasons = [c["finish_reason"] for c in choices
                   if isinstance(c, dict) and isinstance(c.get("finish_reason"), str)]
    else:
        stop = parsed.get("stop_reason")
        reasons = [stop] if isinstance(stop, str) else []
    if reasons:
        attributes["gen_ai.response.finish_reasons"] = reasons
    return attributes


def _usage(attributes: dict[str, Any], rec: RequestRecord) -> None:
    if rec.prompt_tokens is not None:
        attributes["gen_ai.usage.input_tokens"] = rec.prompt_tokens
    if rec.completion_tokens is not None:
        attributes["gen_ai.usage.output_tokens"] = rec.completion_tokens
    if rec.usage_estimated:
        attributes["nanoroute.tokens_estimated"] = True
    if rec.cost_usd is not None:
        attributes["nanoroute.cost_usd"] = rec.cost_usd
    if rec.savings_usd is not None:
        attributes["nanoroute.savings_usd"] = rec.savings_usd
    if rec.first_byte_s is not None:
        attributes["nanoroute.ttfb_s"] = rec.first_byte_s


def _carrying(attempt: Attempt, span: Span) -> Attempt:
    """The attempt with a `traceparent` naming `span` (and the trace's `tracestate`) among its headers."""
    sent = span.get_span_context()
    headers = (*attempt.headers, ("traceparent", f"00-{sent.trace_id:032x}-{sent.span_id:016x}-{sent.trace_flags:02x}"))
    if sent.trace_state:
        headers += (("tracestate", sent.trace_state.to_header()),)
    return dataclasses.replace(attempt, headers=headers)


def _failed(span: Span, kind: str, message: str) -> None:
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, message))


def _exporter(environ: Mapping[str, str]) -> SpanExporter:
    """The OTLP exporter that `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` names: http/protobuf (the default, and
    what this installation has), or grpc when its package is installed too."""
    kinds = {k.strip().lower() for k in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if k.strip()}
    if kinds - {"otlp"}:
        raise ConfigError(ENVIRONMENT, [("OTEL_TRACES_EXPORTER", f"{environ['OTEL_TRACES_EXPORTER']!r}: Nanoroute "
                                         "exports traces over OTLP only (otlp, or none to turn traces off)")])
    variable = next((v for v in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
                     if environ.get(v, "").strip()), "")
    protocol = environ[variable].strip().lower() if variable else "http/protobuf"
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError:
            raise ConfigError(ENVIRONMENT, [(variable, "grpc needs opentelemetry-exporter-otlp-proto-grpc, which this "
                                             "installation does not have: install it, or send http/protobuf (the "
                                             "default; a Collector listens for it on port 4318)")]) from None
        return GrpcExporter()  # type: ignore[no-any-return]
    raise ConfigError(ENVIRONMENT, [(variable, f"{protocol!r} is not supported: http/protobuf (the default) or grpc")])


def _resource(environ: Mapping[str, str]) -> Resource:
    """The SDK's resource from the environment (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), named
    `nanoroute` and given the gateway's version where the environment does not say."""
    resource = Resource.create()
    defaults: dict[str, str] = {}
    if not environ.get("OTEL_SERVICE_NAME") and str(resource.attributes.get(SERVICE_NAME, "")).startswith(
            "unknown_service"):
        defaults[SERVICE_NAME] = "nanoroute"
    if SERVICE_VERSION not in resource.attributes:
        defaults[SERVICE_VERSION] = __version__
    return resource.merge(Resource(defaults)) if defaults else resource
