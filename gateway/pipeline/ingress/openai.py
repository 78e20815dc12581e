"""OpenAI's API in: chat completions, completions and embeddings, parsed into the gateway's request.

The body is read as OpenAI's (`routing.request.parse_request`: what routing needs is checked, every other
field passes through untouched); errors go back in OpenAI's envelope.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gateway.backends.base import Operation
from gateway.errors import NanorouteError
from gateway.pipeline.context import RequestContext
from gateway.routing.request import RoutedRequest, parse_request


class OpenAIIngress:
    routes: Mapping[str, Operation] = MappingProxyType({
        "/v1/chat/completions": Operation.CHAT,
        "/v1/completions": Operation.COMPLETIONS,
        "/v1/embeddings": Operation.EMBEDDINGS,
    })

    def parse(self, ctx: RequestContext, raw: bytes) -> RoutedRequest:
        h = ctx.headers
        return parse_request(ctx.op, raw, task_header=h.task.decode("latin-1") if h.task else None,
                             key_id=ctx.record.key_id, request_id=ctx.record.request_id,
                             pin=h.pin.decode("latin-1") if h.pin else None)

    def error_body(self, exc: NanorouteError) -> bytes:
        return exc.envelope()
