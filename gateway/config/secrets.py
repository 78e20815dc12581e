"""Client keys as text: their format, their digest, and new ones.

A key is at least `MIN_KEY_CHARS` printable ASCII characters without spaces. The gateway keeps and compares
only its SHA-256 digest, so neither a log, the store nor the time a lookup takes says anything of the key.
"""

from __future__ import annotations

import hashlib
import re
import secrets

MIN_KEY_CHARS = 16
KEY_TEXT = re.compile(r"[\x21-\x7e]+")
"""Printable ASCII, no space."""
PREFIX = "sk-nr-"
"""The start of the keys the gateway makes: a secret scanner can tell them apart, and OpenAI's SDKs take them."""


def digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def short_id(key: str) -> str:
    """The id of an unnamed key of NANOROUTE_API_KEYS: a short hash, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def new_key() -> str:
    """A new client key: `sk-nr-` and 256 random bits in URL-safe base64."""
    return PREFIX + secrets.token_urlsafe(32)


def new_id() -> str:
    """A new key id: `key_` and 12 random hex digits."""
    return "key_" + secrets.token_hex(6)
