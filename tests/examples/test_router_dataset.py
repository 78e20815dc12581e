"""The committed routing dataset (examples/router/triage.jsonl): every row is one that gateway/learned can
train on, scored for both models from their recorded answers, and the tickets are those make_tickets makes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from examples.flywheel import make_tickets, teacher
from gateway.distill.evaluate import exact

DATASET = Path(__file__).resolve().parents[2] / "examples" / "router" / "triage.jsonl"
MODELS = {"ticket-triage", "gpt-4o-mini"}


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines()]


def test_every_row_is_a_triage_prompt_scored_for_both_models(rows: list[dict[str, Any]]) -> None:
    assert len(rows) >= 1500
    assert DATASET.stat().st_size < 2_000_000
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        assert row["task"] == "triage"
        assert [m["role"] for m in row["messages"]] == ["system", "user"]
        assert row["messages"] == teacher.chat(row["messages"][1]["content"])
        assert set(row["scores"]) == MODELS and set(row["answers"]) == MODELS
        assert all(score in (0.0, 1.0) for score in row["scores"].values())
        # each score is what the recorded answer earns
        assert row["scores"] == {m: exact(row["queue"], a) for m, a in row["answers"].items()}


def test_the_rows_are_the_routing_tickets_of_every_kind(rows: list[dict[str, Any]]) -> None:
    tickets = make_tickets.routing(len(rows))
    assert [(r["id"], r["queue"], r["kind"], r["messages"][1]["content"]) for r in rows] == [
        (t["id"], t["queue"], t["kind"], t["text"]) for t in tickets], \
        "the templates changed: run examples/router/make_dataset.py again"
    assert set(Counter(r["kind"] for r in rows)) == set(make_tickets.KINDS)


def test_the_small_model_is_clearly_worse_and_worst_on_the_hard_kind(rows: list[dict[str, Any]]) -> None:
    def accuracy(model: str, kind: str | None = None) -> float:
        part = [r for r in rows if kind is None or r["kind"] == kind]
        return float(sum(r["scores"][model] for r in part)) / len(part)

    assert accuracy("gpt-4o-mini") - accuracy("ticket-triage") > 0.2
    assert accuracy("ticket-triage", "hard") < accuracy("ticket-triage", "plain") - 0.2


def test_a_router_trained_on_it_recovers_the_gap_on_held_out_tickets(tmp_path: Path) -> None:
    """docs/router.md's proof: APGR at least 0.60, and 0.08 above a random router, on prompts held out."""
    pytest.importorskip("sklearn")
    from gateway.learned.train import Options, train

    metrics = train(Options(DATASET, tmp_path / "router", seed=0))["metrics"]
    assert (metrics["cheap"], metrics["strong"]) == ("ticket-triage", "gpt-4o-mini")
    assert metrics["rows"] >= 300
    learned, random = metrics["learned"], metrics["random"]
    assert learned["apgr"] >= 0.60 and learned["apgr"] >= random["apgr"] + 0.08, metrics
    assert learned["cpt50"] < random["cpt50"] and learned["cpt80"] < random["cpt80"], metrics
