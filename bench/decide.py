"""How long deciding a route takes: a policy of 10 candidates, every constraint on.

    .venv/bin/python bench/decide.py [--n 20000]

Prints microseconds per decision for each strategy, with prompt tokens counted by the approximation
and by tiktoken (cl100k_base), and with measured latencies in place. The target is well under 100 us.
"""

from __future__ import annotations

import argparse
import time

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    print(f"decide() with {N_CANDIDATES} candidates, all four constraints; microseconds per decision")
    print(f"{'strategy':10} {'tokens':9} {'latency':9} {'us':>7}")
    for strategy in ("ordered", "weighted", "cheapest", "fastest", "cascade"):
        for exact in (False, True):
            for measured in (False, True):
                us = run(strategy, exact, measured, args.n)
                print(f"{strategy:10} {'tiktoken' if exact else 'approx':9} {'measured' if measured else 'prior':9} "
                      f"{us:7.1f}")


if __name__ == "__main__":
    main()
