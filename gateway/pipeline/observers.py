"""Observers: what reads a request once it has ended, whatever its outcome, in the order registered.

Each gets the request's context: its record (what happened: the route, the model that answered, the
failures, the usage, the answer when kept) and the snapshot the request ran on. Observers read; they
never steer the request, and the first of them (`Usage`) turns the upstream's usage into tokens and cost
for the others. A new observer is a class here with an `observe(ctx)`, registered in
`gateway/pipeline/__init__.py`.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from gateway import accesslog
from gateway.capture.capture import Capture
from gateway.governance.counters import LedgerEntry, Settlement, ledger_day, nano
from gateway.governance.governor import Governor
from gateway.governance.principal import NO_LABEL
from gateway.metrics import Metrics
from gateway.pipeline.context import RequestContext
from gateway.predictions import Predicted, Predictions
from gateway.record import Outcome
from gateway.rollout import Rollouts
from gateway.routing.estimate import prompt_tokens, usage_cost
from gateway.store.turns import Turns


class Observer(Protocol):
    def observe(self, ctx: RequestContext) -> None: ...


class Usage:
    """The upstream's usage as tokens, the cost at the answering model's price, and the savings against the
    policy's most expensive candidate: on the record, for every observer after it."""

    def observe(self, ctx: RequestContext) -> None:
        rec, usage = ctx.record, ctx.record.usage
        if rec.model is None:
            return
        counted = usage_tokens(usage) if usage is not None else None
        if counted is None and rec.stream_events:
            counted = self._estimate(ctx)
        if counted is None:
            return
        prompt, completion = counted
        rec.prompt_tokens, rec.completion_tokens = prompt, completion
        rec.cost_usd = usage_cost(rec.model, prompt, completion)
        if rec.cost_usd is not None and ctx.decision is not None:
            costs = [c for c in (usage_cost(m, prompt, completion) for m in ctx.decision.candidates) if c is not None]
            rec.savings_usd = max(0.0, max(costs, default=rec.cost_usd) - rec.cost_usd)

    @staticmethod
    def _estimate(ctx: RequestContext) -> tuple[int, int] | None:
        """A stream that ended before its usage (cut, or cancelled by the client) is still counted: the
        prompt as the router estimates it, and one token per event after the first (the role, or the API's
        opening event), as OpenAI, vLLM and Anthropic stream about a token an event."""
        req, rec = ctx.request, ctx.record
        if req is None:
            return None
        rec.usage_estimated = True
        return prompt_tokens(req, ctx.state.signals), max(0, rec.stream_events - 1)


def usage_tokens(usage: dict[str, Any]) -> tuple[int, int] | None:
    """(prompt, completion) tokens of a usage object: chat completions' (`prompt_tokens`), or the Responses
    and Messages APIs' (`input_tokens`; Anthropic counts cache reads and writes apart from it)."""
    if "prompt_tokens" in usage:
        prompt, completion = usage["prompt_tokens"], usage.get("completion_tokens") or 0
    else:
        prompt, completion = usage.get("input_tokens"), usage.get("output_tokens") or 0
        if isinstance(prompt, int):
            for extra in ("cache_creation_input_tokens", "cache_read_input_tokens"):
                more = usage.get(extra)
                prompt += more if isinstance(more, int) else 0
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return prompt, completion


class Settle:
    """A governed key's request has ended: its tokens are corrected and its real cost charged to its key's and
    team's budgets and to the ledger, off the request path (`Governor.settle`), and counted in the spend metric.
    A request that the limits check let in is settled whatever its outcome: one that failed releases its hold."""

    def __init__(self, governor: Governor, metrics: Metrics | None) -> None:
        self.governor = governor
        self.metrics = metrics

    def observe(self, ctx: RequestContext) -> None:
        who, ask, rec = ctx.principal, ctx.ask, ctx.record
        if who is None or not (who.ledger or ask is not None):
            return
        now = time.time()
        entry = None
        if rec.model is not None and who.ledger:
            entry = LedgerEntry(ledger_day(now), who.id, who.team or NO_LABEL, rec.model.name, rec.prompt_tokens or 0,
                                rec.completion_tokens or 0, nano(rec.cost_usd or 0.0))
            if self.metrics is not None and rec.cost_usd:
                self.metrics.spent(who.team_label, who.key_label, rec.model.name, rec.cost_usd)
        if ask is not None:
            used = (rec.prompt_tokens or 0) + (rec.completion_tokens or 0)
            self.governor.settle(Settlement(ask.request_id, ask.scopes, ask.tokens, used,
                                            entry.cost_nusd if entry is not None else nano(rec.cost_usd or 0.0), now,
                                            entry))
        elif entry is not None:
            self.governor.settle(entry)


class Traced:
    """The request's span (`gateway.tracing`), with what happened once `Usage` has counted it; registered only
    when traces are on, after the other observers."""

    def observe(self, ctx: RequestContext) -> None:
        if ctx.trace is not None:
            ctx.trace.end(ctx.record, ctx.request)


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



class Learned:
    """An answer to a request a `learned` policy routed: its router's predictions, kept to meet the scores
    that feedback and rollout comparisons give it later (`gateway.predictions`)."""

    def __init__(self, predictions: Predictions) -> None:
        self.predictions = predictions

    def observe(self, ctx: RequestContext) -> None:
        req, d, rec = ctx.request, ctx.decision, ctx.record
        if req is None or req.predicted is None or d is None or d.route is None or d.route.learned is None \
                or rec.model is None or rec.outcome != Outcome.SUCCESS:
            return
        models = d.route.learned.router.models
        if rec.model.name in models:
            self.predictions.served(rec.request_id, Predicted(req.key_id, d.policy, rec.model.name,
                                                              dict(zip(models, req.predicted, strict=True))))


class Stored:
    """A Responses API answer to keep for the next turn's `previous_response_id` (`gateway.store.turns`)."""

    def __init__(self, turns: Turns) -> None:
        self.turns = turns

    def observe(self, ctx: RequestContext) -> None:
        answer = ctx.answer
        if ctx.turn is not None and answer is not None and answer.get("status") in ("completed", "incomplete"):
            self.turns.save(ctx.turn, answer)
