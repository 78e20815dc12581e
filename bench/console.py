"""What the console's series cost: one step's reading of the metric families and its points, off the request
path, every `console_step_s` (10 s), in each process that serves the console.

    .venv/bin/python bench/console.py [--policies 10] [--models 10] [--steps 400]

The registry is filled as a config of that many policies and models would fill it after traffic of every
kind (each policy served by each model, each outcome and API, JSON and streams), which is more series than a
real config makes: each policy has a few candidates, not every model. Prints the microseconds one step takes
once the hour is full (the series hold 360 points): the reading, which `Series.run` does in a thread, and
the appending, on the event loop; the number of series the console keeps; and what building the overview
from them takes (once a step, whatever the number of consoles open).
"""

from __future__ import annotations

import argparse
import statistics
import time

from gateway.console.figures import local_overview
from gateway.console.series import Series, read_metrics
from gateway.metrics import Metrics

OUTCOMES = ("success", "client_error", "upstream_error", "cancelled")
APIS = ("chat", "responses", "messages")


def fill(m: Metrics, policies: int, models: int, step: int) -> None:
    for p in range(policies):
        for k in range(models):
            policy, model = f"policy-{p}", f"model-{k}"
            for outcome in OUTCOMES:
                for api in APIS:
                    m.requests.labels(policy, model, outcome, api).inc(1 + step % 3)
            for stream in ("true", "false"):
                m.duration.labels(policy, model, stream).observe(0.05 * (1 + (step + k) % 7))
            m.cost.labels(policy, model).inc(0.001)
        m.savings.labels(f"policy-{p}").inc(0.002)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policies", type=int, default=10)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--steps", type=int, default=400)
    a = ap.parse_args()
    m = Metrics()
    s = Series(lambda: read_metrics(m), step_s=10)
    now = time.time()
    read, took = [], []
    for i in range(a.steps):
        fill(m, a.policies, a.models, i)
        s.sample(now + 10 * i)
        if i >= 360:  # the hour is full: what every later step costs
            read.append(s.read_s)
            took.append(s.take_s)
    started = time.perf_counter()
    local_overview(s)
    overview_s = time.perf_counter() - started
    families = sum(len(f.samples) for f in read_metrics(m))
    print(f"{a.policies} policies x {a.models} models: {families} samples read a step, "
          f"{len(s.requests) + len(s.errors) + len(s.p50) + len(s.p95)} series kept; "
          f"a step reads for {1e3 * statistics.median(read):.2f} ms (in a thread) and appends for "
          f"{1e3 * statistics.median(took):.2f} ms (on the event loop; medians of {len(took)}); "
          f"the overview built from them: {1e3 * overview_s:.1f} ms")


if __name__ == "__main__":
    main()
