"""Redaction: replace e-mail addresses, phone numbers, keys and configured patterns before a capture is written.

A `Redactor` is built once per config load (it is part of the frozen routing table) and applied, in the
capture writer's thread, to every string of a record's request and answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# A run of digits with the separators phone numbers use; `_is_phone` then counts its digits.
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d ().-]{6,}\d(?![\w])")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_KEY = re.compile(
    r"\bsk-[A-Za-z0-9_-]{16,}"  # OpenAI, Anthropic (sk-ant-...) and the many that copied them
    r"|\b[Bb]earer\s+[A-Za-z0-9._~+/=-]{16,}"
    r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|\bAIza[0-9A-Za-z_-]{35}"  # Google API keys
    r"|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # JWTs
)


def _is_phone(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    return 9 <= digits <= 15 and not _ISO_DATE.search(text)


# name -> (pattern, a check on each match, or None)
BUILTIN: Mapping[str, tuple[re.Pattern[str], Callable[[str], bool] | None]] = {
    "email": (_EMAIL, None),
    "phone": (_PHONE, _is_phone),
    "key": (_KEY, None),
}


def _checked(check: Callable[[str], bool], replacement: str) -> Callable[[re.Match[str]], str]:
    def sub(match: re.Match[str]) -> str:
        return replacement if check(match.group()) else match.group()

    return sub


class Redactor:
    """Replaces every match of its patterns with `[REDACTED:<name>]`."""

    __slots__ = ("_rules",)

    def __init__(self, builtin: Iterable[str] = tuple(BUILTIN), patterns: Mapping[str, str] | None = None) -> None:
        rules: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = []
        # Keys first: a bearer token may hold an e-mail-like or digit-heavy run that another rule would split.
        for name in sorted(builtin, key=lambda n: n != "key"):
            pattern, check = BUILTIN[name]
            replacement = f"[REDACTED:{name}]"
            rules.append((pattern, replacement if check is None else _checked(check, replacement)))
        for name, regex in (patterns or {}).items():
            rules.append((re.compile(regex), f"[REDACTED:{name}]"))
        self._rules = tuple(rules)

    def text(self, value: str) -> str:
        for pattern, replacement in self._rules:
            value = pattern.sub(replacement, value)
        return value

    def value(self, obj: Any) -> Any:
        """A copy of a JSON value with every string redacted (keys of objects are left as they are)."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.value(v) for v in obj]
        return obj
