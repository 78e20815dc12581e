"""An OTLP/HTTP trace receiver for benchmarks: takes `POST /v1/traces` (protobuf), counts the spans, answers as
a Collector does; `GET /count` says how many it has taken, so a run can check that none were dropped.

    .venv/bin/python bench/otlp_sink.py --port 4318 &
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 .venv/bin/python bench/hotpath.py --json

What it costs is its own process's (put it on the mock's core), not the gateway's.
"""

from __future__ import annotations

import argparse

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=4318)
    a = ap.parse_args()
    spans = 0

    async def traces(request: web.Request) -> web.Response:
        nonlocal spans
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        spans += sum(len(s.spans) for r in export.resource_spans for s in r.scope_spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def count(request: web.Request) -> web.Response:
        return web.Response(text=str(spans))

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/count", count)
    web.run_app(app, host="127.0.0.1", port=a.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
