"""A mock upstream that speaks OpenAI's Responses API (`POST /v1/responses`) and Anthropic's Messages API
(`POST /v1/messages`), JSON and streams, for `bench/hotpath.py --native`: the gateway relays its answers
as they are, as it does for api.openai.com and api.anthropic.com.

    python bench/native_mock.py --port 8001

The answer is ten text deltas, like the shared harness's chat mock, with each API's framing events around
them, each body encoded once at start.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from aiohttp import web

WORDS = [f"word{i} " for i in range(10)]


def _response(status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
    return {"id": "resp_mock", "object": "response", "created_at": 0, "status": status, "model": "mock-small",
            "output": output, "usage": usage, "error": None, "incomplete_details": None, "instructions": None,
            "metadata": {}, "parallel_tool_calls": True, "temperature": 1.0, "tool_choice": "auto", "tools": [],
            "top_p": 1.0, "store": False}


def bodies() -> tuple[bytes, bytes]:
    text = "".join(WORDS)
    usage = {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 10,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 22}
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"id": "msg_mock", "type": "message", "role": "assistant", "status": "completed", "content": [part]}
    done = _response("completed", [item], usage)
    ids = {"item_id": "msg_mock", "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": _response("in_progress", [], None)},
        {"type": "response.in_progress", "response": _response("in_progress", [], None)},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "status": "in_progress",
                                                                           "content": []}},
        {"type": "response.content_part.added", **ids, "part": {**part, "text": ""}},
        *({"type": "response.output_text.delta", **ids, "delta": w, "logprobs": []} for w in WORDS),
        {"type": "response.output_text.done", **ids, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **ids, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": done},
    ]
    stream = b"".join(f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': n})}\n\n".encode()
                      for n, e in enumerate(events))
    return json.dumps(done).encode(), stream


def _sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def messages_bodies() -> tuple[bytes, bytes]:
    """Anthropic's Message, and its stream: `message_start`, `ping`, one text block of ten deltas,
    `message_delta` with the usage, `message_stop`."""
    message = {"id": "msg_mock", "type": "message", "role": "assistant", "model": "mock-small",
               "content": [{"type": "text", "text": "".join(WORDS)}], "stop_reason": "end_turn",
               "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 10}}
    start = {**message, "content": [], "stop_reason": None, "usage": {"input_tokens": 12, "output_tokens": 1}}
    stream = _sse([
        {"type": "message_start", "message": start},
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}} for w in WORDS),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 10}},
        {"type": "message_stop"},
    ])
    return json.dumps(message).encode(), stream


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    port = ap.parse_args().port
    answers = {"/v1/responses": bodies(), "/v1/messages": messages_bodies()}

    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        whole, stream = answers[request.path]
        if not body.get("stream"):
            return web.Response(body=whole, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(stream)
        await resp.write_eof()
        return resp

    app = web.Application()
    for path in answers:
        app.router.add_post(path, answer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
