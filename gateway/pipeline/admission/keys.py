"""Client keys and the admin key: who is calling.

`NANOROUTE_API_KEYS` holds comma-separated entries, each `KEY` or `NAME=KEY`. The split is on the first
`=` and a name may not hold one, so `NAME=KEY` carries any key, `=` padding of base64 keys included; a
bare `KEY` must hold no `=` (write it with a name). A key is at least `MIN_KEY_CHARS` printable
characters without spaces or commas; an empty, short or malformed entry stops the gateway at start with
a message that names the entry by its position, never by its text.

A client presents its key as `Authorization: Bearer KEY` (the scheme in any case), or as `x-api-key: KEY`
(Anthropic's SDKs) or `api-key: KEY` (Azure's), looked for in that order. Keys are looked up by their
SHA-256 digest, so the time a lookup takes says nothing about how close a wrong key came. Logs,
metrics, policies and captures see only a key's id: its name, or the first 8 hex digits of its SHA-256
for an unnamed key.

What a key may use (models, policies) is the config's `keys:` section, resolved into the routing table
(`config.table.KeyAccess`), so it changes with a reload; `ClientKey` is who the caller is. `Keys` is the
admission check: the first stage a request meets, before its body is read.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.errors import AuthenticationFailed, ConfigError, NotFound
from gateway.pipeline.context import RequestContext

MIN_KEY_CHARS = 16
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
_KEY = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space
_SCHEME = b"bearer "


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A client key as the gateway knows it, without its secret."""

    id: str
    """Its name, or the first 8 hex digits of its SHA-256 when it has none."""
    named: bool


def digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def key_id(key: str) -> str:
    """The id of an unnamed key: a short hash, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def presented(authorization: bytes | None, x_api_key: bytes | None, api_key: bytes | None) -> bytes | None:
    """The key a client sent, from the first of the three headers it used; None when it sent none.
    An Authorization header with another scheme than Bearer presents an empty key (refused)."""
    if authorization is not None:
        if authorization[:7].lower() == _SCHEME:
            return authorization[7:].strip()
        return b""
    if x_api_key is not None:
        return x_api_key.strip()
    if api_key is not None:
        return api_key.strip()
    return None


def parse_entries(entries: Iterable[str], source: str = "NANOROUTE_API_KEYS") -> list[tuple[ClientKey, str]]:
    """Each entry's key and secret; raises ConfigError naming each bad entry by its position."""
    problems: list[tuple[str, str]] = []
    keys: list[tuple[ClientKey, str]] = []
    seen_ids: set[str] = set()
    seen_keys: set[str] = set()
    for i, entry in enumerate(entries, 1):
        where = f"entry {i}"
        name, sep, secret = entry.partition("=")
        if sep and not NAME.fullmatch(name):
            problems.append((where, "is NAME=KEY with a name that is not 1-64 letters, digits, '.', '_', ':', '@' "
                                    "or '-' (a key that holds '=' must be written with a name: NAME=KEY)"))
            continue
        if not sep:
            name, secret = "", entry
        if not _KEY.fullmatch(secret):
            problems.append((where, "has an empty key, or one with spaces or characters outside printable ASCII"))
            continue
        if len(secret) < MIN_KEY_CHARS:
            problems.append((where, f"has a key of {len(secret)} characters; keys are at least {MIN_KEY_CHARS}"))
            continue
        key = ClientKey(name, True) if name else ClientKey(key_id(secret), False)
        if key.id in seen_ids or secret in seen_keys:
            problems.append((where, "repeats the name or the key of an earlier entry"))
            continue
        seen_ids.add(key.id)
        seen_keys.add(secret)
        keys.append((key, secret))
    if problems:
        raise ConfigError(source, problems)
    return keys


def check_admin_key(secret: str | None) -> None:
    """Raises ConfigError for an admin key that is set but too short or malformed."""
    if secret is None:
        return
    if not _KEY.fullmatch(secret) or len(secret) < MIN_KEY_CHARS:
        raise ConfigError("NANOROUTE_ADMIN_KEY", [("", f"must be at least {MIN_KEY_CHARS} printable characters "
                                                       "without spaces")])


class KeyCheck:
    """The client keys and the admin key of one gateway process."""

    def __init__(self, keys: Iterable[tuple[ClientKey, str]], admin_key: str | None = None) -> None:
        self._keys: dict[bytes, ClientKey] = {digest(secret.encode()): key for key, secret in keys}
        self._admin = digest(admin_key.encode()) if admin_key else None

    @classmethod
    def from_settings(cls, entries: Iterable[str], admin_key: str | None) -> KeyCheck:
        """Parse and check `NANOROUTE_API_KEYS` and `NANOROUTE_ADMIN_KEY`; raises ConfigError."""
        check_admin_key(admin_key)
        return cls(parse_entries(entries), admin_key)

    @property
    def open(self) -> bool:
        return not self._keys

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(k.id for k in self._keys.values())

    def check(self, key: bytes | None) -> ClientKey | None:
        """The caller's key (from `presented()`); None when the API is open. Raises AuthenticationFailed."""
        if not self._keys:
            return None
        if key is None:
            raise AuthenticationFailed("Missing API key: send 'Authorization: Bearer <key>'")
        found = self._keys.get(digest(key))
        if found is None:
            raise AuthenticationFailed("Incorrect API key provided")
        return found

    def identify(self, key: bytes | None) -> ClientKey | None:
        """The client key, or None when it is not one of ours (never raises)."""
        return self._keys.get(digest(key)) if key else None

    def check_admin(self, key: bytes | None) -> None:
        if self._admin is None:
            raise NotFound("Admin endpoints are disabled: set NANOROUTE_ADMIN_KEY to enable them")
        if key is None or not hmac.compare_digest(digest(key), self._admin):
            raise AuthenticationFailed("Admin endpoints need 'Authorization: Bearer <NANOROUTE_ADMIN_KEY>'")


class Keys:
    """The admission check for client keys: a request without a valid one goes no further (401)."""

    before_body = True

    def __init__(self, keys: KeyCheck) -> None:
        self.keys = keys

    def admit(self, ctx: RequestContext) -> None:
        h = ctx.headers
        key = self.keys.check(presented(h.authorization, h.x_api_key, h.api_key))
        ctx.record.key_id = key.id if key is not None else None
