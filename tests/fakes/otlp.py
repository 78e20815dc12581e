"""A fake OpenTelemetry Collector: a real aiohttp server on loopback that takes OTLP/HTTP trace exports.

It answers `POST /v1/traces` as a Collector's OTLP receiver does (protobuf `ExportTraceServiceRequest` in,
an empty `ExportTraceServiceResponse` out; gzip bodies too) and decodes every span with the
`opentelemetry-proto` package into a `ReceivedSpan`, for tests to assert on. Ids are lower-case hex, as they
are written in `traceparent`. The Collector itself cannot be installed here (no Debian or PyPI package).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

KINDS = {Span.SPAN_KIND_SERVER: "server", Span.SPAN_KIND_CLIENT: "client", Span.SPAN_KIND_INTERNAL: "internal",
         Span.SPAN_KIND_PRODUCER: "producer", Span.SPAN_KIND_CONSUMER: "consumer"}
STATUSES = {Status.STATUS_CODE_UNSET: "unset", Status.STATUS_CODE_OK: "ok", Status.STATUS_CODE_ERROR: "error"}


@dataclass
class ReceivedSpan:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    """Empty for a root span."""
    attributes: dict[str, Any]
    status: str
    status_message: str
    events: list[tuple[str, dict[str, Any]]]
    start_ns: int
    end_ns: int
    resource: dict[str, Any]
    scope: str


@dataclass
class FakeCollector:
    spans: list[ReceivedSpan] = field(default_factory=list)
    posts: int = 0
    content_types: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def endpoint(self) -> str:
        """What OTEL_EXPORTER_OTLP_ENDPOINT names: the base URL, the exporter adds /v1/traces."""
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        return app

    def named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name]

    def of_kind(self, kind: str, trace_id: str | None = None) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.kind == kind and (trace_id is None or s.trace_id == trace_id)]

    async def _traces(self, request: web.Request) -> web.Response:
        self.posts += 1
        self.content_types.append(request.content_type)
        body = await request.read()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(ReceivedSpan(
                        name=span.name, kind=KINDS[span.kind], trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        status=STATUSES[span.status.code], status_message=span.status.message,
                        events=[(e.name, {a.key: _value(a.value) for a in e.attributes}) for e in span.events],
                        start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano, resource=resource,
                        scope=scope_spans.scope.name))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind is not None else None
