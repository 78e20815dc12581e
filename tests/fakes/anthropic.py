"""A fake Anthropic Messages API: a real aiohttp server on loopback speaking Anthropic's JSON and
event-stream formats (`POST /v1/messages`), for litellm-backend tests.

Set `behaviour`: ok | tool | status:N (Anthropic's error shapes: 400 invalid_request_error,
401 authentication_error, 429 rate_limit_error with retry-after, 500 api_error, 529 overloaded_error) |
context (400 "prompt is too long") | content_filter (400 with a policy message) | hang.
Every request is recorded with its headers and body.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


@dataclass
class FakeAnthropic:
    behaviour: str = "ok"
    answer: str = "Hello from the fake Anthropic."
    input_tokens: int = 11
    output_tokens: int = 6
    seen: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        return app

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append((dict(request.headers), body))
        mode = self.behaviour
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode.startswith("status:"):
            status = int(mode.split(":")[1])
            headers = {"retry-after": "2"} if status == 429 else {}
            return self._error(status, f"fake {status}", headers)
        if mode == "context":
            return self._error(400, "prompt is too long: 210000 tokens > 200000 maximum")
        if mode == "content_filter":
            return self._error(400, "Output blocked by content filtering policy")
        content = self._content()
        stop = "tool_use" if mode == "tool" else "end_turn"
        if body.get("stream"):
            return await self._stream(request, body, content, stop)
        return web.json_response({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"],
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
        })

    def _content(self) -> list[dict[str, Any]]:
        if self.behaviour == "tool":
            return [{"type": "tool_use", "id": "toolu_fake", "name": "get_weather", "input": {"city": "Paris"}}]
        return [{"type": "text", "text": self.answer}]

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        err = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}
        return web.json_response(err, status=status, headers=headers or {})

    async def _stream(self, request: web.Request, body: dict[str, Any], content: list[dict[str, Any]],
                      stop: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await resp.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

        await event("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "content": [], "model": body["model"],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 1}}})
        block = content[0]
        if block["type"] == "text":
            await event("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {"type": "text", "text": ""}})
            await event("ping", {"type": "ping"})
            words = block["text"].split(" ")
            for i, word in enumerate(words):
                text = word if i == 0 else " " + word
                await event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                    "delta": {"type": "text_delta", "text": text}})
        else:
            await event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})
            await event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
        await event("content_block_stop", {"type": "content_block_stop", "index": 0})
        await event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                      "usage": {"output_tokens": self.output_tokens}})
        await event("message_stop", {"type": "message_stop"})
        await resp.write_eof()
        return resp
