"""OpenTelemetry traces of proxied requests, exported over OTLP when the standard variables ask for them.

A trace is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and
neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` turns it off). Then `build()` returns a
`Tracing` (`otel.py`, which alone imports OpenTelemetry's SDK), configured from the environment as the SDK
configures itself: the exporter's endpoint, headers, timeout and compression, the sampler, the resource
(`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) and the batch processor (`OTEL_BSP_*`). When off,
`build()` returns None, nothing of the SDK is imported, and the request path tests one attribute for None.

The spans (docs/tracing.md):

    {operation} {model asked}     SERVER   one per proxied request: begun by `Pipeline.handle`, ended by the
                                           `Traced` observer, with the GenAI and `nanoroute.*` attributes
    {operation} {upstream model}  CLIENT   one per call of an upstream (each model, replica and retry of the
                                           attempt chain), its child; its ids go upstream as `traceparent`

A client's own `traceparent` (and `tracestate`) continues its trace: the request's span is its child.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.tracing.otel import Tracing

ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""Either one set turns traces on."""


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether `environ` asks for traces: an OTLP endpoint is set, and the SDK and its trace exporter are not
    turned off."""
    if not any(environ.get(name, "").strip() for name in ENDPOINTS):
        return False
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() != "none"


def build() -> Tracing | None:
    """The process's tracing from its environment (the SDK reads `os.environ` itself), or None when the
    environment does not ask for it. Raises ConfigError for what this installation cannot export."""
    if not wanted(os.environ):
        return None
    from gateway.tracing.otel import Tracing

    return Tracing.from_environment()
