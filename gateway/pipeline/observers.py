"""Observers: what reads a request once it has ended, whatever its outcome, in the order registered.

Each gets the request's context: its record (what happened: the route, the model that answered, the
failures, the usage, the answer when kept) and the snapshot the request ran on. Observers read; they
never steer the request, and the first of them (`Usage`) turns the upstream's usage into tokens and cost
for the others. A new observer is a class here with an `observe(ctx)`, registered in
`gateway/pipeline/__init__.py`.
"""

from __future__ import annotations

from typing import Protocol

from gateway import accesslog
from gateway.capture.capture import Capture
from gateway.metrics import Metrics
from gateway.pipeline.context import RequestContext
from gateway.rollout import Rollouts
from gateway.routing.estimate import usage_cost


class Observer(Protocol):
    def observe(self, ctx: RequestContext) -> None: ...


class Usage:
    """The upstream's usage as tokens, the cost at the answering model's price, and the savings against the
    policy's most expensive candidate: on the record, for every observer after it."""

    def observe(self, ctx: RequestContext) -> None:
        rec, usage = ctx.record, ctx.record.usage
        if usage is None or rec.model is None:
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens") or 0
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return
        rec.prompt_tokens, rec.completion_tokens = prompt, completion
        rec.cost_usd = usage_cost(rec.model, prompt, completion)
        if rec.cost_usd is not None and ctx.decision is not None:
            costs = [c for c in (usage_cost(m, prompt, completion) for m in ctx.decision.candidates) if c is not None]
            rec.savings_usd = max(0.0, max(costs, default=rec.cost_usd) - rec.cost_usd)


class Learn:
    """What routing learns from answers: each model's speed, each policy's answer lengths."""

    def observe(self, ctx: RequestContext) -> None:
        ctx.state.signals.observe(ctx.record, ctx.state.table.tasks)


class Count:
    """The Prometheus metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def observe(self, ctx: RequestContext) -> None:
        self.metrics.observe(ctx.record)


class AccessLog:
    """One JSON line per request."""

    def observe(self, ctx: RequestContext) -> None:
        accesslog.write(ctx.record)


# Captured and Compared share their shape (an optional part of the context handed to its owner): each is one
# owner's observer, so that registering or dropping one is one line in build().
class Captured:
    """A sampled request, queued to be written with its answer."""

    def __init__(self, capture: Capture) -> None:
        self.capture = capture

    def observe(self, ctx: RequestContext) -> None:
        if ctx.sample is not None:
            self.capture.offer(ctx.sample, ctx.record)


class Compared:
    """A request a rollout chose: its answer compared with another model's, off the request path."""

    def __init__(self, rollouts: Rollouts) -> None:
        self.rollouts = rollouts

    def observe(self, ctx: RequestContext) -> None:
        if ctx.probe is not None:
            self.rollouts.finish(ctx.record, ctx.probe)

