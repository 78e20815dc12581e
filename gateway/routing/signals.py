"""What the router learns from traffic: per-model latency and per-policy answer lengths.

Latency per model is a sliding window of the most recent samples of time to first token and time per
output token; its quantiles are recomputed every few samples on the observing side, so reading them
when deciding is O(1). The window follows change: old samples fall out as new ones arrive. Until a
model has MIN_SAMPLES samples, its configured `latency` prior stands in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from gateway.record import RequestRecord
from gateway.routing.tokens import Encoder, load_encoder

WINDOW = 256
MIN_SAMPLES = 8
REFRESH_EVERY = 8
EWMA_ALPHA = 0.1


class Window:
    """The last WINDOW samples and their p50/p95, refreshed every REFRESH_EVERY samples."""

    __slots__ = ("_pending", "_samples", "count", "p50", "p95")

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=WINDOW)
        self._pending = 0
        self.count = 0
        self.p50: float | None = None
        self.p95: float | None = None

    def add(self, value: float) -> None:
        self._samples.append(value)
        self.count += 1
        self._pending += 1
        if self._pending >= REFRESH_EVERY or self.count <= MIN_SAMPLES:
            self._pending = 0
            ordered = sorted(self._samples)
            n = len(ordered)
            self.p50 = ordered[(n - 1) // 2]
            self.p95 = ordered[min(n - 1, round(0.95 * (n - 1)))]


@dataclass(slots=True)
class ModelSpeed:
    ttft: Window
    tpot: Window

    def ready(self) -> bool:
        return self.ttft.count >= MIN_SAMPLES and self.tpot.count >= MIN_SAMPLES


class Signals:
    """Per-app measurements that outlive config reloads (keyed by model and policy names)."""

    def __init__(self, encoder: Encoder | None = None, *, exact_tokens: bool = True) -> None:
        self.encoder = encoder if encoder is not None or not exact_tokens else load_encoder()
        self._speed: dict[str, ModelSpeed] = {}
        self._output: dict[tuple[str, str | None], float] = {}
        self._queue_wait: dict[str, float] = {}
        self._quality: dict[tuple[str, str | None], float] = {}

    def queue_wait(self, backend: str) -> float:
        """Seconds a new request is expected to queue on the backend before it runs (vLLM's queue)."""
        return self._queue_wait.get(backend, 0.0)

    def set_queue_wait(self, backend: str, seconds: float) -> None:
        self._queue_wait[backend] = seconds

    def quality(self, model: str, task: str | None) -> float | None:
        """The model's measured quality for the task (a rollout's live score), if any."""
        return self._quality.get((model, task)) if self._quality else None

    def set_quality(self, model: str, task: str | None, score: float) -> None:
        self._quality[(model, task)] = score

    def speed(self, model: str) -> ModelSpeed | None:
        return self._speed.get(model)

    def expected_output_tokens(self, policy: str, task: str | None) -> float | None:
        return self._output.get((policy, task))

    def observe(self, rec: RequestRecord, known_tasks: frozenset[str]) -> None:
        """Learn from a request that an upstream answered. Tasks outside `known_tasks` share one key."""
        if rec.model is None or rec.status != 200 or rec.completion_tokens is None:
            return
        task = rec.task if rec.task in known_tasks else None
        key = (rec.policy, task)
        old = self._output.get(key)
        n = float(rec.completion_tokens)
        self._output[key] = n if old is None else old + EWMA_ALPHA * (n - old)
        speed = self._speed.get(rec.model.name)
        if speed is None:
            speed = self._speed[rec.model.name] = ModelSpeed(Window(), Window())
        if rec.stream and rec.first_byte_s is not None:
            ttft = rec.first_byte_s
            speed.ttft.add(ttft)
            if rec.completion_tokens > 1:
                speed.tpot.add((rec.duration_s - ttft) / (rec.completion_tokens - 1))
        elif not rec.stream and rec.completion_tokens > 0:
            # A JSON answer gives only its total; split it with the measured (or assumed) first-token time.
            ttft = speed.ttft.p50 if speed.ttft.p50 is not None else 0.0
            speed.tpot.add(max(0.0, rec.duration_s - ttft) / rec.completion_tokens)
