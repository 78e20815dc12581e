"""SqliteCounters: its tables in the store's file, made at the first call; restarts; failures; housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import StorageUnavailable
from gateway.governance.counters import Ask, LedgerEntry, Scope, ScopeUsage, Settlement, build_counters
from gateway.governance.sqlite import SqliteCounters
from gateway.store import SqliteStore
from tests.unit.governance.test_counters import MINUTE, T0

KEY = Scope("key:a", rpm=10, budget_nusd=1000, period="day")


@contextlib.asynccontextmanager
async def opened(path: Path) -> AsyncIterator[SqliteCounters]:
    store = SqliteStore(path)
    await store.start()
    try:
        counters = build_counters(store)
        assert isinstance(counters, SqliteCounters)
        yield counters
    finally:
        await store.close()


def tables(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def test_the_tables_are_made_at_the_first_call_and_the_counts_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    entry = LedgerEntry("2026-03-02", "a", "-", "gpt", 10, 20, 30)

    async def write() -> None:
        async with opened(path) as counters:
            assert tables(path) == ["kv"]
            assert (await counters.admit(Ask("r1", (KEY,), 5, 300, T0 + 1, T0 + 600))).admitted
            assert tables(path) == ["governance_hold", "governance_ledger", "governance_spent", "governance_window",
                                    "kv"]
            await counters.admit(Ask("r2", (KEY,), 5, 300, T0 + 2, T0 + 600))
            await counters.settle(Settlement("r1", (KEY,), 5, 7, 30, T0 + 3, entry))

    async def read() -> None:
        async with opened(path) as counters:  # another process, later
            assert await counters.usage([KEY], T0 + 4) == [ScopeUsage(2.0, 12.0, 1, 30, 300)]
            assert await counters.spend("2026-03-02", "2026-03-02") == [entry]

    asyncio.run(write())
    asyncio.run(read())


def test_old_minutes_and_ended_periods_are_deleted(tmp_path: Path) -> None:
    path = tmp_path / "state.db"

    async def run() -> None:
        async with opened(path) as counters:
            for minute in range(5):
                await counters.admit(Ask(f"r{minute}", (KEY,), 1, 0, T0 + 60 * minute, T0 + 600))
            assert rows(path, "SELECT minute FROM governance_window") == [(MINUTE + 3,), (MINUTE + 4,)]
            await counters.settle(Settlement("r0", (KEY,), 1, 1, 5, T0, None))
            later = T0 + 4 * 86400  # the day's spent is kept 2 days after it ends
            await counters.settle(Settlement("r1", (KEY,), 1, 1, 5, later, None))
            assert rows(path, "SELECT period, spent_nusd FROM governance_spent") == [("d2026-03-06", 5)]

    asyncio.run(run())


def test_a_failing_database_raises_storage_unavailable_and_counts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"

    async def run() -> None:
        async with opened(path) as counters:
            await counters.admit(Ask("r1", (KEY,), 1, 0, T0, T0 + 600))
            with contextlib.closing(sqlite3.connect(path)) as db:
                db.execute("DROP TABLE governance_spent")
            with pytest.raises(StorageUnavailable, match="failed to count requests") as raised:
                await counters.admit(Ask("r2", (KEY,), 1, 0, T0 + 1, T0 + 600))
            assert isinstance(raised.value.__cause__, sqlite3.Error)
            assert rows(path, "SELECT request_id FROM governance_hold") == [("r1",)]  # rolled back
            assert rows(path, "SELECT requests FROM governance_window") == [(1,)]

    asyncio.run(run())


def test_counters_for_a_store_of_another_kind_are_refused() -> None:
    with pytest.raises(TypeError, match="no counters for a store of type object"):
        build_counters(object())  # type: ignore[arg-type]
