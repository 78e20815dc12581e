"""The gateway's store: state that must outlive a request and a restart.

Its first user is the OpenAI Responses API (`store: true`, then `previous_response_id` on the next turn:
a response kept for a while and read back by the same client). The next is governance: keys, budgets and
rate-limit counters that every process, and with Redis every replica, must see alike.

    base.py     `Store`: get, put (with a time to live), delete, items, swap (compare and set), start, close;
                bytes under (namespace, key)
    sqlite.py   `SqliteStore`: the embedded default, one SQLite file (`NANOROUTE_STORE_PATH`, by default
                `$NANOROUTE_DATA_DIR/state.db`) shared by the processes of one host
    redis.py    `RedisStore`: a Redis server (`NANOROUTE_REDIS_URL`) shared by every replica on every host

`build_store` chooses: Redis when `NANOROUTE_REDIS_URL` is set, else SQLite. Callers only ever see `Store`.
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
    """The store the settings describe: the Redis server at `settings.redis_url` when it is set, else the
    embedded SQLite file at `settings.store_file`. Not started: the caller's lifespan calls `start()` and, at
    shutdown, `close()`. A URL that is not Redis's raises ValueError (naming it without its password)."""
    if settings.redis_url is not None:
        # Imported here: redis-py takes ~60 ms to import, which a gateway on SQLite need not pay at each start.
        from gateway.store.redis import RedisStore

        return RedisStore(settings.redis_url.get_secret_value())
    return SqliteStore(settings.store_file)
