"""Send a few requests through the local stack's gateway with the official `openai` SDK and print, for each,
the answer and where the gateway sent it and why; then where to look next.

usage: .venv/bin/python scripts/stack/demo.py [--url http://127.0.0.1:8080/v1] [--admin-key-file .stack/admin-key]
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from openai import OpenAI

REPO = Path(__file__).resolve().parents[2]
SYSTEM = json.loads((REPO / "adapters" / "ticket-triage" / "eval.jsonl").read_text().splitlines()[0])[
    "messages"][0]["content"]
TICKET = "Why was I charged a late payment fee?"  # held out: not among the adapter's training examples
HEADERS = ("x-nanoroute-policy", "x-nanoroute-model", "x-nanoroute-reason", "x-nanoroute-fallbacks")


def show(title: str, answer: str, headers: Mapping[str, str], seconds: float) -> None:
    print(f"\n== {title}")
    print(f"   answer: {answer.strip()!r}")
    print("   " + "  ".join(f"{h.removeprefix('x-nanoroute-')}={headers.get(h, '-')}" for h in HEADERS)
          + f"  ({seconds:.1f}s)")


def triage(client: OpenAI, task: str | None) -> None:
    messages: Any = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TICKET}]
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2-135m-instruct", messages=messages, max_tokens=40, temperature=0,
        extra_headers={"X-Nanoroute-Task": task} if task else None)
    reply = raw.parse()
    where = f"with X-Nanoroute-Task: {task}" if task else "without a task"
    show(f"the ticket {TICKET!r} {where}", reply.choices[0].message.content or "", raw.headers,
         time.monotonic() - started)


def general_stream(client: OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "In two sentences, what is a large language model?"}]
    started = time.monotonic()
    with client.chat.completions.with_streaming_response.create(
            model="smollm2-135m-instruct", messages=messages, max_tokens=60, temperature=0, stream=True) as raw:
        print("\n   streaming: ", end="", flush=True)
        text = []
        for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
                print(chunk.choices[0].delta.content, end="", flush=True)
        print()
        show("a general question, streamed", "".join(text), raw.headers, time.monotonic() - started)


def next_steps(url: str, admin_key_file: Path) -> None:
    root = url.removesuffix("/v1")
    body = json.dumps({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": TICKET}]})
    key = f'"Authorization: Bearer $(cat {shlex.quote(str(admin_key_file))})"'
    print(f"""
Where to look next:
  metrics:  curl -s {root}/metrics | grep ^nanoroute_
  explain:  curl -s {root}/admin/explain -H {key} \\
              -H 'X-Nanoroute-Task: triage' -d {shlex.quote(body)}
  config:   curl -s {root}/admin/config -H {key}
  adapters: curl -s {root}/admin/backends -H {key}   (what each vLLM replica serves, its queue)
            .venv/bin/nanoroute adapters list --config scripts/stack/local-stack.yaml
  vLLM:     curl -s http://127.0.0.1:8000/v1/models   (the base model, and the adapter the gateway loaded)
  logs:     {REPO / '.stack' / 'logs'}/
  stop:     scripts/stack/down.sh""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080/v1")
    parser.add_argument("--admin-key-file", type=Path, default=REPO / ".stack" / "admin-key")
    args = parser.parse_args()
    with OpenAI(base_url=args.url, api_key="local", max_retries=0, timeout=120) as client:
        triage(client, "triage")
        triage(client, None)
        general_stream(client)
    next_steps(args.url, args.admin_key_file)


if __name__ == "__main__":
    main()
