"""Send a few requests through the local stack's gateway with the official `openai` SDK and print, for each,
the answer and where the gateway sent it and why; then where to look next.

First, support tickets of task `triage`, which the learned router splits per prompt between the adapter and
the stand-in hosted model: the first tickets the router held out from its training, each with the router's
predicted quality of the adapter, the model that answered, and at the end each model's share, cost and the
savings (from the gateway's own metrics), and what the split gives on all the held-out tickets.

usage: .venv/bin/python scripts/stack/demo.py [--url http://127.0.0.1:8080/v1] [--admin-key-file .stack/admin-key]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

REPO = Path(__file__).resolve().parents[2]
SYSTEM = json.loads((REPO / "adapters" / "ticket-triage" / "eval.jsonl").read_text().splitlines()[0])[
    "messages"][0]["content"]
TICKET = "Why was I charged a late payment fee?"  # held out: not among the adapter's training examples
HEADERS = ("x-nanoroute-policy", "x-nanoroute-model", "x-nanoroute-reason", "x-nanoroute-fallbacks")
ROUTER = Path(os.environ.get("NANOROUTE_STACK_DIR", REPO / ".stack")) / "routers" / "triage"
SHOWN = 12  # held-out tickets sent, in the file's order (every kind, hard ones included)


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


def held_out_tickets() -> list[dict[str, Any]]:
    """Tickets the router never trained on: the first SHOWN of its held-out split."""
    lines = (ROUTER / "heldout.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()][:SHOWN]


def metric(text: str, name: str, **labels: str) -> dict[str, float]:
    """A metric's samples whose labels include `labels`, by their `model` label (or `-`)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(rf"{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            model = re.search(r'model="([^"]*)"', m.group(1))
            key = model.group(1) if model else "-"
            out[key] = out.get(key, 0.0) + float(m.group(2))
    return out


def learned_triage(client: OpenAI, url: str, admin_key: str) -> None:
    """The learned router at work: each ticket's predicted quality on the adapter, where it went, and the bill."""
    root = url.removesuffix("/v1")
    auth = {"authorization": f"Bearer {admin_key}", "x-nanoroute-task": "triage"}
    before = httpx.get(f"{root}/metrics").text
    served: Counter[str] = Counter()
    right = 0
    tickets = held_out_tickets()
    print(f"\n== {len(tickets)} support tickets (task triage) that the learned router held out, routed per prompt")
    for row in tickets:
        body = {"model": "triage", "messages": row["messages"], "max_tokens": 8, "temperature": 0}
        why = httpx.post(f"{root}/admin/explain", json=body, headers=auth).json()
        predicted = {c["model"]: c.get("predicted_quality") for c in why["candidates"]}
        raw = client.chat.completions.with_raw_response.create(**body, extra_headers={"X-Nanoroute-Task": "triage"})
        answer = (raw.parse().choices[0].message.content or "").strip()
        model = raw.headers.get("x-nanoroute-model", "-")
        served[model] += 1
        text = row["messages"][-1]["content"]
        ok = normalise(answer) == row["queue"]
        right += ok
        print(f"   {row.get('kind', '?'):8} predicted {predicted.get('ticket-triage', 0):.2f} -> {model:14} "
              f"{answer!r:12} {'right' if ok else 'wrong'} {text[:60]!r}")
    after = httpx.get(f"{root}/metrics").text
    cost = {m: v - metric(before, "nanoroute_cost_usd_total", policy="triage").get(m, 0.0)
            for m, v in metric(after, "nanoroute_cost_usd_total", policy="triage").items()}
    saved = sum(metric(after, "nanoroute_savings_usd_total", policy="triage").values()) - sum(
        metric(before, "nanoroute_savings_usd_total", policy="triage").values())
    print("   " + ", ".join(f"{m}: {n} ticket(s), ${cost.get(m, 0.0):.7f}" for m, n in served.items())
          + f"; saved ${saved:.7f} against sending them all to gpt-4o-mini; "
            f"{right} of {len(tickets)} routed to the right queue")
    held = why["learned"]["heldout"]
    shares = ", ".join(f"{share:.0%} to {m}" for m, share in held["shares"].items())
    print(f"   on all {held['rows']} tickets the router held out, this split sends {shares} and gets "
          f"{held['quality']:.1%} right (require.min_quality 0.9; the adapter alone: see "
          f"`nanoroute router eval --router {ROUTER}`)")


def normalise(answer: str) -> str:
    return answer.strip().strip(".!\"'`").strip().lower()


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
        learned_triage(client, args.url, args.admin_key_file.read_text().strip())
        triage(client, "triage")
        triage(client, None)
        general_stream(client)
    next_steps(args.url, args.admin_key_file)


if __name__ == "__main__":
    main()
