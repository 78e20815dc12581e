"""How long deciding a route takes: a policy of 10 candidates, every constraint on; and a `learned` policy.

    .venv/bin/python bench/decide.py [--n 20000] [--router DIR] [--core N]

Prints microseconds per decision for each strategy, with prompt tokens counted by the approximation
and by tiktoken (cl100k_base), and with measured latencies in place. The target is well under 100 us.

Then the `learned` strategy (docs/router.md): the median and 99th percentile of single decisions for a
prompt of 1,000 cl100k tokens and for a short one, on one core (`--core`, default 0), with the router in
`--router` (default: one trained here on examples/router/triage.jsonl; needs `nanoroute[router]`). The
target is at most 1 ms at the median for the 1,000-token prompt.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from gateway.backends.base import Operation
from gateway.config.loader import load_text
from gateway.record import RequestRecord
from gateway.routing.decide import decide
from gateway.routing.request import parse_request
from gateway.routing.signals import Signals

N_CANDIDATES = 10


def config(strategy: str) -> str:
    models = "\n".join(
        f"  m{i}: {{backend: b, price: {{input: {0.1 * (i + 1)}, output: {0.4 * (i + 1)}}}, context_window: 8192, "
        f"quality: {{support: {0.80 + 0.015 * i}, default: 0.7}}, "
        f"latency: {{ttft_ms: {100 + 20 * i}, tokens_per_s: 50}}}}"
        for i in range(N_CANDIDATES)
    )
    names = ", ".join(f"m{i}" for i in range(N_CANDIDATES))
    extra = ""
    if strategy == "weighted":
        extra = ", weights: {" + ", ".join(f"m{i}: {i + 1}" for i in range(N_CANDIDATES)) + "}, sticky: user"
    return f"""
backends:
  b: {{type: openai, url: http://127.0.0.1:9/v1}}
models:
{models}
policies:
  - {{name: other, match: {{task: other, model: "gpt-*"}}, candidates: [m0]}}
  - {{name: p, match: {{task: support}}, strategy: {strategy}, candidates: [{names}],
     require: {{min_quality: 0.85, p95_latency_ms: 20000, max_cost_usd: 0.01, min_context: 2048}},
     fallback: [m0, m1]{extra}}}
"""


BODY = orjson.dumps({
    "model": "gpt-4o-mini", "user": "u-17", "max_tokens": 200,
    "messages": [{"role": "system", "content": "You are a support agent for an online shop. " * 5},
                 {"role": "user", "content": "My order #1234 arrived damaged, the box was crushed. What now?"}],
})


def run(strategy: str, exact: bool, measured: bool, n: int) -> float:
    table = load_text(config(strategy))
    signals = Signals(exact_tokens=exact)
    if measured:
        for m in table.models.values():
            for _ in range(20):
                signals.observe(RequestRecord("r", 0.0, policy="p", model=m, status=200, stream=True,
                                              first_byte_s=0.2, duration_s=2.0, completion_tokens=100),
                                table.tasks)
    t0 = time.perf_counter()
    for _ in range(n):
        # A fresh request each time, as in the gateway: tokens are counted once per request.
        req = parse_request(Operation.CHAT, BODY, task_header="support", key_id=None, request_id="r")
        decide(table, req, signals)
    parse_only = time.perf_counter()
    for _ in range(n):
        parse_request(Operation.CHAT, BODY, task_header="support", key_id=None, request_id="r")
    t1 = time.perf_counter()
    return ((parse_only - t0) - (t1 - parse_only)) / n * 1e6


REPO = Path(__file__).resolve().parents[1]
TICKET = ("Hello, I ordered a pair of hiking boots three weeks ago and the tracking page still says the parcel is at "
          "the depot. I was charged twice on my card, once when I ordered and again yesterday, and the invoice "
          "shows a restocking fee I never agreed to. The app also crashed when I tried to ask for a refund. ")


def learned_config(router: Path) -> str:
    """A policy between the router's first two models (the first priced as an adapter, the second as gpt-4o-mini)."""
    cheap, dear = orjson.loads((router / "manifest.json").read_bytes())["models"][:2]
    return f"""
backends:
  b: {{type: openai, url: http://127.0.0.1:9/v1}}
models:
  {cheap}: {{backend: b, price: {{input: 0.02, output: 0.02}}, context_window: 8192}}
  {dear}: {{backend: b, price: {{input: 0.15, output: 0.6}}, context_window: 128000}}
policies:
  - {{name: triage, match: {{task: triage}}, strategy: learned, router: {router},
     candidates: [{cheap}, {dear}], require: {{min_quality: 0.9}}}}
"""


def prompt_of(tokens: int, signals: Signals) -> str:
    """Ticket text repeated and cut to `tokens` cl100k tokens."""
    assert signals.encoder is not None
    ids = signals.encoder.encode_ordinary(TICKET * (tokens // 40 + 2))[:tokens]
    return signals.encoder.decode(ids)  # type: ignore[attr-defined, no-any-return]


def learned(router: Path, n: int) -> None:
    table = load_text(learned_config(router))
    signals = Signals(exact_tokens=True)
    print(f"\nlearned policy, router {table.policies[0].learned.router.version} "  # type: ignore[union-attr]
          f"({len(table.policies[0].learned.router._terms)} terms); microseconds per decision, one core")  # type: ignore[union-attr]
    print(f"{'prompt':14} {'median':>8} {'p99':>8}")
    for tokens in (1000, 30):
        body = orjson.dumps({"model": "triage", "max_tokens": 8,
                             "messages": [{"role": "system", "content": "You triage support tickets."},
                                          {"role": "user", "content": prompt_of(tokens, signals)}]})
        times = []
        for _ in range(n):
            req = parse_request(Operation.CHAT, body, task_header="triage", key_id=None, request_id="r")
            t0 = time.perf_counter()
            decide(table, req, signals)
            times.append(time.perf_counter() - t0)
        times.sort()
        print(f"{tokens:>5} tokens   {statistics.median(times) * 1e6:8.1f} {times[int(0.99 * len(times))] * 1e6:8.1f}")


def trained_router() -> Path:
    from gateway.learned.train import Options, train

    out = Path(tempfile.mkdtemp(prefix="nanoroute-bench-router-")) / "triage"
    train(Options(REPO / "examples" / "router" / "triage.jsonl", out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--router", type=Path, help="a router artifact (default: trained on examples/router/triage.jsonl)")
    ap.add_argument("--core", type=int, default=0, help="the CPU core to pin to")
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.core})
    print(f"decide() with {N_CANDIDATES} candidates, all four constraints; microseconds per decision")
    print(f"{'strategy':10} {'tokens':9} {'latency':9} {'us':>7}")
    for strategy in ("ordered", "weighted", "cheapest", "fastest", "cascade"):
        for exact in (False, True):
            for measured in (False, True):
                us = run(strategy, exact, measured, args.n)
                print(f"{strategy:10} {'tiktoken' if exact else 'approx':9} {'measured' if measured else 'prior':9} "
                      f"{us:7.1f}")
    learned(args.router or trained_router(), max(1000, args.n // 10))


if __name__ == "__main__":
    main()
