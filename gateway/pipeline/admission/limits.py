"""Limits and budgets: whether a key (and its team) may send this request now, before any upstream is called.

Runs once the request is routed, for keys that have limits or a budget (`Principal.scopes`); for the others
it does nothing. One call to the counters (gateway/governance/counters.py) checks and counts every scope at
once: requests and tokens per minute, requests at once, and the budget, for which the request reserves its
expected cost (the prompt as the router counted it, or its body's bytes / 4, and `max_tokens` or the expected
output, at the price of the dearest model of its chain). When the request ends, the `Settle` observer
corrects its tokens and charges its real cost.

Refused: 429 `rate_limit_exceeded` (type `requests` or `tokens`) with `Retry-After`, or 429
`insufficient_quota` for a spent budget. A budget not spent but taken by the reserves of requests in flight is
a `rate_limit_exceeded` (retry in a second): those requests may cost less than they reserved. A key with a
requests or tokens limit gets OpenAI's `x-ratelimit-*` headers on every answer, refused or not.
"""

from __future__ import annotations

import time

from gateway.backends.base import Operation
from gateway.errors import QuotaExceeded, RateLimited
from gateway.governance.counters import Ask, Verdict, Window, nano, period_end
from gateway.governance.governor import Governor
from gateway.metrics import Metrics
from gateway.pipeline.context import RequestContext
from gateway.routing.estimate import output_tokens, usage_cost

HOLD_S = 900.0
"""How long a request's hold (its place in flight, its reserve) lasts if its process dies before settling:
longer than any attempt chain (each attempt is bounded by its backend's total timeout, 600 s by default)."""


class Limits:
    before_body = False

    def __init__(self, governor: Governor, metrics: Metrics | None) -> None:
        self.governor = governor
        self.metrics = metrics

    async def admit(self, ctx: RequestContext) -> None:
        who = ctx.principal
        if who is None or not who.scopes or ctx.op is Operation.COUNT_TOKENS:
            return
        req, decision, signals = ctx.request, ctx.decision, ctx.state.signals
        assert req is not None and decision is not None
        # The router's count when the policy made one; else the body's bytes / 4, which tiktoken would cost
        # tens of microseconds to refine and the settlement corrects anyway.
        prompt = req.prompt_tokens if req.prompt_tokens is not None else len(req.raw) // 4
        output = output_tokens(req, decision.policy, signals) if ctx.op is not Operation.EMBEDDINGS else 0
        reserve = max((usage_cost(m, prompt, output) or 0.0 for m in decision.chain), default=0.0)
        now = time.time()
        ask = Ask(ctx.record.request_id, who.scopes, prompt + output, nano(reserve), now, now + HOLD_S)
        deny = ctx.state.table.config.governance.on_store_error == "deny"
        verdict = await self.governor.admit(ask, deny)
        if verdict is None:  # the store failed, and on_store_error let it through: charged all the same as it ends
            ctx.ask = ask
            return
        headers = limit_headers(verdict)
        ctx.record.limit_headers = headers
        if verdict.admitted:
            ctx.ask = ask
            return
        if self.metrics is not None:
            self.metrics.limited.labels(who.team_label, who.key_label, verdict.reason).inc()
        whose = "this key's team" if verdict.scope is not None and verdict.scope.startswith("team:") else "this key"
        if verdict.reason == "budget":
            scope = next(s for s in who.scopes if s.id == verdict.scope)
            end = period_end(scope.period, now)
            raise QuotaExceeded(f"You exceeded {whose}'s budget for the {scope.period}"
                                + ("" if end is None else "; it resets at the start of the next"),
                                retry_after=None if end is None else end - now, limit_headers=headers)
        what = {"requests": "requests per minute", "tokens": "tokens per minute", "in_flight": "requests at once",
                "reserved": "budget: what is left of it is reserved by requests in flight"}[verdict.reason or ""]
        wait = "" if verdict.retry_after_s is None else f" Please try again in {verdict.retry_after_s:.3g}s."
        raise RateLimited(f"Rate limit reached for {whose} on {what}.{wait}",
                          kind="tokens" if verdict.reason == "tokens" else "requests",
                          retry_after=verdict.retry_after_s, limit_headers=headers)


def limit_headers(verdict: Verdict) -> tuple[tuple[bytes, bytes], ...]:
    """OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, for the windows the key has."""
    out: list[tuple[bytes, bytes]] = []
    for kind, window in (("requests", verdict.requests), ("tokens", verdict.tokens)):
        if window is not None:
            out += _window(kind, window)
    return tuple(out)


_NAMES = {kind: tuple(f"x-ratelimit-{what}-{kind}".encode() for what in ("limit", "remaining", "reset"))
          for kind in ("requests", "tokens")}


def _window(kind: str, w: Window) -> list[tuple[bytes, bytes]]:
    limit, remaining, reset = _NAMES[kind]
    return [(limit, b"%d" % w.limit), (remaining, b"%d" % w.remaining), (reset, duration(w.reset_s).encode())]


def duration(seconds: float) -> str:
    """A duration as OpenAI writes its resets (Go's): `20ms`, `1s`, `6.5s`, `1m0s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"
