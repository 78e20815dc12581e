"""Client API keys: a Bearer key from `NANOROUTE_API_KEYS` is required when any is set.

An entry is `key` or `name=key`. Logs, metrics and policies never see a key, only its id: its name
when it has one, else the first 8 hex digits of its SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from gateway.errors import AuthenticationFailed, NotFound


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


class KeyCheck:
    def __init__(self, keys: Iterable[str], admin_key: str | None = None) -> None:
        # Keyed by the full Bearer header value, so the hot path does one dict lookup.
        self._ids: dict[bytes, str] = {}
        for entry in keys:
            name, sep, key = entry.partition("=")
            if not sep:
                name, key = key_id(entry), entry
            self._ids[f"Bearer {key}".encode()] = name
        self._admin = f"Bearer {admin_key}".encode() if admin_key else None

    @property
    def open(self) -> bool:
        return not self._ids

    def check(self, authorization: bytes | None) -> str | None:
        """The client's key id; None when the API is open. Raises AuthenticationFailed."""
        if not self._ids:
            return None
        if authorization is None:
            raise AuthenticationFailed("Missing API key: send 'Authorization: Bearer <key>'")
        found = self._ids.get(authorization)
        if found is None:
            raise AuthenticationFailed("Incorrect API key provided")
        return found

    def key_id_of(self, authorization: bytes) -> str | None:
        """The id of a client key, or None when it is not one of ours."""
        return self._ids.get(authorization)

    def check_admin(self, authorization: bytes | None) -> None:
        if self._admin is None:
            raise NotFound("Admin endpoints are disabled: set NANOROUTE_ADMIN_KEY to enable them")
        if authorization is None or not hmac.compare_digest(authorization, self._admin):
            raise AuthenticationFailed("Admin endpoints need 'Authorization: Bearer <NANOROUTE_ADMIN_KEY>'")
