"""`items` and `swap` (compare and set), the same tests against both stores: SQLite in a file of the test's own,
Redis on a real redis-server. Each test opens stores through `open_store`, which makes a new store on the same
file or server every time it is called: two of them are two processes (or replicas) sharing the state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import PayloadTooLarge
from gateway.store import SqliteStore, Store
from tests.conftest import StartRedis

OpenStore = Callable[..., contextlib.AbstractAsyncContextManager[Store]]


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    if request.param == "sqlite":
        def make(**options: Any) -> Store:
            return SqliteStore(tmp_path / "state.db", **options)
    else:
        from gateway.store.redis import RedisStore

        start_redis: StartRedis = request.getfixturevalue("start_redis")
        server = start_redis()

        def make(**options: Any) -> Store:
            return RedisStore(server.url, **options)

    @contextlib.asynccontextmanager
    async def opened(**options: Any) -> AsyncIterator[Store]:
        store = make(**options)
        await store.start()
        try:
            yield store
        finally:
            await store.close()

    return opened


def test_items_are_the_live_values_of_one_namespace_sorted_by_key(open_store: OpenStore) -> None:
    async def run() -> None:
        async with open_store() as store:
            assert await store.items("keys") == []
            for key in ("b", "a:2", "a", "é", "z", "A"):
                await store.put("keys", key, key.encode() + b"\x00\xff", None)
            await store.put("keysx", "c", b"another namespace that starts alike", None)
            await store.put("key", "s:d", b"and one that ends where the other's prefix would", None)
            await store.put("keys", "short", b"v", 0.05)
            await store.put("keys", "gone", b"v", None)
            await store.delete("keys", "gone")
            assert [key for key, _ in await store.items("keys")] == ["A", "a", "a:2", "b", "short", "z", "é"]
            await asyncio.sleep(0.1)
            found = await store.items("keys")
            assert found == [(k, k.encode() + b"\x00\xff") for k in ("A", "a", "a:2", "b", "z", "é")]
            assert await store.items("keysx") == [("c", b"another namespace that starts alike")]

    asyncio.run(run())


def test_items_reads_more_than_one_scan_page(open_store: OpenStore) -> None:
    async def run() -> None:
        async with open_store() as store:
            for i in range(2500):  # one after another: 2,500 at once would open the whole pool at once
                await store.put("keys", f"k{i:04d}", str(i).encode(), None)
            await store.put("other", "k", b"v", None)
            found = await store.items("keys")
            assert found == [(f"k{i:04d}", str(i).encode()) for i in range(2500)]

    asyncio.run(run())


def test_swap_writes_only_over_the_value_expected(open_store: OpenStore) -> None:
    async def run() -> None:
        async with open_store() as store:
            assert await store.swap("keys", "k", None, b"one", None) is True  # none expected, none there
            assert await store.swap("keys", "k", None, b"two", None) is False  # another writer came first
            assert await store.get("keys", "k") == b"one"
            assert await store.swap("keys", "k", b"two", b"three", None) is False
            assert await store.swap("keys", "k", b"one", b"\x00\xfftwo", 60.0) is True
            assert await store.get("keys", "k") == b"\x00\xfftwo"
            assert await store.swap("keys", "k", b"\x00\xfftwo", b"", None) is True  # an empty value is one
            assert await store.swap("keys", "k", None, b"x", None) is False
            assert await store.swap("keys", "k", b"", b"four", None) is True
            assert await store.items("keys") == [("k", b"four")]
            assert await store.swap("other", "k", None, b"ns", None) is True  # namespaces are apart
            assert await store.get("keys", "k") == b"four"

    asyncio.run(run())


def test_swap_sees_an_expired_value_as_none_and_sets_the_lifetime(open_store: OpenStore) -> None:
    async def run() -> None:
        async with open_store() as store:
            await store.put("keys", "k", b"old", 0.05)
            await asyncio.sleep(0.1)
            assert await store.swap("keys", "k", b"old", b"stale", None) is False  # not live any more
            assert await store.swap("keys", "k", None, b"new", 0.05) is True
            assert await store.get("keys", "k") == b"new"
            await asyncio.sleep(0.1)
            assert await store.get("keys", "k") is None  # the swap's lifetime ran out
            assert await store.swap("keys", "k", None, b"kept", 0.05) is True
            assert await store.swap("keys", "k", b"kept", b"kept", None) is True  # a new write replaces it
            await asyncio.sleep(0.1)
            assert await store.get("keys", "k") == b"kept"

    asyncio.run(run())


def test_swap_checks_the_value_and_lifetime_like_put(open_store: OpenStore) -> None:
    async def run() -> None:
        async with open_store(max_value_bytes=8) as store:
            with pytest.raises(PayloadTooLarge, match="9 bytes"):
                await store.swap("keys", "k", None, b"x" * 9, None)
            for ttl in (0.0, -1.0, float("nan")):
                with pytest.raises(ValueError, match="ttl_s"):
                    await store.swap("keys", "k", None, b"v", ttl)
            assert await store.get("keys", "k") is None

    asyncio.run(run())


def test_concurrent_swaps_from_two_stores_lose_no_update(open_store: OpenStore) -> None:
    """100 increments of one counter, read then swapped and tried again on a conflict, half through each of two
    stores on the same file or server: every one lands, which a lost update would break."""

    async def increment(store: Store) -> int:
        conflicts = 0
        while True:
            current = await store.get("keys", "n")
            value = str(int(current or b"0") + 1).encode()
            if await store.swap("keys", "n", current, value, None):
                return conflicts
            conflicts += 1

    async def run() -> None:
        async with open_store() as a, open_store() as b:
            conflicts = await asyncio.gather(*(increment(a if i % 2 else b) for i in range(100)))
            assert await a.get("keys", "n") == b"100"
            assert sum(conflicts) > 0  # the test did race

    asyncio.run(run())
