"""`Governor`: the counters as the request path uses them, and what happens when their store fails.

`admit` is awaited on the request path: one round trip (bounded by `admit_timeout_s`). `settle` and `record`
return at once: the settlement is queued and written by background workers, so a request's answer never
waits on it. A store that fails:

- at admission: `on_store_error` decides (`allow`: the request goes on, uncounted; `deny`: 503). For
  `retry_s` after a failure the store is not asked again, so requests do not each wait on a store that is
  down; then the next request tries it, and the first that gets through ends the outage.
- at settlement: the settlement waits in memory (at most `max_pending`; beyond that the oldest are dropped
  and logged) and is written once the store is back. Spend is not lost to an outage, only to a process that
  dies during one; its holds lapse by themselves at their deadline.

Each failure is counted (`nanoroute_governance_store_errors_total`) and logged once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque

from gateway.errors import StorageUnavailable
from gateway.governance.counters import Ask, Counters, LedgerEntry, Settlement, Verdict
from gateway.metrics import Metrics
from gateway.tasks import Background

log = logging.getLogger("nanoroute")

LOG_EVERY_S = 60.0


class Governor:
    def __init__(self, counters: Counters, metrics: Metrics | None = None, *, admit_timeout_s: float = 1.0,
                 retry_s: float = 1.0, workers: int = 4, max_pending: int = 100_000) -> None:
        self.counters = counters
        self.metrics = metrics
        self.admit_timeout_s = admit_timeout_s
        self.retry_s = retry_s
        self.max_pending = max_pending
        self._workers = workers
        self._queue: deque[Settlement | LedgerEntry] = deque()
        self._ready = asyncio.Event()
        self._down_until = -math.inf
        self._logged_at = -math.inf
        self._busy = 0
        self._tasks = Background("governance")

    # -- the request path ----------------------------------------------------------------------------------

    async def admit(self, ask: Ask, deny_on_error: bool) -> Verdict | None:
        """The counters' verdict; None when the store failed and `deny_on_error` is False (the request goes on,
        counted nowhere). Raises StorageUnavailable when it failed and `deny_on_error` is True."""
        if time.monotonic() < self._down_until:
            self._store_failed("admit", None, deny_on_error)
            return None
        try:
            async with asyncio.timeout(self.admit_timeout_s):
                return await self.counters.admit(ask)
        except (StorageUnavailable, TimeoutError) as exc:
            self._down_until = time.monotonic() + self.retry_s
            self._store_failed("admit", exc, deny_on_error)
            return None

    def _store_failed(self, operation: str, exc: BaseException | None, deny: bool) -> None:
        """Count and log a failure; raise StorageUnavailable when `deny`."""
        if self.metrics is not None:
            self.metrics.governance_store_errors.labels(operation, "denied" if deny else "allowed").inc()
        if exc is not None:
            self._log(f"limits and budgets could not be checked ({_why(exc)}); requests of limited keys are "
                      f"{'refused' if deny else 'let through'} (governance.on_store_error) until the store answers")
        if deny:
            raise StorageUnavailable("Limits and budgets cannot be checked now; try again later")

    def settle(self, settlement: Settlement | LedgerEntry) -> None:
        """Queue a request's settlement (or a ledger entry alone) to be written off the request path."""
        if len(self._queue) >= self.max_pending:
            self._queue.popleft()
            self._log(f"more than {self.max_pending} settlements wait for the store: the oldest are dropped")
        self._queue.append(settlement)
        self._ready.set()
        self._gauge()

    # -- the background ------------------------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self._workers):
            self._tasks.start(self._work(), f"settle {i}")

    async def stop(self, drain_s: float = 5.0) -> None:
        """Write what is queued (for at most `drain_s`), then stop."""
        deadline = time.monotonic() + drain_s
        while (self._queue or self._busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._queue:
            log.error("%d settlements could not be written to the store before shutdown", len(self._queue))
        await self._tasks.stop()

    async def drain(self) -> None:
        """Wait until everything queued so far is written (tests, benchmarks)."""
        while self._queue or self._busy:
            await asyncio.sleep(0.005)

    async def _work(self) -> None:
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            item = self._queue.popleft()
            self._busy += 1
            try:
                if isinstance(item, Settlement):
                    await self.counters.settle(item)
                else:
                    await self.counters.record(item)
            except StorageUnavailable as exc:
                self._queue.appendleft(item)  # written once the store is back
                if self.metrics is not None:
                    self.metrics.governance_store_errors.labels("settle", "retried").inc()
                self._log(f"settlements could not be written ({_why(exc)}); {len(self._queue)} wait in memory "
                          "and are written once the store answers")
                await asyncio.sleep(self.retry_s)
            finally:
                self._busy -= 1
                self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.governance_pending.set(len(self._queue))

    def _log(self, message: str) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.error("%s (further failures this minute are not logged)", message)


def _why(exc: BaseException) -> str:
    if isinstance(exc, StorageUnavailable):
        return exc.message
    return "no answer in time"

