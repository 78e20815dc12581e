"""gateway/predictions.py: a `learned` request's predictions, met later by the scores that feedback and rollout
comparisons give its answer, and the metrics each pair adds to."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from gateway.metrics import Metrics
from gateway.predictions import Predicted, Predictions

SCORES = {"cheap": 0.25, "strong": 0.75}


def entry(served: str = "strong", key: str | None = "app") -> Predicted:
    return Predicted(key, "triage", served, dict(SCORES))


def value(m: Metrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, {"policy": "triage", **labels})
    return 0.0 if v is None else v


def pairs(m: Metrics, model: str, source: str) -> tuple[float, float, float]:
    """Samples, the sum of predicted scores and the sum of observed ones, for `model` and `source`."""
    labels = {"model": model, "source": source}
    return (value(m, "nanoroute_router_quality_samples_total", **labels),
            value(m, "nanoroute_router_quality_predicted_total", **labels),
            value(m, "nanoroute_router_quality_observed_total", **labels))


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def test_an_answer_served_observes_the_served_models_prediction(metrics: Metrics) -> None:
    p = Predictions(metrics)
    p.served("r1", entry("strong"))
    p.served("r2", entry("cheap"))
    assert value(metrics, "nanoroute_router_predicted_quality_count", model="strong") == 1
    assert value(metrics, "nanoroute_router_predicted_quality_sum", model="strong") == 0.75
    assert value(metrics, "nanoroute_router_predicted_quality_bucket", model="cheap", le="0.3") == 1
    assert value(metrics, "nanoroute_router_predicted_quality_bucket", model="cheap", le="0.2") == 0


def test_feedback_meets_the_served_models_prediction_for_the_same_key(metrics: Metrics) -> None:
    p = Predictions(metrics)
    p.served("r1", entry("strong", key="app"))
    assert p.feedback("r1", "app", 0.5)
    assert p.feedback("r1", "app", 1.0)
    assert pairs(metrics, "strong", "feedback") == (2, 1.5, 1.5)
    assert pairs(metrics, "cheap", "feedback") == (0, 0, 0)
    assert not p.feedback("r1", "other", 0.0)  # another key's request
    assert not p.feedback("r1", None, 0.0)
    assert pairs(metrics, "strong", "feedback") == (2, 1.5, 1.5)


def test_a_request_without_a_key_pairs_only_with_feedback_without_one(metrics: Metrics) -> None:
    p = Predictions(metrics)
    p.served("r1", entry(key=None))
    assert not p.feedback("r1", "app", 1.0)
    assert p.feedback("r1", None, 1.0)
    assert pairs(metrics, "strong", "feedback") == (1, 0.75, 1.0)


def test_two_keys_requests_with_one_id_are_two_requests(metrics: Metrics) -> None:
    """Request ids may come from clients (X-Request-Id): one key's request does not hide another's."""
    p = Predictions(metrics)
    p.served("r1", entry("cheap", key="app"))
    p.served("r1", entry("strong", key="other"))
    assert p.feedback("r1", "app", 0.0)
    assert p.feedback("r1", "other", 1.0)
    assert pairs(metrics, "cheap", "feedback") == (1, 0.25, 0.0)
    assert pairs(metrics, "strong", "feedback") == (1, 0.75, 1.0)


def test_a_rollout_comparison_scores_the_model_it_compared(metrics: Metrics) -> None:
    p = Predictions(metrics)
    p.served("r1", entry("strong"))
    assert p.compared("r1", "app", "cheap", 0.0)  # the rolled-out model's answer, not the one served
    assert pairs(metrics, "cheap", "rollout") == (1, 0.25, 0.0)
    assert pairs(metrics, "strong", "rollout") == (0, 0, 0)
    assert not p.compared("r1", "other", "cheap", 1.0)
    assert pairs(metrics, "cheap", "rollout") == (1, 0.25, 0.0)


@pytest.mark.parametrize(("call", "args"), [
    ("feedback", ("unknown", "app", 1.0)),
    ("feedback", ("r1", "app", -0.5)),  # feedback's scores are any number; only 0..1 is a quality
    ("feedback", ("r1", "app", 1.5)),
    ("compared", ("unknown", "app", "cheap", 1.0)),
    ("compared", ("r1", "app", "adapter", 1.0)),  # a model the router does not predict
])
def test_what_cannot_be_paired_is_ignored(metrics: Metrics, call: str, args: tuple[object, ...]) -> None:
    p = Predictions(metrics)
    p.served("r1", entry())
    assert getattr(p, call)(*args) is False
    for model in ("cheap", "strong", "adapter"):
        for source in ("feedback", "rollout"):
            assert pairs(metrics, model, source) == (0, 0, 0)


def test_the_oldest_request_is_forgotten_past_keep(metrics: Metrics) -> None:
    p = Predictions(metrics, keep=2)
    for rid in ("r1", "r2", "r3"):
        p.served(rid, entry())
    assert not p.feedback("r1", "app", 1.0)
    assert p.feedback("r2", "app", 1.0) and p.feedback("r3", "app", 1.0)
    assert pairs(metrics, "strong", "feedback")[0] == 2


def test_without_metrics_it_still_pairs() -> None:
    p = Predictions(None)
    p.served("r1", entry())
    assert p.feedback("r1", "app", 1.0)
    assert p.compared("r1", "app", "cheap", 1.0)
