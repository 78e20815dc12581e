"""The flywheel demo's teacher: a small OpenAI-compatible server that stands in for a hosted large model
asked to triage support tickets.

    python examples/flywheel/teacher.py [--host 127.0.0.1] [--port 8090] [--model gpt-4o-mini] [--latency-ms 0]

It answers `POST /v1/chat/completions` (JSON, or SSE with `"stream": true`) as a large model prompted with
SYSTEM_PROMPT would: with one queue name. A ticket it knows (tickets.jsonl beside this file, matched on
the last user message, case and spacing aside) gets its label from the dataset; any other text gets the
queue that `classify`, a keyword classifier, picks. `GET /v1/models` lists the one model name it answers
as (any requested name is accepted and echoed back). Usage is counted as OpenAI counts chat tokens, with
an estimate of cl100k's token count (within about 15% on these tickets). With `--port 0` it picks a free
port; either way it prints `teacher listening on http://HOST:PORT/v1` once it accepts requests.

Importable (the demo test starts it in-process): `make_app()` builds the aiohttp app; `load_tickets`,
`chat` and `example` give the dataset as requests and as chat-format training examples. Needs aiohttp
(the gateway's venv has it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

QUEUES = ("billing", "shipping", "account", "technical", "returns")
SYSTEM_PROMPT = (
    "You triage customer support tickets. Reply with one queue name only: billing (charges, invoices, payments), "
    "shipping (delivery, tracking, couriers), account (sign-in, passwords, profile), technical (bugs, errors, "
    "crashes) or returns (returns, exchanges, replacements)."
)
"""The same system prompt as adapters/ticket-triage's examples."""
TICKETS = Path(__file__).resolve().with_name("tickets.jsonl")
MODEL = "gpt-4o-mini"

# Keyword stems for tickets the dataset does not know; the queue with the most hits wins, ties and no hit
# at all go to the first queue in FALLBACK_ORDER among the best.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "billing": ("charg", "invoice", "payment", "paid", "pay ", "bill", "receipt", "refund", "price", "fee",
                "subscription", "renewal", "discount", "promo", "vat", "tax", "card", "money", "instalment",
                "transaction", "finance"),
    "shipping": ("deliver", "shipping", "ship", "tracking", "track", "courier", "parcel", "package", "dispatch",
                 "customs", "arrive", "depot", "warehouse", "carrier", "address", "pickup", "locker", "postage"),
    "account": ("password", "sign in", "sign-in", "log in", "login", "logged", "account", "profile", "email",
                "two-factor", "2fa", "username", "locked", "verify", "authenticator", "passkey", "register",
                "personal data", "unsubscribe"),
    "technical": ("crash", "error", "bug", "freez", "slow", "load", "blank", "broken link", "install", "update",
                  "app ", "browser", "sync", "notification", "upload", "button", "screen", "api", "integration",
                  "outage", "down", "glitch"),
    "returns": ("return", "exchange", "replace", "replacement", "swap", "refund for", "send it back",
                "send back", "doesn't fit", "too small", "too big", "wrong size", "damaged", "faulty", "defect",
                "broken", "cracked", "scratched", "restocking"),
}
FALLBACK_ORDER = ("technical", "account", "billing", "shipping", "returns")


def normalise(text: str) -> str:
    """What tickets are matched on: lower case, single spaces, no final punctuation."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".!?").lower()


def load_tickets(split: str | None = None, path: Path = TICKETS) -> list[dict[str, str]]:
    """The dataset's rows ({"id", "queue", "split", "kind", "text"}), those of one split ("train" or
    "heldout") when `split` is given."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


def chat(text: str) -> list[dict[str, str]]:
    """The request's messages for a ticket: the system prompt, then the ticket."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]


def example(row: dict[str, str]) -> dict[str, Any]:
    """A ticket as a chat-format training example (OpenAI's fine-tuning format), answered with its queue."""
    return {"messages": [*chat(row["text"]), {"role": "assistant", "content": row["queue"]}]}


def classify(text: str) -> str:
    """The keyword classifier for tickets the dataset does not know."""
    low = f" {text.lower()} "
    hits = {q: sum(low.count(k) for k in words) for q, words in KEYWORDS.items()}
    best = max(hits.values())
    return next(q for q in FALLBACK_ORDER if hits[q] == best)


def count_tokens(text: str) -> int:
    """About cl100k's count: a word up to 10 letters is one token, longer ones more; digits go in threes."""
    n = 0
    for piece in re.findall(r"\w+|[^\w\s]", text):
        n += 1 + (len(piece) - 1) // 10 if piece.isalpha() else (len(piece) + 2) // 3
    return n


def prompt_tokens(messages: Iterable[dict[str, Any]]) -> int:
    """OpenAI's accounting for chat prompts: 3 tokens a message (4 with a name), 3 to prime the reply."""
    total = 3
    for m in messages:
        total += 3 + count_tokens(_text(m.get("content"))) + (1 if m.get("name") else 0)
    return total


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


class Teacher:
    """Answers a chat with a queue: the dataset's label for a known ticket, else the keyword classifier's."""

    def __init__(self, rows: Iterable[dict[str, str]]) -> None:
        self.labels = {normalise(r["text"]): r["queue"] for r in rows}
        self.requests = 0
        self.known = 0

    def answer(self, messages: list[dict[str, Any]]) -> str:
        self.requests += 1
        ticket = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        label = self.labels.get(normalise(ticket))
        if label is not None:
            self.known += 1
            return label
        return classify(ticket)


TEACHER = web.AppKey("teacher", Teacher)


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    return web.json_response(body, status=status)


def _logprobs(label: str) -> dict[str, Any]:
    return {"content": [{"token": label, "logprob": 0.0, "bytes": list(label.encode()), "top_logprobs": []}]}


def make_app(rows: Iterable[dict[str, str]] | None = None, model: str = MODEL,
             latency_s: float = 0.0) -> web.Application:
    """The teacher as an aiohttp app; `rows` default to every ticket of tickets.jsonl. `latency_s` is
    waited before each answer, to stand in for a hosted model's time to first token. The `Teacher`
    (its request counters) is `app[TEACHER]`."""
    teacher = Teacher(load_tickets() if rows is None else rows)

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "flywheel-teacher"}]})

    async def completions(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return _error(400, "'messages' must be a non-empty array of objects", "messages")
        label = teacher.answer(messages)
        if latency_s:
            await asyncio.sleep(latency_s)
        n = body.get("n") if isinstance(body.get("n"), int) and body.get("n", 1) > 0 else 1
        usage = {"prompt_tokens": prompt_tokens(messages), "completion_tokens": count_tokens(label) * n}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
                "model": str(body.get("model") or model), "system_fingerprint": "fp_flywheel_teacher"}
        logprobs = _logprobs(label) if body.get("logprobs") else None
        if not body.get("stream"):
            choices = [{"index": i, "message": {"role": "assistant", "content": label, "refusal": None},
                        "logprobs": logprobs, "finish_reason": "stop"} for i in range(n)]
            return web.json_response({**head, "object": "chat.completion", "choices": choices, "usage": usage})
        return await _stream(request, head, label, n, logprobs, usage, body.get("stream_options"))

    app = web.Application()
    app[TEACHER] = teacher
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", completions)
    return app


async def _stream(request: web.Request, head: dict[str, Any], label: str, n: int, logprobs: dict[str, Any] | None,
                  usage: dict[str, int], options: Any) -> web.StreamResponse:
    """SSE as OpenAI streams a chat: the role, the content, the finish reason, then (with
    `stream_options.include_usage`) a chunk with the usage and no choices, then `[DONE]`."""
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)

    async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
        chunk = {**head, "object": "chat.completion.chunk", "choices": choices, **extra}
        if include_usage and "usage" not in extra:
            chunk["usage"] = None
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

    for i in range(n):
        await send([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                     "finish_reason": None}])
        await send([{"index": i, "delta": {"content": label}, "logprobs": logprobs, "finish_reason": None}])
        await send([{"index": i, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
    if include_usage:
        await send([], usage=usage)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def serve(host: str, port: int, app: web.Application) -> None:
    runner = web.AppRunner(app, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1] if site._server else port  # type: ignore[union-attr]
    print(f"teacher listening on http://{host}:{bound}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090, help="0 picks a free port (printed at start)")
    p.add_argument("--model", default=MODEL, help=f"the model name /v1/models lists (default {MODEL})")
    p.add_argument("--latency-ms", type=float, default=0.0, help="wait this long before each answer")
    p.add_argument("--know", type=Path, action="append", default=[],
                   help="also know the tickets of this JSONL file (rows with `queue`, and `text` or `messages`, "
                        "as examples/router/triage.jsonl): a large model that knows the task (repeatable)")
    args = p.parse_args(argv)
    rows = load_tickets() + [r for path in args.know for r in known(path)]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, make_app(rows, model=args.model, latency_s=args.latency_ms / 1000)))


def known(path: Path) -> list[dict[str, str]]:
    """The tickets of a JSONL file as rows {"text", "queue"}: a row's `text`, or its last user message."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            text = row.get("text") or next(_text(m.get("content")) for m in reversed(row["messages"])
                                           if m.get("role") == "user")
            rows.append({"text": text, "queue": row["queue"]})
    return rows


if __name__ == "__main__":
    main()
