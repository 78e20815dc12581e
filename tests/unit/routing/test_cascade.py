"""gateway/routing/cascade.py: the checks that decide whether a cheaper model's answer stops the cascade."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from gateway.backends.base import Operation
from gateway.config.loader import load_text
from gateway.config.table import PolicyRoute
from gateway.routing.cascade import judge_json, judge_stream, verdict, wants_logprobs
from gateway.routing.request import RoutedRequest, parse_request


def policy(settings: str = "") -> PolicyRoute:
    """A cascade policy; `settings` is the flow mapping under `cascade:` (omitted when empty)."""
    cascade = f", cascade: {{{settings}}}" if settings else ""
    tbl = load_text(f"""\
backends:
  a: {{type: vllm, urls: ["http://127.0.0.1:9/v1"]}}
models:
  small: {{backend: a}}
  big: {{backend: a}}
policies:
  - {{name: p, strategy: cascade, candidates: [small, big]{cascade}}}
""")
    return tbl.policies[0]


def request(json_mode: bool = False, op: Operation = Operation.CHAT) -> RoutedRequest:
    body: dict[str, Any] = {"model": "m"}
    if op is Operation.CHAT:
        body["messages"] = [{"role": "user", "content": "extract"}]
    else:
        body["prompt"] = "extract"
    if json_mode:
        body["response_format"] = {"type": "json_object"}
    return parse_request(op, json.dumps(body).encode(), task_header=None, key_id=None, request_id="r")


def chat(content: str | None, refusal: str | None = None, logprobs: list[float] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if refusal is not None:
        message["refusal"] = refusal
    block = None if logprobs is None else {"content": [{"token": "t", "logprob": lp, "top_logprobs": []}
                                                       for lp in logprobs], "refusal": None}
    return {"object": "chat.completion", "choices": [{"index": 0, "message": message, "logprobs": block,
                                                      "finish_reason": "stop"}]}


def text(answer: str, logprobs: Sequence[float | None] | None = None) -> dict[str, Any]:
    block = None if logprobs is None else {"tokens": ["t"] * len(logprobs), "token_logprobs": logprobs,
                                           "top_logprobs": None, "text_offset": []}
    return {"object": "text_completion", "choices": [{"index": 0, "text": answer, "logprobs": block,
                                                      "finish_reason": "stop"}]}


def events(*chunks: dict[str, Any]) -> bytes:
    lines = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]
    return b"".join(lines) + b"data: [DONE]\n\n"


def delta(index: int = 0, logprobs: list[float] | None = None, **fields: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "delta": fields, "finish_reason": None}
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": "t", "logprob": lp} for lp in logprobs]}
    return {"object": "chat.completion.chunk", "choices": [choice]}


# -- json --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "json_mode", "settings", "expected"), [
    ('{"a": 1}', True, "", None),
    ("[1, 2]", True, "", None),
    ('{"a": 1', True, "", "json"),
    ("Here it is: {\"a\": 1}", True, "", "json"),
    ('{"a": 1', False, "", None),  # the request did not ask for JSON
    ('{"a": 1', True, "json: false", None),
])
def test_json_check(answer: str, json_mode: bool, settings: str, expected: str | None) -> None:
    assert judge_json(policy(settings), request(json_mode), chat(answer)) == expected


def test_json_check_on_a_text_completion() -> None:
    p = policy()
    assert judge_json(p, request(True, Operation.COMPLETIONS), text("not json")) == "json"
    assert judge_json(p, request(True, Operation.COMPLETIONS), text('{"ok": true}')) is None


# -- refusal -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [
    "",
    "   \n",
    None,
    "I'm sorry, but I can't help with that.",
    "Im sorry, I cannot.",
    "I am sorry, that is not possible.",
    "Sorry, but I won't do that.",
    "sorry, I can't",
    "I can't help with that request.",
    "I cannot provide that information.",
    "I'm unable to comply.",
    "I am not able to assist.",
    "  As an AI language model, I ...",
])
def test_empty_answers_and_stock_refusals_escalate(answer: str | None) -> None:
    assert judge_json(policy(), request(), chat(answer)) == "refusal"


@pytest.mark.parametrize("answer", [
    "Sorry for the delay: your order ships today.",
    "The customer said \"I'm sorry, but I can't pay\".",
    "I can help with that.",
    "Cannot reproduce on version 2.",
])
def test_answers_that_merely_mention_sorry_pass(answer: str) -> None:
    assert judge_json(policy(), request(), chat(answer)) is None


def test_the_refusal_field_escalates_even_with_content() -> None:
    assert judge_json(policy(), request(), chat("Here you go", refusal="I can't help with that")) == "refusal"


def test_refusal_check_can_be_turned_off() -> None:
    p = policy("refusal: false")
    assert judge_json(p, request(), chat("")) is None
    assert judge_json(p, request(), chat("I'm sorry, but I can't.", refusal="no")) is None


def test_a_refusal_is_reported_before_bad_json() -> None:
    assert judge_json(policy(), request(True), chat("I'm sorry, I cannot do that.")) == "refusal"


# -- regex -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "expected"), [
    ('{"invoice_number": "A-1"}', None),
    ('{"total": 3, "invoice_number" : 7}', None),  # searched, not anchored
    ('{"total": 3}', "regex"),
])
def test_regex_check(answer: str, expected: str | None) -> None:
    p = policy(r"""regex: '"invoice_number"\s*:'""")
    assert judge_json(p, request(True), chat(answer)) == expected


def test_no_regex_means_no_regex_check() -> None:
    assert policy().cascade_regex is None
    assert judge_json(policy(), request(), chat("anything at all")) is None


# -- logprob -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("logprobs", "expected"), [
    ([-0.1, -0.2, -0.3], None),  # mean -0.2
    ([-0.5, -0.5], None),  # exactly the threshold
    ([-0.1, -2.0], "logprob"),  # mean -1.05
    ([], "logprob"),
    (None, "logprob"),  # asked for, not given: not confident
])
def test_logprob_check_on_chat_and_text_shapes(logprobs: list[float] | None, expected: str | None) -> None:
    p = policy("min_mean_logprob: -0.5")
    assert wants_logprobs(p)
    assert judge_json(p, request(), chat("fine", logprobs=logprobs)) == expected
    assert judge_json(p, request(op=Operation.COMPLETIONS), text("fine", logprobs=logprobs)) == expected


def test_logprobs_are_not_wanted_without_a_threshold() -> None:
    assert not wants_logprobs(policy())
    assert judge_json(policy(), request(), chat("fine", logprobs=[-9.0])) is None


def test_text_logprobs_skip_nulls() -> None:
    p = policy("min_mean_logprob: -0.5")
    assert judge_json(p, request(op=Operation.COMPLETIONS), text("fine", logprobs=[None, -0.1, -0.2])) is None


def test_verdict_with_everything_declared() -> None:
    p = policy(r"""regex: 'ok', min_mean_logprob: -1""")
    req = request(True)
    assert verdict(p, req, '{"ok": 1}', None, [-0.5]) is None
    assert verdict(p, req, '{"ok": 1}', None, [-1.5]) == "logprob"
    assert verdict(p, req, '{"no": 1}', None, [-0.5]) == "regex"
    assert verdict(p, req, '{"ok": 1', None, [-0.5]) == "json"
    assert verdict(p, req, '{"ok": 1}', "refused", [-0.5]) == "refusal"


def test_malformed_answers_are_judged_as_empty() -> None:
    p = policy()
    assert judge_json(p, request(), {"choices": []}) == "refusal"
    assert judge_json(p, request(), {}) == "refusal"
    assert judge_json(p, request(), {"choices": [{"message": {"content": 42}}]}) == "refusal"


# -- streams -----------------------------------------------------------------------------------------


def test_a_stream_is_judged_on_its_assembled_deltas() -> None:
    p = policy(r"""regex: '"invoice_number"\s*:'""")
    stream = events(delta(role="assistant", content=""), delta(content='{"invoice_'),
                    delta(content='number": '), delta(content='"A-1"}'))
    assert judge_stream(p, request(True), stream) is None
    cut = events(delta(role="assistant", content='{"invoice_'), delta(content='number": '))
    assert judge_stream(p, request(True), cut) == "json"


def test_a_stream_of_nothing_or_a_refusal_escalates() -> None:
    p = policy()
    assert judge_stream(p, request(), events(delta(role="assistant"), delta())) == "refusal"
    assert judge_stream(p, request(), events(delta(content="I'm sorry, "), delta(content="but I can't."))) == "refusal"
    assert judge_stream(p, request(), events(delta(content="Sure"), delta(refusal="no"))) == "refusal"


def test_only_the_first_choice_of_a_stream_counts() -> None:
    p = policy()
    stream = events(delta(index=1, content="I'm sorry, I can't."), delta(index=0, content='{"a": 1}'))
    assert judge_stream(p, request(True), stream) is None


def test_stream_logprobs_are_gathered_across_chunks() -> None:
    p = policy("min_mean_logprob: -0.5")
    good = events(delta(content="a", logprobs=[-0.1]), delta(content="b", logprobs=[-0.3]))
    bad = events(delta(content="a", logprobs=[-0.1]), delta(content="b", logprobs=[-2.0, -1.0]))
    assert judge_stream(p, request(), good) is None
    assert judge_stream(p, request(), bad) == "logprob"


def test_a_text_completion_stream_is_assembled_from_text() -> None:
    p = policy()
    chunks = [{"object": "text_completion", "choices": [{"index": 0, "text": t, "logprobs": None}]}
              for t in ('{"a"', ": 1}")]
    assert judge_stream(p, request(True, Operation.COMPLETIONS), events(*chunks)) is None


def test_usage_chunks_comments_and_blank_lines_are_ignored() -> None:
    p = policy()
    usage = {"object": "chat.completion.chunk", "choices": [], "usage": {"completion_tokens": 2}}
    stream = b": keep-alive\n\n" + events(delta(content='{"a": 1}'), usage)
    assert judge_stream(p, request(True), stream) is None


def test_an_unparsable_event_fails_as_json() -> None:
    assert judge_stream(policy(), request(), b"data: {not json\n\ndata: [DONE]\n\n") == "json"
