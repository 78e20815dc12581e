"""What one proxied request costs inside the gateway, without the HTTP server: the ASGI handler called
in process, one request at a time, against the shared harness's mock upstream on another core.

    .venv/bin/python bench/hotpath.py [--n 20000] [--json] [--api chat|responses|messages] [--cpu 1] [--mock-cpu 0]

Prints, per request, the CPU time of this process and the wall time to the first body byte handed to
the server (`ttft`) and to the end. uvicorn's own parsing and sends are not in these figures (see
`bench/run.sh` for the whole gateway); what is left is the gateway's code and aiohttp's client, which is
what a change to the hot path moves. Metrics and the access log are on, as by default; access lines
go to /dev/null.

`--api responses` and `--api messages` send the same request through OpenAI's Responses API and
Anthropic's Messages API: the mock speaks chat completions only, so each is translated both ways; the
difference with `--api chat` is what translation costs. `--native` points the backend at
`bench/native_mock.py`, which speaks both: with `--api responses` an `openai` backend marked
`native: [responses]`, as with OpenAI's own API; with `--api messages` a `litellm` backend for provider
`anthropic`, whose Messages requests go to the mock as they would to api.anthropic.com. The request and
the answer pass through untranslated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from gateway.app import create_app
from gateway.server import configure_logging
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HARNESS = Path(os.environ.get("PEERBENCH", ROOT.parent / "shared" / "bench"))
CONFIG = (ROOT / "bench" / "nanoroute.yaml.tmpl").read_text()


PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}


def body(stream: bool, api: str = "chat") -> bytes:
    message = {"role": "user", "content": "Say hello in one short sentence."}
    b: dict[str, Any] = {"model": "small", "messages": [message], "max_tokens": 16}
    if api == "responses":
        b = {"model": "small", "input": message["content"], "max_output_tokens": 16, "store": False}
    if stream:
        b["stream"] = True
    return orjson.dumps(b)


async def one(app: Any, raw: bytes, marks: list[float], path: str = PATHS["chat"]) -> None:
    sent = False
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not marks:
            marks.append(time.perf_counter())

    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"content-length", str(len(raw)).encode())]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers,
             "query_string": b"", "http_version": "1.1", "scheme": "http"}
    await app(scope, receive, send)


async def run(n: int, warmup: int, stream: bool, mock_url: str, api: str = "chat",
              native: bool = False) -> dict[str, float]:
    config = CONFIG.replace("{mock_url}", mock_url)
    if native and api == "messages":
        os.environ.setdefault("NANOROUTE_BENCH_ANTHROPIC_KEY", "sk-ant-bench")
        config = config.replace('{type: openai, url: "' + mock_url + '/v1"}', '{type: litellm, provider: anthropic, '
                                'api_key_env: NANOROUTE_BENCH_ANTHROPIC_KEY, url: "' + mock_url + '"}')
    elif native:
        config = config.replace('url: "' + mock_url + '/v1"}', 'url: "' + mock_url + '/v1", native: [responses]}')
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config)
    settings = Settings(config=Path(f.name), reload_interval_s=0, log_level="warning")
    configure_logging(settings)
    app = create_app(settings)
    raw, path = body(stream, api), PATHS[api]
    ttft: list[float] = []
    total: list[float] = []
    async with app.lifespan():
        for _ in range(warmup):  # pools, caches, the allocator
            await one(app, raw, [], path)
        cpu0 = time.process_time()
        for _ in range(n):
            marks: list[float] = []
            t0 = time.perf_counter()
            await one(app, raw, marks, path)
            t1 = time.perf_counter()
            ttft.append(marks[0] - t0)
            total.append(t1 - t0)
        cpu = time.process_time() - cpu0
    os.unlink(f.name)
    return {"cpu_us": 1e6 * cpu / n, "ttft_p50_us": 1e6 * statistics.median(ttft),
            "total_p50_us": 1e6 * statistics.median(total)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--json", action="store_true", help="JSON requests instead of streams")
    ap.add_argument("--api", choices=list(PATHS), default="chat", help="the API the requests come in by")
    ap.add_argument("--native", action="store_true", help="a mock that speaks the API, passed through "
                    "(--api responses or messages)")
    ap.add_argument("--cpu", default="1", help="pin this process to this CPU ('' for no pin)")
    ap.add_argument("--mock-cpu", default="0")
    a = ap.parse_args()
    if a.cpu:
        os.sched_setaffinity(0, {int(a.cpu)})
    port = free_port()
    cmd = [sys.executable, str(HARNESS / "mock_upstream.py"), "--port", str(port)]
    if a.native:
        cmd = [sys.executable, str(ROOT / "bench" / "native_mock.py"), "--port", str(port)]
    if a.mock_cpu:
        cmd = ["taskset", "-c", a.mock_cpu, *cmd]
    mock = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("the mock upstream did not start") from None
                time.sleep(0.05)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)  # the access log's lines
        import uvloop

        r = uvloop.run(run(a.n, a.warmup, not a.json, f"http://127.0.0.1:{port}", a.api, a.native))
        mode = f"{a.api}{' native' if a.native else ''} " + ("json" if a.json else "stream")
        print(f"{mode}: cpu {r['cpu_us']:.0f} us/req, ttft p50 {r['ttft_p50_us']:.0f} us, "
              f"end p50 {r['total_p50_us']:.0f} us (n={a.n})", flush=True)
    finally:
        mock.terminate()
        mock.wait(5)


if __name__ == "__main__":
    main()
