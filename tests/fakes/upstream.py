"""A fake OpenAI-compatible upstream: a real aiohttp HTTP server on loopback that can misbehave.

Set `behaviour` to choose what the next requests get:

    ok            a chat/completions/embeddings answer; streams send `chunks` deltas and [DONE]
    status:N      HTTP N with an OpenAI error envelope, or `error_body` when set (429 adds Retry-After: 1)
    context       400 with OpenAI's context_length_exceeded error
    hang          accept the request and never answer
    stall_first   stream: send headers, then nothing
    stall_mid     stream: send one chunk, then nothing
    reset         close the connection without answering
    cut           stream: send one chunk, then close the connection
    garbage       200 with a body that is not JSON (stream: a line that is not SSE)
    bad_json      200 with JSON cut short (stream: an event whose data is not JSON)
    stall_role    stream: send a role-only first chunk (as vLLM does), then nothing
    error_event   stream: 200, then an error event (`data: {"error": ...}`) before any content
    slow_chunks   stream: wait `chunk_delay_s` before each chunk after the first

`switch_after` / `switch_to`: requests after the first `switch_after` get `switch_to` instead, so an
upstream can start failing halfway through a test. `retry_after` is the 429's Retry-After header (None:
no header). GET /health answers `health_status` (200 by default) and counts in `health_checks`; GET
/metrics says `waiting` requests are queued, as vLLM's `vllm:num_requests_waiting`.

With `delay_s` set, every request waits that long before it is answered (whatever the behaviour): a
slow upstream, for requests that must still be in flight while something else happens.

With `linger_s` set, a stream waits that long after its `[DONE]` before it ends the response: the
client has its whole answer while the upstream has not finished.

An `answer` that holds `{nonce}` stands for a judge that follows its instructions: the placeholder becomes
the grading code that the system message asks the verdict to carry.

With `compress` set, answers are gzip- or deflate-compressed whenever the request's Accept-Encoding
allows it, as OpenAI's servers do.

With `tools` set, it is an agent's model: a chat request that offers tools and whose last message is not
a tool result is answered with a call to its first tool (`tool_arguments`), JSON or streamed in fragments;
a tool result is answered with text that quotes it ("The tool said: ...").

POST /v1/responses answers as OpenAI's Responses API does (a Response, or its stream of events, with
`answer` as the text): the upstream of a backend that speaks that API natively.

Every request is recorded (path, headers with lower-case names, parsed body) for assertions.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def check(self) -> bool:
        """The gateway's own check of the model before its breaker opens, not a client's request."""
        return self.headers.get("x-request-id", "").startswith("breaker-check-")


@dataclass
class FakeUpstream:
    name: str = "fake"
    behaviour: str = "ok"
    chunks: int = 3
    answer: str = "Hello from the fake upstream."
    compress: bool = False
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    linger_s: float = 0.0
    retry_after: str | None = "1"
    switch_after: int | None = None
    switch_to: str = "ok"
    health_status: int = 200
    health_checks: int = 0
    waiting: int = 0
    error_body: dict[str, Any] | None = None
    """For `status:N`: the JSON body to answer with instead of an OpenAI envelope (e.g. vLLM's shape)."""
    tools: bool = False
    tool_arguments: str = '{"city": "Paris"}'
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    open_requests: int = 0
    cancelled: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def served(self) -> list[Seen]:
        """The requests made for clients: what was seen, less the gateway's breaker checks."""
        return [s for s in self.seen if not s.check]

    def app(self) -> web.Application:
        app = web.Application()
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            app.router.add_post(path, self._handle)
            # Azure OpenAI's shape: /openai/deployments/{deployment}/chat/completions?api-version=...
            app.router.add_post("/openai/deployments/{deployment}" + path.removeprefix("/v1"), self._handle)
        app.router.add_post("/v1/responses", self._handle)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        text = ("# TYPE vllm:num_requests_waiting gauge\n"
                f'vllm:num_requests_waiting{{model_name="{self.name}"}} {float(self.waiting)}\n')
        return web.Response(text=text)

    async def _health(self, request: web.Request) -> web.Response:
        self.health_checks += 1
        return web.Response(status=self.health_status)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.name, "object": "model"}]})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        return await self._handle_parsed(request, json.loads(await request.read()))

    async def _handle_parsed(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        self.seen.append(Seen(request.path_qs, {k.lower(): v for k, v in request.headers.items()}, body))
        self.open_requests += 1
        try:
            return await self._answer(request, body)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.open_requests -= 1

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        mode = self.behaviour
        if self.switch_after is not None and len(self.seen) > self.switch_after:
            mode = self.switch_to
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if mode.startswith("status:"):
            status = int(mode.split(":")[1])
            headers = {"Retry-After": self.retry_after} if status == 429 and self.retry_after is not None else {}
            err = self.error_body or {
                "error": {"message": f"fake {status}", "type": "server_error", "param": None, "code": None}}
            return web.json_response(err, status=status, headers=headers)
        if mode == "context":
            err = {"error": {"message": "This model's maximum context length is 10 tokens.",
                             "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}
            return web.json_response(err, status=400)
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "reset":
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(0.1)
            return web.Response()
        if request.path.endswith("/responses"):
            return await self._responses(request, body)
        if body.get("stream"):
            return await self._stream(request, body, mode)
        if mode == "garbage":
            return web.Response(body=b"<html>not json</html>", content_type="application/json")
        if mode == "bad_json":
            return web.Response(body=b'{"id": "cmpl-1", "choices": [', content_type="application/json")
        resp = web.json_response(self._completion(request.path, body))
        if self.compress:
            resp.enable_compression()
        return resp

    def _completion(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
        if path.endswith("/embeddings"):
            return {"object": "list", "model": body["model"], "usage": {"prompt_tokens": 3, "total_tokens": 3},
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}]}
        if path.endswith("/chat/completions") and self._calls_tool(body):
            call = {"id": f"call_{len(self.seen)}", "type": "function",
                    "function": {"name": body["tools"][0]["function"]["name"], "arguments": self.tool_arguments}}
            choice = {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                      "logprobs": None, "finish_reason": "tool_calls"}
            obj = "chat.completion"
        elif path.endswith("/chat/completions"):
            choice = {"index": 0, "message": {"role": "assistant", "content": self._answer_to(body)},
                      "logprobs": None, "finish_reason": "stop"}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": self.answer, "logprobs": None, "finish_reason": "stop"}
            obj = "text_completion"
        return {"id": f"cmpl-{self.name}-{len(self.seen)}", "object": obj, "created": int(time.time()),
                "model": body["model"], "choices": [choice], "usage": usage}

    def _calls_tool(self, body: dict[str, Any]) -> bool:
        messages = body.get("messages") or [{}]
        return self.tools and bool(body.get("tools")) and messages[-1].get("role") != "tool"

    def _answer_to(self, body: dict[str, Any]) -> str:
        """`answer`, its `{nonce}` (if any) replaced by the grading code that a judge's instructions ask for;
        with `tools`, a tool's result quoted."""
        messages = body.get("messages") or [{}]
        if self.tools and messages[-1].get("role") == "tool":
            return f"The tool said: {messages[-1].get('content')}"
        if "{nonce}" not in self.answer:
            return self.answer
        system = " ".join(str(m.get("content")) for m in body.get("messages", []) if m.get("role") == "system")
        found = re.search(r"PASS-([0-9a-f]+)", system)
        return self.answer.replace("{nonce}", found.group(1) if found else "")

    async def _stream(self, request: web.Request, body: dict[str, Any], mode: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        if self.compress:
            resp.enable_compression()
        await resp.prepare(request)
        if mode == "stall_first":
            await asyncio.sleep(3600)
        if mode == "garbage":
            await resp.write(b"this is not server-sent events\n\n")
            await resp.write_eof()
            return resp
        if mode == "bad_json":
            await resp.write(b"data: {not json\n\n")
            await resp.write_eof()
            return resp
        if mode == "error_event":
            err = {"error": {"message": "engine died", "type": "InternalServerError", "param": None, "code": 500}}
            await resp.write(b"data: " + json.dumps(err).encode() + b"\n\n")
            await resp.write_eof()
            return resp
        if mode == "stall_role":
            role = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(role).encode() + b"\n\n")
            await asyncio.sleep(3600)
        created = int(time.time())
        if self._calls_tool(body):
            return await self._stream_tool_call(resp, body, created)
        for i in range(self.chunks):
            delta = {"content": f"tok{i} "} if i else {"role": "assistant", "content": "tok0 "}
            chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created,
                     "model": body["model"], "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            if i and mode == "slow_chunks":
                await asyncio.sleep(self.chunk_delay_s)
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if i == 0 and mode == "stall_mid":
                await asyncio.sleep(3600)
            if i == 0 and mode == "cut":
                assert request.transport is not None
                request.transport.abort()
                return resp
        last = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": body["model"],
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(b"data: " + json.dumps(last).encode() + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created,
                     "model": body["model"], "choices": [],
                     "usage": {"prompt_tokens": 7, "completion_tokens": self.chunks, "total_tokens": 7 + self.chunks}}
            await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        if self.linger_s:
            await asyncio.sleep(self.linger_s)
        await resp.write_eof()
        return resp

    async def _stream_tool_call(self, resp: web.StreamResponse, body: dict[str, Any],
                                created: int) -> web.StreamResponse:
        """A call to the first tool, its arguments in two fragments, as OpenAI streams it."""
        name, args = body["tools"][0]["function"]["name"], self.tool_arguments
        half = len(args) // 2
        deltas = [{"role": "assistant", "content": None, "tool_calls": [
                      {"index": 0, "id": f"call_{len(self.seen)}", "type": "function",
                       "function": {"name": name, "arguments": ""}}]},
                  {"tool_calls": [{"index": 0, "function": {"arguments": args[:half]}}]},
                  {"tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]}]
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": body["model"]}
        for delta in deltas:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
        await resp.write(b"data: " + json.dumps(last).encode() + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {**base, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}}
            await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _responses(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        """OpenAI's Responses API: a completed response with `answer` as its text, or its events."""
        rid, mid = f"resp_{self.name}_{len(self.seen)}", f"msg_{self.name}_{len(self.seen)}"
        usage = {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 4,
                 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 13}
        part = {"type": "output_text", "text": self.answer, "annotations": []}
        item = {"id": mid, "type": "message", "role": "assistant", "status": "completed", "content": [part]}
        response = {"id": rid, "object": "response", "created_at": int(time.time()), "status": "completed",
                    "model": body["model"], "output": [item], "usage": usage, "error": None,
                    "incomplete_details": None, "instructions": body.get("instructions"), "metadata": {},
                    "parallel_tool_calls": True, "temperature": 1.0, "tool_choice": "auto", "tools": [],
                    "top_p": 1.0, "store": body.get("store", True)}
        if not body.get("stream"):
            return web.json_response(response)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        started = {**response, "status": "in_progress", "output": [], "usage": None}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": started},
            {"type": "response.output_item.added", "output_index": 0,
             "item": {**item, "status": "in_progress", "content": []}},
            {"type": "response.content_part.added", "item_id": mid, "output_index": 0, "content_index": 0,
             "part": {**part, "text": ""}},
            *({"type": "response.output_text.delta", "item_id": mid, "output_index": 0, "content_index": 0,
               "delta": word, "logprobs": []} for word in self.answer.split(" ")),
            {"type": "response.output_text.done", "item_id": mid, "output_index": 0, "content_index": 0,
             "text": self.answer, "logprobs": []},
            {"type": "response.content_part.done", "item_id": mid, "output_index": 0, "content_index": 0, "part": part},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": response},
        ]
        for n, event in enumerate(events):
            data = json.dumps({**event, "sequence_number": n})
            await resp.write(f"event: {event['type']}\ndata: {data}\n\n".encode())
        await resp.write_eof()
        return resp
