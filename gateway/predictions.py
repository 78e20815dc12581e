"""Predicted against observed quality, for `learned` policies: the drift a router's operators watch.

When a request that a `learned` policy routed ends with an answer, the router's predictions for it are kept
(the last KEEP requests of this process: about an hour of a busy policy). A score observed later for one
of those answers meets its prediction:

- feedback (`POST /v1/feedback` with a `score` from 0 to 1) scores the model that answered, when it comes
  with the key that made the request (as `nanoroute distill export` joins them);
- a rollout's comparison scores the rolled-out model on the request it mirrored, when the router predicts
  that model too.

Each pair adds to `nanoroute_router_quality_{predicted,observed,samples}_total{policy,model,source}`: the two
means over the same answers, side by side (docs/metrics.md). Each process keeps its own requests: with
several workers, feedback that reaches another worker than the request did is not paired (it is still
written, for `nanoroute router dataset`).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.metrics import Metrics

KEEP = 50_000


@dataclass(frozen=True, slots=True)
class Predicted:
    key_id: str | None
    policy: str
    served: str
    scores: dict[str, float]
    """Every model the router predicts, by name."""


class Predictions:
    def __init__(self, metrics: Metrics | None, keep: int = KEEP) -> None:
        self.metrics = metrics
        self.keep = keep
        self._recent: dict[tuple[str | None, str], Predicted] = {}
        """By client key and request id: ids may come from clients (X-Request-Id), one key's does not hide
        another's."""

    def served(self, request_id: str, entry: Predicted) -> None:
        """A `learned` request answered by `entry.served`."""
        if self.metrics is not None:
            self.metrics.predicted(entry.policy, entry.served, entry.scores[entry.served])
        recent = self._recent
        recent[entry.key_id, request_id] = entry
        if len(recent) > self.keep:
            del recent[next(iter(recent))]  # the oldest: dicts keep insertion order

    def feedback(self, request_id: str, key_id: str | None, score: float) -> bool:
        """A client's score of an answer; True when it met a prediction."""
        entry = self._recent.get((key_id, request_id))
        if entry is None or not 0.0 <= score <= 1.0:
            return False
        return self._pair(entry, entry.served, "feedback", score)

    def compared(self, request_id: str, key_id: str | None, model: str, score: float) -> bool:
        """A rollout's score of `model`'s answer to a request of that key; True when it met a prediction."""
        entry = self._recent.get((key_id, request_id))
        return entry is not None and self._pair(entry, model, "rollout", score)

    def _pair(self, entry: Predicted, model: str, source: str, score: float) -> bool:
        predicted = entry.scores.get(model)
        if predicted is None:
            return False
        if self.metrics is not None:
            self.metrics.compared(entry.policy, model, source, predicted, score)
        return True
