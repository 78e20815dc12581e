"""`Governor`: the counters as the request path uses them, and what happens when their store fails.

`admit` is awaited on the request path: one round trip (bounded by `admit_timeout_s`), shared by the requests
that asked while the previous one ran. `settle` returns at once: the settlement is queued and written by a
background worker every `gather_s`, all that gathered in one call, so a request's answer never waits on it.
A store that fails:

- at admission (no answer within `admit_timeout_s`, a little longer than the store's own limits, so that its
  own error comes first): `on_store_error` decides (`allow`: the request goes on, and is settled as it ends
  like any other, so its cost is charged once the store is back; `deny`: 503). For `retry_s` after a failure
  the store is not asked again, so requests do not each wait on a store that is down; then the next request
  tries it, and the first that gets through ends the outage.
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
BATCH = 512
"""The most settlements written in one call."""


class Governor:
    def __init__(self, counters: Counters, metrics: Metrics | None = None, *, admit_timeout_s: float = 2.5,
                 retry_s: float = 1.0, workers: int = 1, gather_s: float = 0.02,
                 max_pending: int = 100_000) -> None:
        self.counters = counters
        self.metrics = metrics
        self.admit_timeout_s = admit_timeout_s
        self.retry_s = retry_s
        self.max_pending = max_pending
        self.gather_s = gather_s
        self._workers = workers
        self._queue: deque[Settlement | LedgerEntry] = deque()
        self._asks: list[tuple[Ask, asyncio.Future[Verdict]]] = []
        self._admitting = False
        self._ready = asyncio.Event()
        self._down_until = -math.inf
        self._logged_at = -math.inf
        self._busy = 0
        self._tasks = Background("governance")

    # -- the request path ----------------------------------------------------------------------------------

    async def admit(self, ask: Ask, deny_on_error: bool) -> Verdict | None:
        """The counters' verdict; None when the store failed and `deny_on_error` is False (the request goes on,
        counted nowhere). Raises StorageUnavailable when it failed and `deny_on_error` is True.

        Asks are sent in batches: one call to the counters at a time, with every ask that arrived while the one
        before ran (`Counters.admit_many`), so that under load a round trip serves many requests."""
        if time.monotonic() < self._down_until:
            self._store_failed("admit", None, deny_on_error)
            return None
        waiting: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._asks.append((ask, waiting))
        if not self._admitting:
            self._admitting = True
            self._tasks.start(self._send_asks(), "admit")
        try:
            return await waiting
        except (StorageUnavailable, TimeoutError) as exc:
            self._down_until = time.monotonic() + self.retry_s
            self._store_failed("admit", exc, deny_on_error)
            return None

    async def _send_asks(self) -> None:
        try:
            while self._asks:
                batch, self._asks = self._asks, []
                try:
                    async with asyncio.timeout(self.admit_timeout_s):
                        verdicts = await self.counters.admit_many([ask for ask, _ in batch])
                except Exception as exc:  # the store's failure, or a bug: each waiter gets it
                    for _, waiting in batch:
                        if not waiting.done():
                            waiting.set_exception(exc)
                    continue
                for (ask, waiting), verdict in zip(batch, verdicts, strict=True):
                    if not waiting.done():
                        waiting.set_result(verdict)
                    elif verdict.admitted:  # its request went away meanwhile: release what it holds
                        self.settle(Settlement(ask.request_id, ask.scopes, ask.tokens, 0, 0, ask.now, None))
        finally:
            self._admitting = False

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
            await asyncio.sleep(self.gather_s)  # let more gather: one write for all of them
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), BATCH))]
            if not batch:
                continue
            self._busy += 1
            try:
                await self.counters.settle_many(batch)
            except StorageUnavailable as exc:
                self._queue.extendleft(reversed(batch))  # written once the store is back
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

