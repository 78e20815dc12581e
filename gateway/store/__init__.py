"""The gateway's store: state that must outlive a request and a restart.

Its first user is the OpenAI Responses API (`store: true`, then `previous_response_id` on the next turn:
a response kept for a while and read back by the same client). The next is governance: keys, budgets and
rate-limit counters that every process, and later every replica, must see alike.

    base.py     `Store`: get, put (with a time to live), delete, start, close; bytes under (namespace, key)
    sqlite.py   `SqliteStore`: the embedded default, one SQLite file (`NANOROUTE_STORE_PATH`, by default
                `$NANOROUTE_DATA_DIR/state.db`) shared by the processes of one host

A store shared by replicas on several hosts (Redis) will be a `redis.py` module here implementing the same
`Store`, chosen in `build_store` by a setting; callers only ever see `Store`, so nothing else changes.
Failures are raised as `gateway.errors.StorageUnavailable`; a value over the size limit as `PayloadTooLarge`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.store.base import Store
from gateway.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["SqliteStore", "Store", "build_store"]


def build_store(settings: Settings) -> Store:
    """The store the settings describe: for now always the embedded SQLite one at `settings.store_file`.
    Not started: the caller's lifespan calls `start()` and, at shutdown, `close()`."""
    return SqliteStore(settings.store_file)
