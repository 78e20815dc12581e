"""RedisCounters on a real redis-server: the keys and their lifetimes, a Redis that is down, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator

import pytest
import redis

from gateway.errors import StorageUnavailable
from gateway.governance.counters import Ask, LedgerEntry, Scope, ScopeUsage, Settlement, build_counters, period_end
from gateway.governance.redis import RedisCounters
from gateway.store.redis import RedisStore
from tests.fakes.redis import RedisServer
from tests.unit.governance.test_counters import T0

FAST_S = 3.0
"""A call to a Redis that is down returns within this, with the default timeouts (1 s connect, 2 s command)."""
KEY = Scope("key:a", rpm=10, budget_nusd=1000, period="day")


@contextlib.asynccontextmanager
async def opened(server: RedisServer) -> AsyncIterator[RedisCounters]:
    store = RedisStore(server.url)
    await store.start()
    try:
        counters = build_counters(store)
        assert isinstance(counters, RedisCounters)
        yield counters
    finally:
        await store.close()


def test_the_keys_and_their_lifetimes(redis_server: RedisServer) -> None:
    now = time.time()  # Redis expires keys on its own clock: the lifetimes are set from the caller's now
    minute = math.floor(now / 60)

    async def run() -> None:
        async with opened(redis_server) as counters:
            await counters.admit(Ask("r1", (KEY,), 5, 300, now, now + 600))
            await counters.admit(Ask("r2", (KEY,), 5, 300, now, now + 900))
            await counters.settle(Settlement("r1", (KEY,), 5, 7, 30, now,
                                             LedgerEntry("2026-03-02", "a", "-", "gpt", 10, 20, 30)))

    asyncio.run(run())
    day = time.strftime("d%Y-%m-%d", time.gmtime(now))
    with redis.Redis.from_url(redis_server.url) as client:
        assert sorted(k.decode() for k in client.keys("*")) == sorted(f"nanoroute:counters:{k}" for k in (
            f"rl:r:{minute}:key:a", f"rl:t:{minute}:key:a", "hold:key:a", "hold-reserve:key:a", "hold-sum:key:a",
            f"spent:{day}:key:a", "ledger:2026-03-02", "settled:r1"))
        root = "nanoroute:counters:"
        assert 599_000 < client.pttl(f"{root}settled:r1") <= 600_000
        window_left = (minute * 60 + 120 - now) * 1000
        for name in (f"rl:r:{minute}:key:a", f"rl:t:{minute}:key:a"):
            assert window_left - 2000 < client.pttl(root + name) <= window_left + 1
        assert client.get(f"{root}rl:t:{minute}:key:a") == b"12"  # 5 + 5 counted, then 2 more used
        for name in ("hold:key:a", "hold-reserve:key:a", "hold-sum:key:a"):  # the latest deadline and a minute
            assert 958_000 < client.pttl(root + name) <= 960_000
        assert client.zrange(f"{root}hold:key:a", 0, -1, withscores=True) == [(b"r2", now + 900)]
        assert client.hgetall(f"{root}hold-reserve:key:a") == {b"r2": b"300"}
        assert client.get(f"{root}hold-sum:key:a") == b"300"
        kept = (period_end("day", now) or 0) + 2 * 86400 - now  # two days past the day's end
        assert (kept - 2) * 1000 < client.pttl(f"{root}spent:{day}:key:a") <= kept * 1000 + 1
        assert client.pttl(f"{root}ledger:2026-03-02") == -1  # the ledger is kept
        assert client.hgetall(f"{root}ledger:2026-03-02") == {
            b"a\x1f-\x1fgpt\x1frequests": b"1", b"a\x1f-\x1fgpt\x1fprompt": b"10",
            b"a\x1f-\x1fgpt\x1fcompletion": b"20", b"a\x1f-\x1fgpt\x1fcost": b"30"}


def test_a_settlement_sent_again_counts_once(redis_server: RedisServer) -> None:
    """The governor sends a settlement again when its answer was lost: the first one may have run."""
    now = time.time()
    settlement = Settlement("r1", (KEY,), 5, 7, 30, now, LedgerEntry("2026-03-02", "a", "-", "gpt", 10, 20, 30))

    async def run() -> list[LedgerEntry]:
        async with opened(redis_server) as counters:
            await counters.admit(Ask("r1", (KEY,), 5, 300, now, now + 600))
            await counters.settle(settlement)
            await counters.settle(settlement)
            assert (await counters.usage([KEY], now))[0].spent_nusd == 30
            return await counters.spend("2026-03-02", "2026-03-02")

    assert [(e.requests, e.cost_nusd) for e in asyncio.run(run())] == [(1, 30)]


def test_a_redis_that_is_down_fails_fast_and_the_counters_work_once_it_is_back(redis_server: RedisServer) -> None:
    async def run() -> None:
        async with opened(redis_server) as counters:
            assert (await counters.admit(Ask("r1", (KEY,), 5, 300, T0, T0 + 600))).admitted
            redis_server.kill()
            calls = (counters.admit(Ask("r2", (KEY,), 5, 300, T0 + 1, T0 + 600)),
                     counters.settle(Settlement("r1", (KEY,), 5, 5, 10, T0 + 1, None)),
                     counters.usage([KEY], T0 + 1), counters.spend("2026-03-01", "2026-03-02"),
                     counters.record(LedgerEntry("2026-03-02", "a", "-", "gpt", 1, 1, 1)))
            for call in calls:
                started = time.monotonic()
                with pytest.raises(StorageUnavailable, match="try again later"):
                    await call
                assert time.monotonic() - started < FAST_S
            redis_server.start()  # appendfsync always: what was counted before the kill is there
            await asyncio.sleep(0.05)  # the event loop reads the close of the pooled connections
            assert await counters.usage([KEY], T0 + 2) == [ScopeUsage(1.0, 5.0, 1, 0, 300)]
            assert (await counters.admit(Ask("r2", (KEY,), 5, 300, T0 + 2, T0 + 600))).admitted

    asyncio.run(run())


def test_the_counts_survive_a_kill_and_the_scripts_are_loaded_again(redis_server: RedisServer) -> None:
    async def run() -> None:
        async with opened(redis_server) as counters:
            await counters.admit(Ask("r1", (KEY,), 5, 300, T0, T0 + 600))
            await counters.admit(Ask("r2", (KEY,), 5, 300, T0, T0 + 600))
            await counters.settle(Settlement("r1", (KEY,), 5, 5, 40, T0 + 1,
                                             LedgerEntry("2026-03-02", "a", "-", "gpt", 1, 2, 40)))
        redis_server.restart()  # kill -9: Redis forgets its scripts, keeps its append-only file
        async with opened(redis_server) as counters:
            assert await counters.usage([KEY], T0 + 2) == [ScopeUsage(2.0, 10.0, 1, 40, 300)]
            assert await counters.spend("2026-03-02", "2026-03-02") == [
                LedgerEntry("2026-03-02", "a", "-", "gpt", 1, 2, 40)]

    asyncio.run(run())


def test_a_ledger_name_may_not_hold_the_separator(redis_server: RedisServer) -> None:
    async def run() -> None:
        async with opened(redis_server) as counters:
            with pytest.raises(ValueError, match="may not hold"):
                await counters.record(LedgerEntry("2026-03-02", "a\x1fb", "-", "gpt", 1, 1, 1))
            assert await counters.spend("2026-03-02", "2026-03-02") == []

    asyncio.run(run())
