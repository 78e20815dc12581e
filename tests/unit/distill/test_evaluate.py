"""The evaluators (gateway/distill/evaluate.py): exact labels, JSON fields, the judge's verdict, and which
one fits a task's answers."""

from __future__ import annotations

import json

import pytest

from gateway.distill.evaluate import answer_text, choose, exact, json_fields, judge_messages, judge_verdict


@pytest.mark.parametrize(("got", "score"), [
    ("billing", 1.0), (" Billing.", 1.0), ('"billing"', 1.0), ("billing!", 1.0), ("billing queue", 0.0), ("", 0.0),
])
def test_exact(got: str, score: float) -> None:
    assert exact("billing", got) == score


def test_json_fields() -> None:
    expected = '{"queue": "billing", "priority": "high", "refund": true}'
    assert json_fields(expected, '{"refund": true, "priority": "high", "queue": "billing", "extra": 1}') == 1.0
    assert json_fields(expected, '```json\n{"queue": "billing", "priority": "low"}\n```') == pytest.approx(1 / 3)
    assert json_fields(expected, '{"queue": "billing", "priority": "low"}', fields=["queue"]) == 1.0
    assert json_fields(expected, "not json") == 0.0
    assert json_fields(expected, "[1]") == 0.0
    assert json_fields("[1, 2]", "[1, 2]") == 1.0


def test_judge_verdict_and_prompt() -> None:
    replies = ("PASS-ab12", "pass-ab12.", "**PASS-AB12**", "FAIL-ab12", "PASS", "PASS-ff00", "", "I think PASS-ab12")
    assert [judge_verdict(r, "ab12") for r in replies] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    messages = judge_messages([{"role": "user", "content": "Summarise X"}], "X is good", "X is bad", "ab12")
    assert messages[0]["role"] == "system" and "PASS-ab12" in messages[0]["content"]
    assert json.loads(messages[1]["content"]) == {"conversation": [{"role": "user", "content": "Summarise X"}],
                                                  "reference_answer": "X is good", "answer_to_grade": "X is bad"}


def test_choose() -> None:
    assert choose(["billing", "returns"]) == "exact"
    assert choose(['{"queue": "billing"}', '{"queue": "x"}']) == "json_fields"
    assert choose(["billing", "A longer answer\nover two lines"]) == "judge"
    assert choose(["x" * 200]) == "judge"


def test_answer_text() -> None:
    assert answer_text({"role": "assistant", "content": "hi"}) == "hi"
    assert answer_text({"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text",
                                                                                        "text": "b"}]}) == "ab"
    calls = [{"id": "1", "type": "function", "function": {"name": "route", "arguments": '{"q": 1}'}}]
    assert answer_text({"role": "assistant", "content": None, "tool_calls": calls}) == (
        '[{"arguments": {"q": 1}, "name": "route"}]')
    assert answer_text({"role": "assistant"}) == ""
