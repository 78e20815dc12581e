"""OpenAI's Responses API in (`POST /v1/responses`), routed like chat completions.

The body is translated to chat completions (`gateway.protocols.responses`): routing, fallback, usage and
capture read that. A model whose backend speaks the Responses API itself (`Backend.native`: OpenAI's)
gets the client's own body, with what the gateway resolves itself put in: the earlier turns' items of a
`previous_response_id`, and `store: false` (the gateway keeps the conversation, so that the next turn
may go to any model). Other models get the translation, and their answer is translated back.

`store` (true unless the request says false, as OpenAI's) keeps the response's items in the gateway's
store (`gateway.store.turns`) for the next turn's `previous_response_id`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from gateway.backends.base import Operation, Reply
from gateway.errors import InvalidRequest, NanorouteError
from gateway.pipeline.context import RequestContext
from gateway.pipeline.ingress import openai_count, translated
from gateway.pipeline.sse import Tap, TypedTap
from gateway.protocols import responses
from gateway.routing.request import Native, RoutedRequest, json_object, stand_in
from gateway.store.turns import Turn, Turns


class ResponsesIngress:
    routes: Mapping[str, Operation] = MappingProxyType({
        "/v1/responses": Operation.RESPONSES,
        "/v1/responses/input_tokens": Operation.COUNT_TOKENS,
    })

    def __init__(self, turns: Turns | None) -> None:
        self.turns = turns
        """The store of conversations; None when it is off (`NANOROUTE_RESPONSES_STORE=false`)."""

    async def parse(self, ctx: RequestContext, raw: bytes) -> RoutedRequest:
        body = json_object(raw)
        history = await self._history(ctx, body)
        if ctx.op is Operation.COUNT_TOKENS:  # the tokens the request would send, once routed like one
            return translated(ctx, responses.to_chat(body, history), Native(Operation.RESPONSES, body, raw),
                              body.get("metadata"))
        try:
            chat, untranslatable = responses.to_chat(body, history), None
        except responses.Untranslatable as exc:  # a built-in tool, say: only OpenAI's own API may take it
            chat, untranslatable = stand_in(body, raw), exc
        background = body.get("background")
        if background is not None and not isinstance(background, bool):
            raise InvalidRequest("'background' must be a boolean", param="background")
        if background:  # OpenAI runs one only with store: true upstream, which the gateway never asks for
            raise InvalidRequest("Background responses are not supported: the gateway answers while the request "
                                 "waits and keeps no run to poll; leave out 'background', or stream the answer",
                                 param="background")
        store = body.get("store")  # unset: true, as OpenAI's
        if store is not None and not isinstance(store, bool):
            raise InvalidRequest("'store' must be a boolean", param="store")
        if store is True and self.turns is None:
            raise InvalidRequest("This gateway does not store responses (NANOROUTE_RESPONSES_STORE is false): "
                                 "send 'store': false, and the whole conversation as 'input'", param="store")
        items = responses.input_items(body, history)
        if store is not False and self.turns is not None:
            ctx.turn = Turn(ctx.record.key_id, items)
        native = _stateless(body, items if history or isinstance(body.get("input"), list) else None)
        return translated(ctx, chat, Native(Operation.RESPONSES, native, orjson.dumps(native),
                                            untranslatable=untranslatable, sent=body), body.get("metadata"))

    async def _history(self, ctx: RequestContext, body: dict[str, Any]) -> list[dict[str, Any]] | None:
        previous = body.get("previous_response_id")
        if previous is None:
            return None
        if not isinstance(previous, str) or not previous:
            raise InvalidRequest("'previous_response_id' must be a non-empty string", param="previous_response_id")
        if self.turns is None:
            raise InvalidRequest("This gateway does not store responses (NANOROUTE_RESPONSES_STORE is false): send "
                                 "the whole conversation as 'input'", param="previous_response_id")
        items = await self.turns.load(ctx.record.key_id, previous)
        if items is None:
            raise InvalidRequest(f"Previous response with id '{previous}' not found.", param="previous_response_id",
                                 code="previous_response_not_found")
        return items

    def answer(self, ctx: RequestContext, reply: Reply, native: bool) -> bytes:
        if native:
            doc, body = reply.parsed, reply.body
        else:
            doc = responses.from_chat(reply.parsed, _sent(ctx), _response_id(), int(time.time()))
            body = orjson.dumps(doc)
        if ctx.turn is not None:
            ctx.answer = doc  # for the store (pipeline.observers.Stored)
        return body

    def tap(self, ctx: RequestContext, native: bool) -> Tap:
        if native:
            return TypedTap(responses.error_event)
        return responses.StreamTranslator(_sent(ctx), _response_id(), int(time.time()))

    def error_body(self, exc: NanorouteError) -> bytes:
        return exc.envelope()

    def count_body(self, tokens: int) -> bytes:
        return openai_count(tokens)


def _sent(ctx: RequestContext) -> dict[str, Any]:
    """The client's request, whose settings a translated answer echoes (not the stateless upstream body)."""
    req = ctx.request
    assert req is not None and req.native is not None and req.native.sent is not None
    return req.native.sent


_RESOLVED_HERE = frozenset({"previous_response_id", "metadata"})


def _stateless(body: dict[str, Any], items: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The body for a backend that speaks the Responses API: the gateway keeps the conversation, so the
    upstream is asked to keep nothing (`store: false`) and gets the whole input. With `store: false`,
    OpenAI resolves an item's `id` in its own store and fails ("Item with id 'rs_...' not found"): the
    items go without their ids, and a reasoning item only with its encrypted content (which a request
    that sets `reasoning` asks for, so that the next turn can carry it). `metadata` tags a stored response,
    and OpenAI refuses it without `store` on chat completions: nothing is stored upstream, so it stays here."""
    native = {k: v for k, v in body.items() if k not in _RESOLVED_HERE}
    if items is not None:
        native["input"] = [_without_id(item) for item in items if not isinstance(item, dict)
                           or item.get("type") != "reasoning" or item.get("encrypted_content")]
    native["store"] = False
    if "reasoning" in body:
        include = body.get("include")
        include = list(include) if isinstance(include, list) else []
        if "reasoning.encrypted_content" not in include:
            native["include"] = [*include, "reasoning.encrypted_content"]
    return native


def _without_id(item: Any) -> Any:
    """An input item without its `id`; what is not an object is left for the upstream to refuse."""
    return {k: v for k, v in item.items() if k != "id"} if isinstance(item, dict) else item


def _response_id() -> str:
    return "resp_" + os.urandom(24).hex()
