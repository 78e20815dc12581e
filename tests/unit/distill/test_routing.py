"""`nanoroute router dataset` (gateway/distill/routing.py): captures joined with the rollouts' comparisons
and the clients' feedback into one row of per-model scores per prompt, and the stats."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from gateway.distill.routing import add_dataset_arguments, build, run_dataset
from gateway.errors import DistillError
from tests.unit.distill.captures import SYSTEM, read_jsonl, row, write_captures, write_comparisons, write_feedback


def captured(prompt: str, request_id: str, model: str = "teacher", client: str | None = "app") -> dict[str, Any]:
    return {**row(prompt, "billing", request_id=request_id, model=model), "client": client}


def compared(request_id: str, score: Any, model: str = "small", reference: str = "teacher",
             client: str | None = "app") -> dict[str, Any]:
    return {"ts": "2026-11-25T00:00:01.000Z", "request_id": request_id, "client": client, "task": "triage",
            "policy": "triage", "model": model, "reference": reference, "score": score, "evaluator": "exact",
            "stage": "shadow"}


def run(tmp_path: Path, **kwargs: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    out = tmp_path / "out" / "routing.jsonl"
    stats = build(tmp_path / "cap", out, **kwargs)
    return read_jsonl(out), stats


def scores(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {r["id"]: r["scores"] for r in rows}


def test_a_comparison_scores_its_model_and_the_reference_scores_one(tmp_path: Path) -> None:
    write_captures(tmp_path / "cap", [captured("charged twice", "r1"), captured("where is it", "r2")])
    write_comparisons(tmp_path / "cap", [compared("r1", 0.0), compared("r2", 1), compared("r2", 0.5)])
    rows, _ = run(tmp_path)
    assert rows[0] == {"id": "r1", "task": "triage",
                       "messages": [SYSTEM, {"role": "user", "content": "charged twice"}],
                       "scores": {"small": 0.0, "teacher": 1.0}}
    assert scores(rows) == {"r1": {"small": 0.0, "teacher": 1.0},
                            "r2": {"small": 0.75, "teacher": 1.0}}  # several comparisons: their mean
    rows, stats = run(tmp_path, reference_score=0.8)
    assert scores(rows)["r1"] == {"small": 0.0, "teacher": 0.8}
    assert stats["reference_score"] == 0.8


def test_feedback_scores_the_served_model_and_wins(tmp_path: Path) -> None:
    write_captures(tmp_path / "cap", [captured("a", "r1"), captured("b", "r2", model="small"), captured("c", "r3")])
    write_comparisons(tmp_path / "cap", [compared("r1", 1.0), compared("r2", 1.0), compared("r3", 1.0)])
    write_feedback(tmp_path / "cap", [
        {"request_id": "r1", "score": 0.25, "client": "app"},   # the reference, as served: over the default
        {"request_id": "r2", "score": 0.0, "client": "app"},    # a canary's answer, as served: over its comparison
        {"request_id": "r3", "label": "fine", "client": "app"},  # no score: nothing
    ])
    rows, stats = run(tmp_path)
    assert scores(rows) == {"r1": {"small": 1.0, "teacher": 0.25}, "r2": {"small": 0.0, "teacher": 1.0},
                            "r3": {"small": 1.0, "teacher": 1.0}}
    assert stats["feedback"] == {"used": 2, "skipped": 0}


def test_a_keys_feedback_and_comparisons_count_only_for_its_own_requests(tmp_path: Path) -> None:
    """Request ids may come from the clients (X-Request-Id): two keys' "r1" are two requests."""
    write_captures(tmp_path / "cap", [captured("a", "r1", client="app"), captured("b", "r1", client="other")])
    write_comparisons(tmp_path / "cap", [compared("r1", 0.5, client="app")])
    write_feedback(tmp_path / "cap", [{"request_id": "r1", "score": 0.0, "client": "other"}])
    rows, stats = run(tmp_path)
    assert [(r["messages"][1]["content"], r["scores"]) for r in rows] == [("a", {"small": 0.5, "teacher": 1.0})]
    assert stats["dropped_one_model"] == 1  # "other"'s request: its feedback scores the teacher alone
    assert stats["comparisons"] == {"read": 1, "joined": 1, "unmatched": 0, "invalid": 0}


def test_a_prompt_scored_for_one_model_is_dropped(tmp_path: Path) -> None:
    write_captures(tmp_path / "cap", [captured("a", "r1"), captured("b", "r2"), captured("c", "r3")])
    write_comparisons(tmp_path / "cap", [compared("r3", 1.0)])
    write_feedback(tmp_path / "cap", [{"request_id": "r2", "score": 1.0, "client": "app"}])
    rows, stats = run(tmp_path)
    assert [r["id"] for r in rows] == ["r3"]
    assert (stats["rows"], stats["dropped_one_model"]) == (1, 2)  # no score at all; feedback alone


def test_scores_outside_zero_to_one_are_skipped_and_counted(tmp_path: Path) -> None:
    write_captures(tmp_path / "cap", [captured("a", "r1"), captured("b", "r2")])
    write_comparisons(tmp_path / "cap", [compared("r1", 1.5), compared("r1", True), compared("r1", "1"),
                                         compared("r2", 0.5), "{torn", {"request_id": "r2", "score": 1.0}])
    write_feedback(tmp_path / "cap", [{"request_id": "r2", "score": -1, "client": "app"}])
    rows, stats = run(tmp_path)
    assert scores(rows) == {"r2": {"small": 0.5, "teacher": 1.0}}
    assert stats["comparisons"] == {"read": 6, "joined": 1, "unmatched": 0, "invalid": 5}
    assert stats["feedback"] == {"used": 0, "skipped": 1}


def test_a_prompt_asked_twice_is_one_row_its_scores_averaged(tmp_path: Path) -> None:
    write_captures(tmp_path / "cap", [captured("a", "r9"), captured("a", "r2"), captured("a", "r5")])
    write_comparisons(tmp_path / "cap", [compared("r9", 1.0), compared("r2", 0.0), compared("r2", 0.0)])
    write_feedback(tmp_path / "cap", [{"request_id": "r5", "score": 0.5, "client": "app"}])
    rows, stats = run(tmp_path)
    # small: r9 1.0 and r2 0.0 (the mean of its two); teacher: 1.0 (r9), 1.0 (r2), 0.5 (r5's feedback)
    assert [(r["id"], r["scores"]) for r in rows] == [("r2", {"small": 0.5, "teacher": round(2.5 / 3, 6)})]
    assert (stats["records"], stats["rows"], stats["models"]) == (3, 1, {"small": 1, "teacher": 1})


def test_the_same_data_makes_the_same_bytes(tmp_path: Path) -> None:
    """Captures are written in the order requests end: that order must not change the dataset."""
    rows = [captured(f"ticket {i}", f"r{i}") for i in range(30)] + [captured("ticket 3", "again")]
    notes = [compared(f"r{i}", i / 30) for i in range(30)] + [compared("again", 0.1), compared("r3", 0.7)]
    write_captures(tmp_path / "cap", rows)
    write_comparisons(tmp_path / "cap", notes)
    run(tmp_path)
    first = (tmp_path / "out" / "routing.jsonl").read_bytes()
    run(tmp_path)
    assert (tmp_path / "out" / "routing.jsonl").read_bytes() == first
    write_captures(tmp_path / "cap", rows[::-1])
    write_comparisons(tmp_path / "cap", notes[::-1])
    run(tmp_path)
    assert (tmp_path / "out" / "routing.jsonl").read_bytes() == first
    assert [json.loads(line)["id"] for line in first.splitlines()][:3] == ["again", "r0", "r1"]


def test_the_stats_tasks_and_the_file(tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {"name": "route", "parameters": {"type": "object"}}}]
    write_captures(tmp_path / "cap", [captured("a", "r1"), '{"request_id": "torn', captured("b", "r2")])
    write_captures(tmp_path / "cap", [{**row("c", "x", request_id="s1", tools=tools), "client": "app"}],
                   task="sum%2Fmary")  # a task name with a slash, as the sink spells it
    write_comparisons(tmp_path / "cap", [compared("r1", 1.0), compared("s1", 0.0, model="tiny"),
                                         compared("gone", 1.0)])
    rows, stats = run(tmp_path)
    assert [(r["task"], r["id"]) for r in rows] == [("sum/mary", "s1"), ("triage", "r1")]
    assert rows[0]["tools"] == tools
    assert stats == {"captures": str(tmp_path / "cap"), "out": str(tmp_path / "out" / "routing.jsonl"),
                     "tasks": ["sum/mary", "triage"], "reference_score": 1.0, "records": 4, "unreadable": 1,
                     "comparisons": {"read": 3, "joined": 2, "unmatched": 1, "invalid": 0},
                     "feedback": {"used": 0, "skipped": 0}, "rows": 2, "dropped_one_model": 1,
                     "models": {"small": 1, "teacher": 2, "tiny": 1}}
    assert stat.S_IMODE((tmp_path / "out" / "routing.jsonl").stat().st_mode) == 0o600
    rows, stats = run(tmp_path, tasks={"sum/mary"})
    assert [r["id"] for r in rows] == ["s1"] and stats["comparisons"]["unmatched"] == 2


def test_nothing_to_read_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DistillError, match="no captures in"):
        run(tmp_path)
    write_captures(tmp_path / "cap", [captured("a", "r1")])
    with pytest.raises(DistillError, match="no captures for task 'other'"):
        run(tmp_path, tasks={"triage", "other"})
    with pytest.raises(DistillError, match="between 0 and 1"):
        run(tmp_path, reference_score=2.0)
    (tmp_path / "cap" / "comparisons" / "x.jsonl").mkdir(parents=True)  # a file that cannot be read
    with pytest.raises(DistillError, match="cannot read the captures in"):
        run(tmp_path)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_dataset_arguments(parser)
    return parser.parse_args(argv)


def test_the_command_reads_the_data_dir_and_prints_the_stats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NANOROUTE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("NANOROUTE_CAPTURE_DIR", raising=False)
    assert run_dataset(parse("--out", str(tmp_path / "d.jsonl"))) == 1
    assert capsys.readouterr().err.startswith(f"nanoroute router dataset: no captures in {tmp_path / 'data'}")

    write_captures(tmp_path / "data" / "captures", [captured("a", "r1")])
    write_comparisons(tmp_path / "data" / "captures", [compared("r1", 0.0)])
    assert run_dataset(parse("--out", str(tmp_path / "d.jsonl"), "--task", "triage", "--reference-score", "0.9")) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["out"], printed["rows"], printed["tasks"]) == (str(tmp_path / "d.jsonl"), 1, ["triage"])
    assert read_jsonl(tmp_path / "d.jsonl")[0]["scores"] == {"small": 0.0, "teacher": 0.9}
    args = parse("--captures", str(tmp_path / "elsewhere"), "--out", str(tmp_path / "d.jsonl"))
    assert run_dataset(args) == 1
    assert str(tmp_path / "elsewhere") in capsys.readouterr().err
