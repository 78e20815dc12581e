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

Besides these, keys come from the config (`digest`, `secret_file`) and the admin API; all are resolved into a
`Principal` (what the key may use, its team, limits and budget) by the registry (gateway/governance/registry.py).
`ClientKey` is an entry of `NANOROUTE_API_KEYS` as parsed. `Keys` is the admission check: the first stage a
request meets, before its body is read. Limits and budgets are checked later, once the request is routed
(`limits.py`).
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.config.secrets import KEY_TEXT, MIN_KEY_CHARS, digest, short_id
from gateway.errors import AuthenticationFailed, ConfigError, NotFound, StorageUnavailable
from gateway.governance.principal import Principal
from gateway.governance.registry import Registry
from gateway.pipeline.context import RequestContext

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
_KEY = KEY_TEXT
_SCHEME = b"bearer "


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A client key as the gateway knows it, without its secret."""

    id: str
    """Its name, or the first 8 hex digits of its SHA-256 when it has none."""
    named: bool


key_id = short_id


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
    """Who is calling: a client key of the registry (any source), or the admin key."""

    def __init__(self, registry: Registry, admin_key: str | None = None) -> None:
        check_admin_key(admin_key)
        self.registry = registry
        self._admin = digest(admin_key.encode()) if admin_key else None

    @property
    def open(self) -> bool:
        return self.registry.open

    @property
    def ids(self) -> frozenset[str]:
        return self.registry.ids

    def check(self, key: bytes | None) -> Principal | None:
        """The caller's key (from `presented()`); None when the API is open. Raises AuthenticationFailed for
        a missing, unknown or expired key."""
        registry = self.registry
        if registry.open:
            return None
        if key is None:
            raise AuthenticationFailed("Missing API key: send 'Authorization: Bearer <key>'")
        found = registry.lookup(digest(key))
        if found is None:
            if not registry.complete:  # it may be one the admin API made, in a store that cannot be read yet
                raise StorageUnavailable("API keys cannot be checked now; try again later")
            raise AuthenticationFailed("Incorrect API key provided")
        if found.expires_at is not None and time.time() >= found.expires_at:
            raise AuthenticationFailed("This API key has expired")
        return found

    def identify(self, key: bytes | None) -> Principal | None:
        """The client key, or None when it is not one of ours (never raises)."""
        return self.registry.lookup(digest(key)) if key else None

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

    async def admit(self, ctx: RequestContext) -> None:
        h = ctx.headers
        key = self.keys.check(presented(h.authorization, h.x_api_key, h.api_key))
        if key is not None:
            ctx.principal = key
            ctx.record.key_id = key.id
