"""Make the ticket-triage routing dataset, examples/router/triage.jsonl, from two models' real answers.

    .venv/bin/python examples/router/make_dataset.py [--n 2000] [--url URL] [--concurrency 6]

1. **tickets**: `n` tickets from examples/flywheel/make_tickets.py's templates with another seed
   (`make_tickets.routing`: a fifth of them of the hard kind), or those of `--tickets FILE` (as
   `make_tickets.py --routing N --out FILE` writes them).
2. **the small model**: the local stack's LoRA adapter `ticket-triage` (.stack/adapters/ticket-triage),
   served by vLLM on the CPU. Without `--url`, vLLM is started on a free port as scripts/stack/start-vllm.sh
   starts it, and stopped at the end; with `--url`, a running one is used. The adapter is loaded into it
   unless it already serves it.
3. **the large model**: examples/flywheel/teacher.py, the stand-in for `gpt-4o-mini`, started in-process
   on a free port and told the tickets' queues (a large model that knows the task).
4. Each is asked every ticket over HTTP, as `teacher.chat(text)` (the adapter's system prompt, then the
   ticket), greedy, `max_tokens` 8; an answer scores 1.0 when it is the ticket's queue (the rollout's
   `exact`: case, surrounding spaces and quotes, a final full stop aside), else 0.0.

Writes one JSON object a line (`gateway/learned/data.py`'s format; the keys past `scores` are for audit):
{"id", "task": "triage", "kind", "queue", "template", "messages": [system, user],
 "scores": {"ticket-triage": 0|1, "gpt-4o-mini": 0|1}, "answers": {model: the raw answer}}
and prints a summary by kind, which it also writes into examples/router/README.md between its markers.
Needs the local stack built (scripts/stack/build.sh) unless `--url` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
from examples.flywheel import make_tickets, teacher  # noqa: E402
from gateway.distill.evaluate import exact  # noqa: E402  (standard library only)

STACK = Path(os.environ.get("NANOROUTE_STACK_DIR", REPO / ".stack"))
ADAPTER = "ticket-triage"
TEACHER = teacher.MODEL
TASK = "triage"
MAX_TOKENS = 8
OUT = HERE / "triage.jsonl"
README = HERE / "README.md"
BEGIN, END = "<!-- summary: written by make_dataset.py -->", "<!-- end of summary -->"


def log(msg: str) -> None:
    print(f"[router-data {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def vllm() -> Iterator[str]:
    """vLLM started by scripts/stack/start-vllm.sh on a free port, stopped by down.sh at the end: its URL."""
    port = free_port()
    tag = f"router-data-{port}"
    scripts = REPO / "scripts" / "stack"
    env = {**os.environ, "VLLM_PORT": str(port), "VLLM_TAG": tag}
    try:
        subprocess.run(["bash", str(scripts / "start-vllm.sh")], env=env, check=True, timeout=15 * 60)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        subprocess.run(["bash", str(scripts / "down.sh"), tag], check=False, timeout=120)


def load_adapter(url: str, path: Path) -> None:
    """Loads the adapter into the vLLM at `url` unless it serves it already."""
    served = [m["id"] for m in httpx.get(f"{url}/models", timeout=30).json()["data"]]
    if ADAPTER in served:
        return
    if not (path / "adapter_config.json").exists():
        raise SystemExit(f"no adapter at {path}: build the local stack first (scripts/stack/build.sh)")
    root = url.removesuffix("/v1")
    r = httpx.post(f"{root}/v1/load_lora_adapter", json={"lora_name": ADAPTER, "lora_path": str(path)}, timeout=60)
    if r.status_code != 200:
        raise SystemExit(f"vLLM did not load {ADAPTER} from {path}: {r.status_code} {r.text}")


@asynccontextmanager
async def teacher_server(tickets: list[dict[str, str]]) -> AsyncIterator[str]:
    """teacher.py's app on a free loopback port, knowing the tickets' queues: its URL."""
    runner = web.AppRunner(teacher.make_app(rows=tickets))
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        await runner.cleanup()


async def ask_all(url: str, model: str, tickets: list[dict[str, str]], concurrency: int) -> list[str]:
    """`model`'s answer to each ticket, in order, `concurrency` requests at a time."""
    gate = asyncio.Semaphore(concurrency)
    done = 0
    started = time.monotonic()

    async def ask(client: httpx.AsyncClient, ticket: dict[str, str]) -> str:
        nonlocal done
        body = {"model": model, "messages": teacher.chat(ticket["text"]), "temperature": 0, "max_tokens": MAX_TOKENS}
        async with gate:
            r = await client.post(f"{url}/chat/completions", json=body)
        r.raise_for_status()
        done += 1
        if done % 200 == 0:
            log(f"{model}: {done}/{len(tickets)} ({done / (time.monotonic() - started):.1f} tickets/s)")
        return str(r.json()["choices"][0]["message"]["content"] or "")

    async with httpx.AsyncClient(timeout=300) as client:
        return list(await asyncio.gather(*(ask(client, t) for t in tickets)))


def dataset_row(ticket: dict[str, str], answers: dict[str, str]) -> dict[str, Any]:
    return {"id": ticket["id"], "task": TASK, "kind": ticket["kind"], "queue": ticket["queue"],
            "template": ticket.get("template"), "messages": teacher.chat(ticket["text"]),
            "scores": {model: exact(ticket["queue"], answer) for model, answer in answers.items()},
            "answers": answers}


def summary(rows: list[dict[str, Any]]) -> str:
    """A markdown table: by kind, the rows and each model's accuracy, and how often only one is right."""
    lines = ["| kind | rows | `ticket-triage` (adapter) | `gpt-4o-mini` (teacher) | only the teacher right "
             "| only the adapter right |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for kind in [*make_tickets.KINDS, None]:
        part = [r for r in rows if kind is None or r["kind"] == kind]
        if not part:
            continue
        n = len(part)
        a = sum(r["scores"][ADAPTER] for r in part)
        t = sum(r["scores"][TEACHER] for r in part)
        only_t = sum(r["scores"][TEACHER] > r["scores"][ADAPTER] for r in part)
        only_a = sum(r["scores"][ADAPTER] > r["scores"][TEACHER] for r in part)
        name = f"`{kind}`" if kind else "**all**"
        lines.append(f"| {name} | {n} | {a / n:.1%} | {t / n:.1%} | {only_t} | {only_a} |")
    return "\n".join(lines)


def write_readme(table: str, command: str, timings: dict[str, float]) -> None:
    """Replaces README.md's summary (between its markers) with this run's."""
    took = ", ".join(f"{step} {seconds:.0f} s" for step, seconds in timings.items())
    block = (f"{BEGIN}\nMade by `{command}` ({took}):\n\n{table}\n{END}")
    text = README.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{README} has no summary markers ({BEGIN} ... {END})")
    README.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")


async def answers_of(tickets: list[dict[str, str]], url: str, concurrency: int,
                     timings: dict[str, float]) -> dict[str, list[str]]:
    out = {}
    started = time.monotonic()
    log(f"asking {ADAPTER} at {url} {len(tickets)} tickets, {concurrency} at a time")
    out[ADAPTER] = await ask_all(url, ADAPTER, tickets, concurrency)
    timings["adapter"] = time.monotonic() - started
    started = time.monotonic()
    async with teacher_server(tickets) as teacher_url:
        out[TEACHER] = await ask_all(teacher_url, TEACHER, tickets, concurrency)
    timings["teacher"] = time.monotonic() - started
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="how many tickets make_tickets.routing makes (2000)")
    p.add_argument("--tickets", type=Path, help="ask these tickets instead (make_tickets.py --routing's output)")
    p.add_argument("--url", help="a running vLLM's /v1 URL (default: start one, stop it at the end)")
    p.add_argument("--adapter-path", type=Path, default=STACK / "adapters" / ADAPTER)
    p.add_argument("--concurrency", type=int, default=6)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--no-readme", action="store_true", help="do not write the summary into README.md")
    args = p.parse_args(argv)
    command = shlex.join(["python", "examples/router/make_dataset.py", *(sys.argv[1:] if argv is None else argv)])
    tickets = (make_tickets.routing(args.n) if args.tickets is None
               else [json.loads(line) for line in args.tickets.read_text(encoding="utf-8").splitlines() if line])
    timings: dict[str, float] = {}
    started = time.monotonic()
    with (vllm() if args.url is None else _given(args.url)) as url:
        timings["vLLM start"] = time.monotonic() - started
        load_adapter(url, args.adapter_path)
        answers = asyncio.run(answers_of(tickets, url, args.concurrency, timings))
    timings["in all"] = time.monotonic() - started
    rows = [dataset_row(t, {m: answers[m][i] for m in answers}) for i, t in enumerate(tickets)]
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    table = summary(rows)
    log(f"{len(rows)} rows -> {args.out}")
    print(table)
    if not args.no_readme:
        write_readme(table, command, timings)
    return 0


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url.rstrip("/")


if __name__ == "__main__":
    sys.exit(main())
