"""Ingress: a protocol's request into the gateway's own, and the gateway's errors back in its words.

An ingress names the paths it serves (and the operation behind each), parses a body into a
`RoutedRequest`, the internal request every later stage reads, and renders an error in the protocol's
envelope. OpenAI's chat completions, completions and embeddings come in by `openai.py`, OpenAI's Responses API by
`responses.py`, Anthropic's Messages API by `anthropic.py`; another protocol is a module beside them,
registered in `gateway/pipeline/__init__.py`. An ingress also turns the answer into its API's: passed
through from a model that speaks it, translated (`gateway.protocols`) from one that does not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from gateway.backends.base import Operation, Reply
from gateway.errors import InvalidRequest, NanorouteError, PayloadTooLarge
from gateway.pipeline.context import Receive, RequestContext
from gateway.pipeline.sse import Tap
from gateway.routing.request import Native, RoutedRequest, from_body


class Ingress(Protocol):
    routes: Mapping[str, Operation]
    """Path -> the operation a request to it asks for."""

    async def parse(self, ctx: RequestContext, raw: bytes) -> RoutedRequest:
        """The request, from its body and headers; raises a ClientError for one that is not valid."""

    def answer(self, ctx: RequestContext, reply: Reply, native: bool) -> bytes:
        """The body to send for an upstream's JSON answer: in the client's API already when `native`, else
        a chat completion to translate."""

    def tap(self, ctx: RequestContext, native: bool) -> Tap:
        """What relays an upstream's stream to the client (see `answer` for `native`)."""

    def error_body(self, exc: NanorouteError) -> bytes:
        """The error as the protocol's clients expect it."""

    def count_body(self, tokens: int) -> bytes:
        """The answer to a token count (`Operation.COUNT_TOKENS`), for an ingress that serves one."""


def openai_count(tokens: int) -> bytes:
    """A token count as OpenAI's API words it."""
    return b'{"object":"response.input_tokens","input_tokens":%d}' % tokens


def header_text(value: bytes | None) -> str | None:
    """A request header's value as text (HTTP's latin-1), or None when it was not sent."""
    return value.decode("latin-1") if value else None


def translated(ctx: RequestContext, chat: dict[str, Any], native: Native, metadata: object) -> RoutedRequest:
    """The request of an API other than chat completions: routed by `chat`, its translation (or stand-in),
    carrying the client's own request as `native`. `metadata`: the client's, where `metadata.task` is read."""
    h = ctx.headers
    req = from_body(Operation.CHAT, orjson.dumps(chat), chat, task_header=header_text(h.task),
                    key_id=ctx.record.key_id, request_id=ctx.record.request_id, pin=header_text(h.pin),
                    metadata=metadata)
    req.native = native
    req.add_usage = req.stream  # the translation reads the usage, whatever the client asked
    return req


def request_id(given: bytes | None) -> str:
    """The client's X-Request-Id when it is one (printable ASCII, at most 128 characters), else a new one."""
    if given and len(given) <= 128 and given.isascii() and given.decode().isprintable():
        return given.decode()
    return os.urandom(16).hex()  # 32 random hex digits like uuid4().hex, without a UUID object (2 us of 3)


async def read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes:
    """The whole body, at most `limit` bytes; raises PayloadTooLarge past it."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise PayloadTooLarge(f"The request body is over the gateway's limit of {limit} bytes")
    message = await receive()
    body: bytes = message.get("body", b"")
    # A chunked body has no content-length, and the server may hand it over whole in one message.
    if len(body) > limit:
        raise PayloadTooLarge(f"The request body is over the gateway's limit of {limit} bytes")
    if not message.get("more_body", False):
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("The client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is over the gateway's limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
