"""OpenAI's API in: chat completions, completions and embeddings, parsed into the gateway's request.

The body is read as OpenAI's (`routing.request.parse_request`: what routing needs is checked, every other
field passes through untouched); errors go back in OpenAI's envelope.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gateway.backends.base import Operation, Reply
from gateway.errors import NanorouteError
from gateway.pipeline.context import RequestContext
from gateway.pipeline.ingress import header_text, openai_count
from gateway.pipeline.sse import Tap, UsageTap
from gateway.routing.cascade import strip_logprobs
from gateway.routing.request import RoutedRequest, parse_request


class OpenAIIngress:
    routes: Mapping[str, Operation] = MappingProxyType({
        "/v1/chat/completions": Operation.CHAT,
        "/v1/completions": Operation.COMPLETIONS,
        "/v1/embeddings": Operation.EMBEDDINGS,
    })

    async def parse(self, ctx: RequestContext, raw: bytes) -> RoutedRequest:
        h = ctx.headers
        return parse_request(ctx.op, raw, task_header=header_text(h.task), key_id=ctx.record.key_id,
                             request_id=ctx.record.request_id, pin=header_text(h.pin))

    def answer(self, ctx: RequestContext, reply: Reply, native: bool) -> bytes:
        req = ctx.request
        assert req is not None
        return strip_logprobs(reply.parsed) if req.add_logprobs else reply.body

    def tap(self, ctx: RequestContext, native: bool) -> Tap:
        req = ctx.request
        assert req is not None
        return UsageTap(strip_usage=req.add_usage)

    def error_body(self, exc: NanorouteError) -> bytes:
        return exc.envelope()

    def count_body(self, tokens: int) -> bytes:
        """OpenAI's token count (`POST /v1/responses/input_tokens`); no route of this ingress asks for one."""
        return openai_count(tokens)
