"""Redaction (gateway/config/redact.py): the built-in patterns, configured ones, and JSON walking."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.redact import Redactor


@pytest.mark.parametrize("text", [
    "write to jane.doe+tickets@example.co.uk today",
    "ops@mail-01.example.com",
])
def test_email(text: str) -> None:
    out = Redactor().text(text)
    assert "@" not in out and "[REDACTED:email]" in out


@pytest.mark.parametrize("text", [
    "call +1 415 555 0132", "call (415) 555-0132", "call 415.555.0132", "call +44 20 7946 0958",
    "call 07700900123", "call +4915123456789",
])
def test_phone(text: str) -> None:
    assert Redactor().text(text) == "call [REDACTED:phone]"


@pytest.mark.parametrize("text", [
    "on 2024-10-21 at 12", "order 1234567", "version 1.2.3.4", "pi is 3.14159", "2024-10-21 12:30",
    "ids 12 34 56",
])
def test_what_is_not_a_phone_number_stays(text: str) -> None:
    assert Redactor().text(text) == text


@pytest.mark.parametrize("secret", [
    "sk-proj-abcdefghijklmnop1234567890", "sk-ant-api03-abcdefghijklmnopqrstuvwx",
    "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijklmnop", "AKIAIOSFODNN7EXAMPLE",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "xoxb-123456789012-abcdefghij",
])
def test_keys(secret: str) -> None:
    out = Redactor().text(f"my key is {secret} ok")
    assert out == "my key is [REDACTED:key] ok"


def test_configured_patterns_and_builtins_chosen() -> None:
    r = Redactor(builtin=["email"], patterns={"order": r"ORD-\d{6}"})
    assert r.text("ORD-123456 from a@b.io, call +1 415 555 0132") == (
        "[REDACTED:order] from [REDACTED:email], call +1 415 555 0132")
    assert Redactor(builtin=[]).text("a@b.io") == "a@b.io"


def test_value_walks_strings_of_a_json_value_only() -> None:
    parts = [{"type": "text", "text": "sk-abcdefghijklmnopqrst"}]
    messages = [{"role": "user", "content": "I am x@y.com"}, {"role": "user", "content": parts}]
    body: dict[str, Any] = {"model": "m", "messages": messages,
            "temperature": 0.5, "n": 1, "stream": True, "x@y.com": None}
    out = Redactor().value(body)
    assert out["messages"][0]["content"] == "I am [REDACTED:email]"
    assert out["messages"][1]["content"][0]["text"] == "[REDACTED:key]"
    assert (out["temperature"], out["n"], out["stream"], out["model"]) == (0.5, 1, True, "m")
    assert "x@y.com" in out  # keys are the client's field names, not content
    assert body["messages"][0]["content"] == "I am x@y.com"  # the original is untouched
