"""A circuit breaker: closed, open, half-open, with a cooldown that grows when a model keeps failing.

- **Closed**: requests pass. It opens on `consecutive_failures` failures in a row, or when at least
  `min_requests` requests in the last `window_s` seconds failed at a rate of `error_rate` or more.
- **Open**: requests skip the model until the cooldown has passed: `cooldown_s`, doubled each time the
  breaker opens again soon after closing (within `max_cooldown_s`) or its probe fails, up to `max_cooldown_s`.
- **Half-open**: one request at a time goes through as a probe. Success closes the breaker; failure
  opens it again with a longer cooldown; a probe that ends without a verdict (the client went away)
  frees the slot for the next request.

Failures that one client's requests may cause (a payload that makes the upstream answer 500, a prompt
so long that it times out) do not open it on their own when a `confirm` hook is set: reaching the
threshold calls the hook instead, which asks the model a small question of its own (`Health`), and
`confirmed()` then opens the breaker if that fails too, or clears the count if the model answered.
Failures that say the model is down for everyone (`systemic`: refused connections, 429s, rejected
credentials) open it at once.

Every operation is O(1) except the error-rate check, which sums `BUCKETS` counters and runs only on a
failure. Times are `time.monotonic()` seconds, passed in, so tests drive the clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.config import schema

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
BUCKETS = 10

clock = time.monotonic
"""The one clock of breakers, health checks and the attempt chain's verdicts (deadlines run on the event
loop's clock, which asyncio's timers use)."""


class Breaker:
    __slots__ = ("_bucket_s", "_closed_at", "_confirming", "_consecutive", "_counts", "_epochs", "_fails", "_probing",
                 "_trips", "_until", "cfg", "confirm", "last_failure", "on_change", "state")

    def __init__(self, cfg: schema.Breaker, on_change: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        self.on_change = on_change
        """Called when the breaker opens or closes (not on the move to half-open)."""
        self.confirm: Callable[[], None] | None = None
        """Asked to check the model before failures that may be one client's open the breaker; it answers
        through `confirmed()`. None: such failures open it like any other."""
        self._confirming = False
        self.state = CLOSED
        self.last_failure = float("-inf")
        self._consecutive = 0
        self._until = 0.0
        self._trips = 0
        self._closed_at = float("-inf")
        self._probing = False
        self._bucket_s = cfg.window_s / BUCKETS
        self._epochs = [-1] * BUCKETS
        self._counts = [0] * BUCKETS
        self._fails = [0] * BUCKETS

    def ready(self, now: float) -> bool:
        """Whether a request may go through now (without taking the probe)."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            return now >= self._until
        return not self._probing

    def acquire(self, now: float) -> bool:
        """Let a request through; True when it is the half-open probe (then it must end in a verdict or
        `release()`). Call only after `ready(now)`."""
        if self.state == CLOSED:
            return False
        self.state = HALF_OPEN
        self._probing = True
        return True

    def release(self) -> None:
        """A probe ended without a verdict: the next request may probe."""
        self._probing = False

    def wait(self, now: float) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        return max(0.0, self._until - now) if self.state == OPEN else 0.0

    def success(self, now: float) -> None:
        if self.state == OPEN:  # a request that started before the breaker opened: no verdict
            return
        self._record(now, 0)
        self._consecutive = 0
        if self.state == HALF_OPEN:
            self._close(now)

    def failure(self, now: float, *, systemic: bool = True) -> None:
        """A failed request. `systemic`: the failure cannot have come from what the request asked (see above)."""
        self.last_failure = now
        if not self.cfg.enabled or self.state == OPEN:
            return
        self._record(now, 1)
        self._consecutive += 1
        if self.state == HALF_OPEN:
            self._open(now, self._cooldown(now, escalate=True))
        elif self._consecutive >= self.cfg.consecutive_failures or self._rate_exceeded(now):
            if systemic or self.confirm is None:
                self._open(now, self._cooldown(now, escalate=False))
            elif not self._confirming:
                self._confirming = True
                self.confirm()

    def confirmed(self, now: float, failing: bool) -> None:
        """The check that `confirm` started has ended: `failing` opens the breaker (if it is still closed);
        otherwise the model answered, so the failures so far were the requests' own and are forgotten."""
        self._confirming = False
        if self.state != CLOSED:
            return
        if failing:
            self._open(now, self._cooldown(now, escalate=False))
        else:
            self._consecutive = 0
            self._epochs = [-1] * BUCKETS

    def hold(self, now: float, seconds: float) -> None:
        """Open for `seconds` (capped at max_cooldown_s) because the upstream said so (a long Retry-After)."""
        if not self.cfg.enabled:
            return
        until = now + min(seconds, self.cfg.max_cooldown_s)
        if self.state != OPEN or until > self._until:
            self._open(now, until - now)

    def _cooldown(self, now: float, *, escalate: bool) -> float:
        cfg = self.cfg
        if not escalate and now - self._closed_at > cfg.max_cooldown_s:
            self._trips = 0  # closed long enough: start again from the base cooldown
        cooldown = min(cfg.cooldown_s * 2.0 ** self._trips, cfg.max_cooldown_s)
        self._trips += 1
        return cooldown

    def _open(self, now: float, cooldown: float) -> None:
        was = self.state
        self.state = OPEN
        self._until = now + cooldown
        self._probing = False
        self._consecutive = 0
        if was == CLOSED and self.on_change is not None:
            self.on_change()

    def _close(self, now: float) -> None:
        self.state = CLOSED
        self._closed_at = now
        self._probing = False
        self._epochs = [-1] * BUCKETS  # judge the closed breaker on what happens from now on
        if self.on_change is not None:
            self.on_change()

    def _record(self, now: float, failed: int) -> None:
        epoch = int(now / self._bucket_s)
        i = epoch % BUCKETS
        if self._epochs[i] != epoch:
            self._epochs[i] = epoch
            self._counts[i] = 0
            self._fails[i] = 0
        self._counts[i] += 1
        self._fails[i] += failed

    def _rate_exceeded(self, now: float) -> bool:
        oldest = int(now / self._bucket_s) - BUCKETS + 1
        total = fails = 0
        for i in range(BUCKETS):
            if self._epochs[i] >= oldest:
                total += self._counts[i]
                fails += self._fails[i]
        return total >= self.cfg.min_requests and fails >= self.cfg.error_rate * total
