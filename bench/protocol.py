"""What the server's protocol costs per request: uvicorn's httptools protocol against the gateway's
(`gateway.serving.GuardedHttpToolsProtocol`, with its limits), in process, without sockets or the gateway.

    .venv/bin/python bench/protocol.py [--n 20000] [--rounds 7] [--only plain|guarded] [--fresh] [--cpu 1]

One keep-alive connection (`--fresh`: a new connection for each request, as clients without keep-alive
make, opened and closed around it); each request is the benchmark's JSON chat request, arriving in one read, and is
answered by a minimal ASGI application (read the body, send a 200 JSON answer with content-length), on
uvloop. Both protocols run in alternating rounds; the medians of CPU time per request are printed, with
their difference: the cost of the limits' bookkeeping per request. `--only` runs one of them (for
cachegrind, where two request counts give the instructions per request).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import time
from typing import Any

import orjson
import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.serving import uvicorn_options
from gateway.settings import Settings

BODY = orjson.dumps({"model": "small", "max_tokens": 16,
                     "messages": [{"role": "user", "content": "Say hello in one short sentence."}]})
REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:18110\r\nuser-agent: load/1.0\r\n"
           b"accept: */*\r\ncontent-type: application/json\r\ncontent-length: " + str(len(BODY)).encode()
           + b"\r\n\r\n" + BODY)
ANSWER = orjson.dumps({"id": "cmpl-1", "object": "chat.completion", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}]})


class Transport(asyncio.Transport):
    """Takes the writes; reports the request's answer as soon as its last byte is written."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: asyncio.Event = asyncio.Event()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if bytes(data).endswith(ANSWER):
            self.answered.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 18110), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    message = await receive()
    assert message["body"] == BODY
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]})
    await send({"type": "http.response.body", "body": ANSWER, "more_body": False})


@functools.cache
def _server(kind: str) -> tuple[Any, uvicorn.Config, ServerState]:
    options = uvicorn_options(Settings())
    factory = HttpToolsProtocol if kind == "plain" else options.pop("http")
    options.pop("http", None)
    config = uvicorn.Config(app, **{**options, "lifespan": "off"})
    config.load()
    return factory, config, ServerState()


def protocol(kind: str) -> asyncio.Protocol:
    factory, config, state = _server(kind)
    return factory(config=config, server_state=state, app_state={})  # type: ignore[no-any-return]


async def run(kind: str, n: int, fresh: bool) -> float:
    """CPU seconds per request over `n` requests, on one connection or each on its own."""
    proto = protocol(kind)
    transport = Transport()
    proto.connection_made(transport)
    for _ in range(200):  # warm
        transport.answered.clear()
        proto.data_received(REQUEST)
        await transport.answered.wait()
    cpu0 = time.process_time()
    for _ in range(n):
        if fresh:
            proto.connection_lost(None)
            proto = protocol(kind)
            proto.connection_made(transport)
        transport.answered.clear()
        proto.data_received(REQUEST)
        await transport.answered.wait()
    cpu = time.process_time() - cpu0
    proto.connection_lost(None)
    return cpu / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--only", choices=["plain", "guarded"])
    ap.add_argument("--fresh", action="store_true", help="a new connection for each request")
    ap.add_argument("--cpu", default="1", help="pin this process to this CPU ('' for no pin)")
    a = ap.parse_args()
    if a.cpu:
        os.sched_setaffinity(0, {int(a.cpu)})
    kinds = [a.only] if a.only else ["plain", "guarded"]
    results: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(1 if a.only else a.rounds):
        for kind in kinds:
            results[kind].append(uvloop.run(run(kind, a.n, a.fresh)))
    for kind, values in results.items():
        print(f"{kind}: {1e6 * statistics.median(values):.2f} us/req "
              f"(rounds: {', '.join(f'{1e6 * v:.2f}' for v in values)})")
    if not a.only:
        diff = statistics.median(results["guarded"]) - statistics.median(results["plain"])
        print(f"guarded - plain: {1e6 * diff:+.2f} us/req")


if __name__ == "__main__":
    main()
