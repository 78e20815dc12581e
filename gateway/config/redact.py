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
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)"  # PEM, to its end
    r"|\bsk-[A-Za-z0-9_-]{16,}"  # OpenAI, Anthropic (sk-ant-...) and the many that copied them
    r"|\b[Bb]earer\s+[A-Za-z0-9._~+/=-]{16,}"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids (long-term and temporary)
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|\bAIza[0-9A-Za-z_-]{35}"  # Google API keys
    r"|\bya29\.[0-9A-Za-z_-]{20,}"  # Google OAuth access tokens
    r"|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # JWTs
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"  # user:password@ in a URL
)
# A secret written as `name=value` or `name: value` (a password in a connection string or a config line, an
# AWS secret access key): the name stays, the value goes.
_SECRET_NAMES = (r"(?:[A-Za-z0-9]+[_-])*(?:password|passwd|passphrase|pwd|secret|api[_-]?key|access[_-]?key"
                 r"|secret[_-]?access[_-]?key|private[_-]?key|token)")
_ASSIGNED = re.compile(
    rf"(?P<name>\b{_SECRET_NAMES}[\"']?)(?P<sep>\s*[:=]\s*)(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;&]+)",
    re.IGNORECASE)
SECRET_FIELD = re.compile(rf"{_SECRET_NAMES}", re.IGNORECASE)
"""A JSON field whose name says it holds a secret (a tool call's `password` argument): its string value goes."""


def _is_phone(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    return 9 <= digits <= 15 and not _ISO_DATE.search(text)


def _assigned(match: re.Match[str]) -> str:
    return f"{match.group('name')}{match.group('sep')}[REDACTED:key]"


# name -> [(pattern, a check on each match or None, a replacement function or None)]
BUILTIN: Mapping[str, tuple[tuple[re.Pattern[str], Callable[[str], bool] | None,
                                  Callable[[re.Match[str]], str] | None], ...]] = {
    "email": ((_EMAIL, None, None),),
    "phone": ((_PHONE, _is_phone, None),),
    "key": ((_KEY, None, None), (_ASSIGNED, None, _assigned)),
}


def _checked(check: Callable[[str], bool], replacement: str) -> Callable[[re.Match[str]], str]:
    def sub(match: re.Match[str]) -> str:
        return replacement if check(match.group()) else match.group()

    return sub


class Redactor:
    """Replaces every match of its patterns with `[REDACTED:<name>]`."""

    __slots__ = ("_fields", "_rules")

    def __init__(self, builtin: Iterable[str] = tuple(BUILTIN), patterns: Mapping[str, str] | None = None) -> None:
        rules: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = []
        # Keys first: a bearer token may hold an e-mail-like or digit-heavy run that another rule would split.
        for name in sorted(builtin, key=lambda n: n != "key"):
            replacement = f"[REDACTED:{name}]"
            for pattern, check, sub in BUILTIN[name]:
                rules.append((pattern, sub or (replacement if check is None else _checked(check, replacement))))
        for name, regex in (patterns or {}).items():
            rules.append((re.compile(regex), f"[REDACTED:{name}]"))
        self._rules = tuple(rules)
        self._fields = "key" in builtin

    def text(self, value: str) -> str:
        for pattern, replacement in self._rules:
            value = pattern.sub(replacement, value)
        return value

    def value(self, obj: Any) -> Any:
        """A copy of a JSON value with every string redacted (keys of objects are left as they are); with
        the `key` patterns, a string field named like a secret (`password`, `api_key`...) is replaced whole."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {k: "[REDACTED:key]" if self._fields and isinstance(v, str) and SECRET_FIELD.fullmatch(k)
                    else self.value(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.value(v) for v in obj]
        return obj
