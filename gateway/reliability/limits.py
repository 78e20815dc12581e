"""How long a request may take in all, and how long to wait before asking the same model again."""

from __future__ import annotations

import random
from collections.abc import Callable

from gateway.config.table import ChainSettings
from gateway.errors import UpstreamError, UpstreamRateLimited
from gateway.routing.request import RoutedRequest


def deadline(req: RoutedRequest, settings: ChainSettings, now: float) -> float:
    """`now` plus the policy's deadline, or the client's `timeout` (seconds, in the body) when shorter:
    a client may ask for less time than the policy allows, never more."""
    budget = settings.deadline_s
    asked = req.body.get("timeout")
    if isinstance(asked, int | float) and not isinstance(asked, bool) and 0 < asked < budget:
        budget = float(asked)
    return now + budget


def retry_delay(err: UpstreamError, tries: int, settings: ChainSettings, remaining: float,
                rand: Callable[[], float] = random.random) -> float | None:
    """Seconds to wait before retrying the same model after `err` (its `tries`-th retry would be next),
    or None to move on: the error is not retryable, the retries are spent, the upstream asked for a
    longer pause than the policy waits out, or the pause would not end before the deadline.

    Exponential backoff with jitter: between half and all of `backoff * 2**tries`, capped at
    `max_backoff`. A 429's Retry-After, when short enough, is waited out, plus up to half the backoff
    so that clients told the same second do not all come back at once.
    """
    if not err.retryable or tries >= settings.retries:
        return None
    backoff = min(settings.max_backoff_s, settings.backoff_s * 2.0**tries)
    delay = backoff * (0.5 + 0.5 * rand())
    if isinstance(err, UpstreamRateLimited) and err.retry_after is not None:
        if err.retry_after > settings.retry_after_max_s:
            return None
        delay = err.retry_after + backoff * 0.5 * rand()
    return delay if delay < remaining else None

