"""`distill export` (gateway/distill/dataset.py): the SFT format, deduplication, the deterministic split,
feedback and model filters, and the stats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.distill.dataset import Export, export, held_out
from gateway.errors import DistillError
from tests.unit.distill.captures import SYSTEM, read_jsonl, row, write_captures, write_feedback


def run(tmp_path: Path, **kwargs: object) -> tuple[list[dict], list[dict], dict]:  # type: ignore[type-arg]
    out = tmp_path / "out"
    stats = export(Export(task="triage", capture_dir=tmp_path / "cap", out=out, **kwargs))  # type: ignore[arg-type]
    assert json.loads((out / "stats.json").read_text()) == stats
    return read_jsonl(out / "train.jsonl"), read_jsonl(out / "eval.jsonl"), stats


def test_the_openai_fine_tuning_format(tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {"name": "route", "parameters": {"type": "object"}}}]
    calls = [{"id": "c1", "type": "function", "function": {"name": "route", "arguments": '{"q": "billing"}'}}]
    write_captures(tmp_path / "cap", [row("charged twice", "billing", request_id="r1"),
                                      row("where is it", None, request_id="r2", tools=tools, tool_calls=calls)])
    train, held, _ = run(tmp_path, eval_fraction=0.0)
    assert held == []
    assert train == [
        {"messages": [SYSTEM, {"role": "user", "content": "charged twice"},
                      {"role": "assistant", "content": "billing"}]},
        {"messages": [SYSTEM, {"role": "user", "content": "where is it"}, {"role": "assistant", "tool_calls": calls}],
         "tools": tools},
    ]


def test_one_example_per_prompt_the_newest_answer(tmp_path: Path) -> None:
    write_captures(tmp_path / "cap", [row("a", "billing", request_id="r1"), row("b", "returns", request_id="r2"),
                                      row("a", "shipping", request_id="r3")])
    train, _, stats = run(tmp_path, eval_fraction=0.0)
    assert sorted((ex["messages"][1]["content"], ex["messages"][-1]["content"]) for ex in train) == [
        ("a", "shipping"), ("b", "returns")]
    assert (stats["records"], stats["duplicates"], stats["examples"]) == (3, 1, 2)


def test_the_same_captures_in_another_order_make_the_same_files(tmp_path: Path) -> None:
    """Concurrent requests are captured in the order they end: that order must not change the dataset,
    nor so the training run on it."""
    rows = [row(f"ticket {i}", "billing", request_id=f"r{i}") for i in range(50)]
    write_captures(tmp_path / "cap", rows)
    run(tmp_path, eval_fraction=0.2)
    first = [(tmp_path / "out" / name).read_bytes() for name in ("train.jsonl", "eval.jsonl")]
    write_captures(tmp_path / "cap", rows[::-1])
    run(tmp_path, eval_fraction=0.2)
    assert [(tmp_path / "out" / name).read_bytes() for name in ("train.jsonl", "eval.jsonl")] == first


def test_the_split_is_by_prompt_and_the_same_every_time(tmp_path: Path) -> None:
    rows = [row(f"ticket {i}", "billing", request_id=f"r{i}") for i in range(400)]
    write_captures(tmp_path / "cap", rows)
    train, held, stats = run(tmp_path, eval_fraction=0.25, seed=3)
    assert 70 <= len(held) <= 130 and len(train) + len(held) == 400
    assert (stats["train"], stats["eval"]) == (len(train), len(held))
    held_prompts = {ex["messages"][1]["content"] for ex in held}
    # More data later: every prompt stays in the split it was in.
    write_captures(tmp_path / "cap", [row(f"later {i}", "returns", request_id=f"l{i}") for i in range(100)], name="b")
    _, held2, _ = run(tmp_path, eval_fraction=0.25, seed=3)
    assert held_prompts == {ex["messages"][1]["content"] for ex in held2} - {f"later {i}" for i in range(100)}
    _, held3, _ = run(tmp_path, eval_fraction=0.25, seed=4)
    assert {ex["messages"][1]["content"] for ex in held3} != {ex["messages"][1]["content"] for ex in held2}


def test_held_out_is_a_uniform_hash() -> None:
    assert held_out("k", 0, 0.2) == held_out("k", 0, 0.2)
    assert not held_out("k", 0, 0.0)
    assert sum(held_out(f"k{i}", 0, 0.5) for i in range(2000)) in range(900, 1100)


def test_feedback_filters_before_dedupe(tmp_path: Path) -> None:
    write_captures(tmp_path / "cap", [row("a", "billing", request_id="r1"), row("a", "shipping", request_id="r2"),
                                      row("b", "returns", request_id="r3"), row("c", "account", request_id="r4")])
    write_feedback(tmp_path / "cap", [{"request_id": "r2", "score": 1}, {"request_id": "r2", "score": -1},
                                      {"request_id": "r3", "label": "bad"}, {"request_id": "r4", "score": 0.9}])
    train, _, stats = run(tmp_path, eval_fraction=0.0, min_score=0, drop_labels=frozenset({"bad"}))
    # r2's latest score (-1) drops it, so prompt a keeps r1's answer; r3 is labelled bad.
    assert [ex["messages"][-1]["content"] for ex in train] == ["billing", "account"]
    assert stats["dropped"] == {"score": 1, "label": 1}
    assert stats["with_feedback"] == 3


def test_only_answers_from_the_given_models(tmp_path: Path) -> None:
    write_captures(tmp_path / "cap", [row("a", "billing", request_id="r1", model="teacher"),
                                      row("b", "returns", request_id="r2", model="student"),
                                      row("c", "account", request_id="r3", model="other")])
    train, _, stats = run(tmp_path, eval_fraction=0.0, models=frozenset({"teacher", "up-other"}))
    assert [ex["messages"][1]["content"] for ex in train] == ["a", "c"]
    assert stats["dropped"] == {"model": 1}
    assert stats["models"] == {"teacher": 1, "other": 1}


def test_lines_that_cannot_be_used_are_counted(tmp_path: Path) -> None:
    empty = row("e", "", request_id="r2")
    write_captures(tmp_path / "cap", [row("a", "billing", request_id="r1"), empty, '{"torn": ', "[1, 2]"])
    train, _, stats = run(tmp_path, eval_fraction=0.0)
    assert len(train) == 1
    assert (stats["records"], stats["unreadable"], stats["no_answer"]) == (4, 2, 1)


def test_no_captures_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DistillError, match="no captures for task 'triage'"):
        run(tmp_path)
    write_captures(tmp_path / "cap", [row("a", "billing", request_id="r1")])
    with pytest.raises(DistillError, match="no training examples"):
        run(tmp_path, models=frozenset({"nobody"}))
    with pytest.raises(DistillError, match="eval-fraction"):
        run(tmp_path, eval_fraction=1.0)
