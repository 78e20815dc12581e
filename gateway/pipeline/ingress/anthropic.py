"""Anthropic's Messages API in (`POST /v1/messages`, `POST /v1/messages/count_tokens`), routed like chat
completions, with errors in Anthropic's envelope.

The body is translated to chat completions (`gateway.protocols.anthropic`): routing, fallback, usage and
capture read that. A model on a backend that speaks the Messages API itself (`Backend.native`: a litellm
backend for provider `anthropic`) gets the client's own bytes and its `anthropic-version` and
`anthropic-beta` headers, so thinking blocks, their signatures and server tools reach Anthropic untouched;
its answer comes back as Anthropic sent it. Other models get the translation, and their answer is
translated back. A request that cannot be translated (a server tool, a document) may go only to the
former; the others are passed over with the reason.

`count_tokens` is answered by the gateway from its own estimate (`routing.tokens`, the prompt's tokens
as the router counts them), once the model is known to exist and the key may use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType

import orjson

from gateway.backends.base import Operation, Reply
from gateway.errors import NanorouteError
from gateway.pipeline.context import RequestContext
from gateway.pipeline.ingress import header_text, translated
from gateway.pipeline.sse import Tap, TypedTap
from gateway.protocols import anthropic
from gateway.routing.request import Native, RoutedRequest, json_object, stand_in


class AnthropicIngress:
    routes: Mapping[str, Operation] = MappingProxyType({
        "/v1/messages": Operation.MESSAGES,
        "/v1/messages/count_tokens": Operation.COUNT_TOKENS,
    })

    async def parse(self, ctx: RequestContext, raw: bytes) -> RoutedRequest:
        body = json_object(raw)
        counting = ctx.op is Operation.COUNT_TOKENS
        try:
            # count_tokens takes no max_tokens, which a Messages request must have
            chat = anthropic.to_chat({"max_tokens": 1, **body} if counting else body)
            untranslatable = None
        except anthropic.Untranslatable as exc:  # a server tool, say: only Anthropic itself may take it
            if counting:
                raise
            chat, untranslatable = stand_in(body, raw), exc
        h = ctx.headers
        # The backend sends its own anthropic-version when the client sent none.
        headers = tuple((name, text) for name, text in (("anthropic-version", header_text(h.anthropic_version)),
                                                        ("anthropic-beta", header_text(h.anthropic_beta))) if text)
        native = Native(Operation.MESSAGES, body, raw, headers, untranslatable=untranslatable)
        return translated(ctx, chat, native, body.get("metadata"))

    def answer(self, ctx: RequestContext, reply: Reply, native: bool) -> bytes:
        if native:
            return reply.body
        return orjson.dumps(anthropic.from_chat(reply.parsed, _message_id()))

    def tap(self, ctx: RequestContext, native: bool) -> Tap:
        if native:
            return TypedTap(anthropic.error_event)
        req = ctx.request
        assert req is not None
        return anthropic.StreamTranslator(_message_id(), req.model)

    def error_body(self, exc: NanorouteError) -> bytes:
        return anthropic.error_body(exc)

    def count_body(self, tokens: int) -> bytes:
        return orjson.dumps({"input_tokens": tokens})


def _message_id() -> str:
    return "msg_" + os.urandom(12).hex()
