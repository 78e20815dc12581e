"""The one interface every store implements: opaque bytes under (namespace, key), each with an optional lifetime."""

from __future__ import annotations

from typing import Protocol

from gateway.errors import PayloadTooLarge


class Store(Protocol):
    """State that must outlive a request and a restart, shared by the gateway's processes.

    A value lives under `(namespace, key)`. The namespace is a fixed name chosen by the feature that owns the
    values (`"responses"`); the key is a string that feature builds, and it carries whatever scopes the value
    (the client key that may read it back, say), since the store checks nothing beyond the pair. Values are
    bytes the caller encodes and decodes. A later write under the same pair replaces the earlier one, value
    and lifetime alike; nothing spans several keys.

    An entry whose lifetime has run out is never returned, whether or not it is physically gone yet.

    Errors: `StorageUnavailable` (503) when the store cannot be reached or fails, or is not open;
    `PayloadTooLarge` (413) when a value is over the store's size limit, which no retry will change.
    """

    async def start(self) -> None:
        """Open the store (create what is missing) and start its housekeeping; called once, before the rest."""

    async def close(self) -> None:
        """Wait for the writes already made, then release everything; any call after it raises
        `StorageUnavailable`. Calling it again does nothing."""

    async def get(self, namespace: str, key: str) -> bytes | None:
        """The value under `(namespace, key)`, or None when there is none or its lifetime has run out."""

    async def put(self, namespace: str, key: str, value: bytes, ttl_s: float | None) -> None:
        """Keep `value` under `(namespace, key)` for `ttl_s` seconds from now (a positive number), or until it is
        deleted when `ttl_s` is None. Durable once it returns: a restart keeps it."""

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove the value; True when there was one still alive."""

    async def items(self, namespace: str) -> list[tuple[str, bytes]]:
        """Every live (key, value) of the namespace, sorted by key. Meant for small namespaces read whole
        (client keys, teams, rollouts), not for one that grows with traffic."""

    async def swap(self, namespace: str, key: str, expected: bytes | None, value: bytes, ttl_s: float | None) -> bool:
        """Compare and set: write `value` (as `put` would) only if the live value is `expected` now (None: there
        is none), atomically across every process sharing the store. True when written; False when another
        writer came first, and the caller reads again and retries."""


def check_put(value: bytes, ttl_s: float | None, max_value_bytes: int) -> None:
    """What every store checks of a `put` before it writes: the value's size (`PayloadTooLarge`, which no
    retry changes) and the lifetime (a caller's bug: ValueError)."""
    if len(value) > max_value_bytes:
        raise PayloadTooLarge(f"The value to store is {len(value)} bytes, over the store's limit of "
                              f"{max_value_bytes} bytes")
    if ttl_s is not None and not ttl_s > 0:
        raise ValueError(f"ttl_s must be above 0 or None, not {ttl_s!r}")
