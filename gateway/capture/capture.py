"""Sampling on the request path, a bounded queue, and the task that writes captures off it.

    route stage:  sample = capture.sample(route, req, table)  when the policy has `capture` (else nothing runs);
                                                              a sampled request's record keeps its answer
    observer:     capture.offer(sample, rec)                  when the request ends: put_nowait, or drop and
                                                              count (the queue is bounded in records and bytes)
    task:         redact, encode and write each batch in a worker thread; count what was written and dropped
    rollouts:     capture.compared(entry)                     a rollout scored an answer: the line is queued
                                                              (bounded) and written in a worker thread
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from gateway.backends.base import Operation
from gateway.capture.answer import from_stream, kept
from gateway.capture.sink import COMPARISONS, FEEDBACK, Sink, task_set
from gateway.config.redact import Redactor
from gateway.errors import StorageUnavailable
from gateway.record import MAX_KEPT_BYTES, Outcome, RequestRecord
from gateway.routing.request import RoutedRequest
from gateway.tasks import Background

if TYPE_CHECKING:
    from gateway.config.table import PolicyRoute, RoutingTable
    from gateway.metrics import Metrics

log = logging.getLogger("nanoroute")

BATCH = 256
ERROR_LOG_INTERVAL_S = 60.0
DROP_REASONS = ("queue_full", "too_large", "write_error", "invalid", "shutdown")


class Sample:
    """One sampled request: where it is filed and what it asked. Holds references, copies nothing; the
    answer is on the request's record, which the relay keeps for it."""

    __slots__ = ("at", "body", "file_set", "redactor", "request_bytes")

    def __init__(self, file_set: str, redactor: Redactor, body: dict[str, Any], request_bytes: int = 0) -> None:
        self.file_set = file_set
        self.redactor = redactor
        self.body = body
        self.request_bytes = request_bytes
        self.at = time.time()

    def weight(self, rec: RequestRecord) -> int:
        """What it holds in memory while it waits to be written: about the request's and the answer's bytes."""
        return self.request_bytes + min(rec.kept_bytes, MAX_KEPT_BYTES)


class Capture:
    def __init__(self, sink: Sink, metrics: Metrics, queue_size: int, queue_bytes: int = 64 << 20) -> None:
        self.sink = sink
        self._queue: asyncio.Queue[tuple[Sample, RequestRecord]] = asyncio.Queue(queue_size)
        self._max_bytes = queue_bytes
        self._queued_bytes = 0
        """What the samples in the queue, and the batch being written, hold."""
        self._written = metrics.capture_written
        self._dropped = {reason: metrics.capture_dropped.labels(reason) for reason in DROP_REASONS}
        self._writer = Background("capture")
        self._started = False
        self._busy = False
        self._failed_since_log = 0
        self._last_log = -ERROR_LOG_INTERVAL_S
        self._compared: list[bytes] = []
        """Comparison lines waiting to be written (at most `queue_size`)."""
        self._flushing = False

    # --- the request path -------------------------------------------------------------------------

    @staticmethod
    def sample(route: PolicyRoute, req: RoutedRequest, table: RoutingTable) -> Sample | None:
        """Whether to record this request (its policy has `capture`): chat only, its tasks, its share."""
        cap = route.capture
        assert cap is not None
        if req.op is not Operation.CHAT or (cap.tasks is not None and req.task not in cap.tasks):
            return None
        if random.random() >= cap.sample:
            return None
        return Sample(cap.file_set(req.task), table.redactor, req.body, len(req.raw))

    def offer(self, sample: Sample, rec: RequestRecord) -> None:
        """Queue a finished sampled request; never waits. Only answered requests are worth keeping."""
        if rec.outcome != Outcome.SUCCESS or rec.model is None:
            return
        if rec.kept_bytes > MAX_KEPT_BYTES:
            self._dropped["too_large"].inc()
            return
        weight = sample.weight(rec)
        if self._queued_bytes + weight > self._max_bytes:
            self._dropped["queue_full"].inc()
            return
        try:
            self._queue.put_nowait((sample, rec))
        except asyncio.QueueFull:
            self._dropped["queue_full"].inc()
            return
        self._queued_bytes += weight

    # --- feedback ---------------------------------------------------------------------------------

    async def feedback(self, entry: dict[str, Any], redactor: Redactor) -> None:
        """Append one feedback entry; raises StorageUnavailable when it could not be kept."""
        line = orjson.dumps(redactor.value(entry)) + b"\n"
        try:
            await asyncio.to_thread(self.sink.write, FEEDBACK, [line])
        except Exception as exc:
            log.warning("capture: could not write feedback: %s", exc)
            raise StorageUnavailable("The feedback could not be stored; try again later") from None

    # --- rollouts' comparisons ----------------------------------------------------------------------

    def compared(self, entry: dict[str, Any]) -> None:
        """Queue one comparison a rollout scored (its format is in docs/configuration.md; it holds no prompt
        text) for the `comparisons` file set. Never waits and never raises: past the queue's size it is
        dropped, and a write that fails is logged (once a minute at most), both counted."""
        if len(self._compared) >= self._queue.maxsize:
            self._dropped["queue_full"].inc()
            return
        try:
            self._compared.append(orjson.dumps(entry) + b"\n")
        except TypeError:
            log.exception("capture: could not encode a comparison of request %s", entry.get("request_id"))
            self._dropped["invalid"].inc()
            return
        if not self._flushing:
            self._flushing = True
            self._writer.start(self._flush_compared(), "comparisons")

    async def _flush_compared(self) -> None:
        try:
            while self._compared:
                lines, self._compared = self._compared, []
                try:
                    await asyncio.to_thread(self.sink.write, COMPARISONS, lines)
                except Exception as exc:
                    self._dropped["write_error"].inc(len(lines))
                    self._log_failure(COMPARISONS, exc, len(lines))
        finally:
            self._flushing = False

    # --- the writer -------------------------------------------------------------------------------

    def start(self) -> None:
        self._writer.start(self._run(), "writer")
        self._started = True

    async def stop(self, grace_s: float = 5.0) -> None:
        """Write what is queued (for up to `grace_s`), then stop; what is left is dropped and counted."""
        if not self._started and not self._flushing:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while (self._busy or self._flushing or not self._queue.empty()) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await self._writer.stop()
        self._started = False
        left = self._queue.qsize() + len(self._compared)
        self._compared = []
        if left:
            self._dropped["shutdown"].inc(left)
        await asyncio.to_thread(self.sink.close)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._busy = True
            try:
                while len(batch) < BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                await asyncio.to_thread(self._write, batch)
            except Exception:  # a bug: keep capturing what comes next
                log.exception("capture: writing a batch failed")
            finally:
                self._queued_bytes -= sum(sample.weight(rec) for sample, rec in batch)
                self._busy = False

    def _write(self, batch: list[tuple[Sample, RequestRecord]]) -> None:
        """In a worker thread: redact, encode, group by file set, hand to the sink."""
        groups: dict[str, list[bytes]] = {}
        for sample, rec in batch:
            try:
                line = encode(sample, rec)
            except Exception:
                log.exception("capture: could not encode request %s", rec.request_id)
                self._dropped["invalid"].inc()
                continue
            groups.setdefault(sample.file_set, []).append(line)
        for file_set, lines in groups.items():
            try:
                self.sink.write(task_set(file_set), lines)
            except Exception as exc:
                self._dropped["write_error"].inc(len(lines))
                self._log_failure(file_set, exc, len(lines))
                continue
            self._written.labels(file_set).inc(len(lines))

    def _log_failure(self, file_set: str, exc: Exception, n: int) -> None:
        """At most one message a minute, however many batches fail."""
        self._failed_since_log += n
        now = time.monotonic()
        if now - self._last_log >= ERROR_LOG_INTERVAL_S:
            log.warning("capture: could not write to file set '%s': %s (%d record(s) dropped since the last "
                        "message)", file_set, exc, self._failed_since_log)
            self._last_log, self._failed_since_log = now, 0


def encode(sample: Sample, rec: RequestRecord) -> bytes:
    """One capture as a JSON line, its request and answer redacted. The format is in docs/configuration.md."""
    answer, finish = kept(rec) or from_stream(b"")  # none kept: a stream without events (offer() let no long one in)
    assert rec.model is not None
    red = sample.redactor
    record = {
        "ts": stamp(sample.at),
        "request_id": rec.request_id,
        "task": rec.task,
        "policy": rec.policy,
        "model": rec.model.name,
        "upstream_model": rec.model.upstream_name,
        "stream": rec.stream,
        "request": red.value(sample.body),
        "answer": red.value(answer),
        "finish_reason": finish,
        "usage": {"prompt_tokens": rec.prompt_tokens, "completion_tokens": rec.completion_tokens},
        "cost_usd": rec.cost_usd,
        "latency_s": round(rec.duration_s, 4),
        "ttft_s": round(rec.first_byte_s, 4) if rec.stream and rec.first_byte_s is not None else None,
        "fallbacks": len(rec.failures),
        "client": rec.key_id,
    }
    return orjson.dumps(record) + b"\n"


def stamp(at: float) -> str:
    """A record's `ts`: the UTC time `at` (seconds since the epoch), to the millisecond."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
