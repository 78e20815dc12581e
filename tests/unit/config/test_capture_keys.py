"""The capture keys (gateway/config/schema.py, loader.py, table.py): a policy's `capture` and the top-level
`capture.redact`, resolved into the routing table, and how bad values fail at load."""

from __future__ import annotations

import pytest

from gateway.config.loader import load_text
from gateway.config.table import RoutingTable
from gateway.errors import ConfigError

BASE = """\
backends:
  b: {{type: openai, url: http://x:1/v1}}
models:
  m: {{backend: b, quality: {{scored: 0.9}}}}
policies:
  - {{name: support, match: {{task: [support, billing]}}, candidates: [m]{support}}}
  - {{name: rest, candidates: [m]{rest}}}
{top}"""


def load(support: str = "", rest: str = "", top: str = "") -> RoutingTable:
    return load_text(BASE.format(support=support, rest=rest, top=top))


def problems(**parts: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load(**parts)
    return list(info.value.problems)


def test_off_unless_a_policy_asks() -> None:
    t = load()
    assert all(p.capture is None for p in t.policies)
    assert t.redactor.text("a@b.io") == "[REDACTED:email]"  # the default patterns, ready for when it is on


def test_a_policy_with_tasks_files_each_under_its_task() -> None:
    cap = load(support=", capture: {sample: 0.25, tasks: [billing]}").policies[0].capture
    assert cap is not None
    assert (cap.sample, cap.tasks, cap.file_set("billing")) == (0.25, frozenset({"billing"}), "billing")


def test_without_tasks_a_policy_captures_the_tasks_it_matches() -> None:
    cap = load(support=", capture: {sample: 1}").policies[0].capture
    assert cap is not None
    assert cap.tasks == frozenset({"support", "billing"})


def test_a_catch_all_files_known_tasks_by_name_and_the_rest_under_the_policy() -> None:
    cap = load(rest=", capture: {sample: 0.5}").policies[1].capture
    assert cap is not None and cap.tasks is None
    assert [cap.file_set(t) for t in ("support", "scored", "made-up", None)] == ["support", "scored", "rest", "rest"]


def test_redact_settings() -> None:
    t = load(top="capture: {redact: {builtin: [key], patterns: {order: 'ORD-[0-9]{6}'}}}\n")
    assert t.redactor.text("a@b.io ORD-123456 sk-abcdefghijklmnopqrstuv") == (
        "a@b.io [REDACTED:order] [REDACTED:key]")


@pytest.mark.parametrize(("parts", "path", "expected"), [
    ({"support": ", capture: {sample: 1.5}"}, "policies[0].capture.sample", "less than or equal to 1"),
    ({"support": ", capture: {}"}, "policies[0].capture.sample", "Field required"),
    ({"support": ", capture: {sample: 1, tasks: []}"}, "policies[0].capture.tasks", "at least 1"),
    ({"support": ", capture: {sample: 1, every: 2}"}, "policies[0].capture.every", "unknown key"),
    ({"support": ", capture: {sample: 1, tasks: [other]}"}, "policies[0]", "never matches: ['other']"),
    ({"top": "capture: {redact: {patterns: {bad: '('}}}\n"}, "capture.redact.patterns", "not a valid regular"),
    ({"top": "capture: {redact: {patterns: {empty: 'x*'}}}\n"}, "capture.redact.patterns", "empty string"),
    ({"top": "capture: {redact: {builtin: [ssn]}}\n"}, "capture.redact.builtin[0]", "'email', 'phone' or 'key'"),
    ({"top": "capture: {sample: 1}\n"}, "capture.sample", "unknown key"),
])
def test_bad_values_fail_at_load(parts: dict[str, str], path: str, expected: str) -> None:
    found = problems(**parts)
    assert any(p.startswith(path) and expected in why for p, why in found), found
