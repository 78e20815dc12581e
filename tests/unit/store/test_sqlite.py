"""SqliteStore: values, namespaces, lifetimes, restarts, the sweep, limits, file modes, concurrency, failures."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from gateway.errors import PayloadTooLarge, StorageUnavailable
from gateway.settings import Settings
from gateway.store import SqliteStore, Store, build_store


class Clock:
    """Unix time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def with_store(store: SqliteStore, body: Callable[[SqliteStore], Awaitable[None]]) -> None:
    async def run() -> None:
        await store.start()
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(run())


@contextlib.contextmanager
def other_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """The file as another process sees it."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        yield db


class Ticks:
    """Counts the event loop's turns every 10 ms, while it runs: how long the loop went on serving."""

    def __init__(self) -> None:
        self.count = 0
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.count += 1

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def rows(path: Path) -> list[tuple[str, str]]:
    with other_connection(path) as db:
        return sorted(db.execute("SELECT namespace, key FROM kv").fetchall())


def test_put_get_delete(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        assert await store.get("responses", "a") is None
        await store.put("responses", "a", b"one", None)
        assert await store.get("responses", "a") == b"one"
        await store.put("responses", "a", b"two", None)  # replaces
        assert await store.get("responses", "a") == b"two"
        assert await store.delete("responses", "a") is True
        assert await store.get("responses", "a") is None
        assert await store.delete("responses", "a") is False

    with_store(SqliteStore(tmp_path / "state.db"), body)


def test_namespaces_do_not_see_each_other(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        await store.put("responses", "k", b"response", None)
        await store.put("budgets", "k", b"budget", None)
        assert await store.get("responses", "k") == b"response"
        assert await store.get("budgets", "k") == b"budget"
        assert await store.delete("budgets", "k") is True
        assert await store.get("responses", "k") == b"response"
        assert await store.get("keys", "k") is None

    with_store(SqliteStore(tmp_path / "state.db"), body)


def test_an_expired_value_is_never_returned_and_is_deleted_when_read(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "state.db"

    async def body(store: SqliteStore) -> None:
        await store.put("responses", "short", b"v", 10.0)
        await store.put("responses", "gone", b"v", 10.0)
        await store.put("responses", "kept", b"v", 10.0)
        await store.put("responses", "kept", b"v", None)  # a new write replaces the lifetime too
        clock.now += 9.9
        assert await store.get("responses", "short") == b"v"
        clock.now += 0.1
        assert await store.get("responses", "short") is None
        assert await store.delete("responses", "gone") is False  # expired: there was nothing alive to delete
        assert await store.get("responses", "kept") == b"v"
        assert rows(path) == [("responses", "kept")]  # the read and the delete removed the expired rows

    with_store(SqliteStore(path, clock=clock), body)


def test_values_and_lifetimes_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "data" / "state.db"

    async def write(store: SqliteStore) -> None:
        await store.put("responses", "forever", b"\x00\xffbinary", None)
        await store.put("responses", "for-a-minute", b"soon gone", 60.0)

    async def read(store: SqliteStore) -> None:
        assert await store.get("responses", "forever") == b"\x00\xffbinary"
        assert await store.get("responses", "for-a-minute") == b"soon gone"
        clock.now += 60
        assert await store.get("responses", "for-a-minute") is None

    with_store(SqliteStore(path, clock=clock), write)
    with_store(SqliteStore(path, clock=clock), read)


def test_the_sweep_deletes_expired_rows_in_batches(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "state.db"

    async def body(store: SqliteStore) -> None:
        for i in range(5):
            await store.put("responses", f"old{i}", b"v", 1.0)
        await store.put("responses", "young", b"v", 100.0)
        await store.put("responses", "forever", b"v", None)
        assert await store.sweep() == 0  # nothing has expired yet
        clock.now += 1
        assert await store.sweep() == 5  # three batches of at most two
        assert rows(path) == [("responses", "forever"), ("responses", "young")]

    with_store(SqliteStore(path, clock=clock, sweep_batch=2), body)


def test_the_sweep_runs_by_itself(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "state.db"

    async def body(store: SqliteStore) -> None:
        await store.put("responses", "old", b"v", 1.0)
        await store.put("responses", "forever", b"v", None)
        clock.now += 1
        for _ in range(500):  # no read touches "old": only the sweep can delete it
            if rows(path) == [("responses", "forever")]:
                return
            await asyncio.sleep(0.01)
        pytest.fail(f"the sweep did not run: {rows(path)}")

    with_store(SqliteStore(path, clock=clock, sweep_interval_s=0.02), body)


def test_a_value_over_the_limit_is_refused(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        await store.put("responses", "fits", b"x" * 1024, None)
        with pytest.raises(PayloadTooLarge, match="1025 bytes, over the store's limit of 1024"):
            await store.put("responses", "big", b"x" * 1025, None)
        assert await store.get("responses", "big") is None
        assert await store.get("responses", "fits") == b"x" * 1024

    with_store(SqliteStore(tmp_path / "state.db", max_value_bytes=1024), body)


def test_a_lifetime_must_be_positive(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        for ttl in (0.0, -1.0, float("nan")):
            with pytest.raises(ValueError, match="ttl_s"):
                await store.put("responses", "k", b"v", ttl)

    with_store(SqliteStore(tmp_path / "state.db"), body)


def test_the_file_and_its_folders_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "data" / "state.db"
    old_umask = os.umask(0)  # the store sets the modes itself, whatever the umask
    try:
        async def body(store: SqliteStore) -> None:
            await store.put("responses", "k", b"a prompt", None)
            for file in (path, path.with_name("state.db-wal")):
                assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
            for folder in (path.parent, path.parent.parent):
                assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder

        with_store(SqliteStore(path), body)
    finally:
        os.umask(old_umask)
    path.chmod(0o644)  # a file that was opened up is made private again on start
    with_store(SqliteStore(path), lambda store: asyncio.sleep(0))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_concurrent_puts_all_land(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        await asyncio.gather(*(store.put("responses", f"k{i}", f"v{i}".encode(), 60.0) for i in range(200)))
        values = await asyncio.gather(*(store.get("responses", f"k{i}") for i in range(200)))
        assert values == [f"v{i}".encode() for i in range(200)]

    with_store(SqliteStore(tmp_path / "state.db"), body)


def test_the_event_loop_runs_while_a_write_waits(tmp_path: Path) -> None:
    path = tmp_path / "state.db"

    async def body(store: SqliteStore) -> None:
        ticks = Ticks()
        with other_connection(path) as other:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock: the store's put must wait
            put = asyncio.create_task(store.put("responses", "k", b"new", None))
            get = asyncio.create_task(store.get("responses", "k"))  # queued behind the put on the worker
            await asyncio.sleep(0.3)  # if the put blocked the loop, this would not return before it failed
            assert not put.done() and not get.done()
            assert ticks.count >= 10
            other.execute("COMMIT")
        await put
        assert await get == b"new"  # calls run in the order they were made: the read sees the write before it
        await ticks.stop()

    with_store(SqliteStore(path), body)


def test_close_waits_for_pending_writes_and_then_refuses_calls(tmp_path: Path) -> None:
    path = tmp_path / "state.db"

    async def run() -> None:
        store = SqliteStore(path)
        await store.start()
        puts = [asyncio.create_task(store.put("responses", f"k{i}", b"v" * 100_000, None)) for i in range(50)]
        await asyncio.sleep(0)  # each put has handed its write to the worker
        await store.close()
        assert all(p.done() and p.exception() is None for p in puts)
        with pytest.raises(StorageUnavailable, match="not open"):
            await store.get("responses", "k0")
        await store.close()  # twice is fine

    asyncio.run(run())
    assert len(rows(path)) == 50


def test_a_failing_database_raises_storage_unavailable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.db"

    async def body(store: SqliteStore) -> None:
        with other_connection(path) as other:
            other.execute("DROP TABLE kv")
        for _ in range(2):
            with pytest.raises(StorageUnavailable, match="failed to read") as raised:
                await store.get("responses", "k")
            assert raised.value.status == 503
            assert isinstance(raised.value.__cause__, sqlite3.Error)

    with caplog.at_level(logging.ERROR, logger="nanoroute"):
        with_store(SqliteStore(path), body)
    logged = [r.getMessage() for r in caplog.records if "no such table" in r.getMessage()]
    assert len(logged) == 1  # once a minute, not once a call


def test_a_file_that_is_not_a_database_fails_start(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"not a database, but long enough to look like a header" * 100)
    store = SqliteStore(path)

    async def run() -> None:
        with pytest.raises(StorageUnavailable, match=str(path)):
            await store.start()
        await store.close()

    asyncio.run(run())


def test_build_store_puts_the_file_in_the_data_dir(tmp_path: Path) -> None:
    store: Store = build_store(Settings(data_dir=tmp_path))
    assert isinstance(store, SqliteStore) and store.path == tmp_path / "state.db"
    store = build_store(Settings(data_dir=tmp_path, store_path=tmp_path / "elsewhere.db"))
    assert isinstance(store, SqliteStore) and store.path == tmp_path / "elsewhere.db"


def test_a_transaction_commits_what_its_job_did_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"

    def create(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS n (v INTEGER)")
        db.execute("INSERT INTO n VALUES (1)")

    def half_then_fail(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO n VALUES (2)")
        raise LookupError("the job's own error")

    def total(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT SUM(v) FROM n").fetchone()[0])

    async def body(store: SqliteStore) -> None:
        await store.transaction("create", create)
        with pytest.raises(LookupError, match="the job's own error"):  # raised as it is, and rolled back
            await store.transaction("add", half_then_fail)
        assert await store.transaction("count", total) == 1
        with pytest.raises(StorageUnavailable, match="failed to count") as raised:
            await store.transaction("count", lambda db: db.execute("SELECT * FROM missing"))
        assert isinstance(raised.value.__cause__, sqlite3.Error)
        await store.put("responses", "k", b"v", None)  # the store goes on: no transaction was left open
        assert await store.transaction("count", total) == 1

    with_store(SqliteStore(path), body)
    with other_connection(path) as db:
        assert db.execute("SELECT v FROM n").fetchall() == [(1,)]


def test_a_transaction_holds_the_write_lock_from_its_first_read(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: a read-then-write waits for another process's write and reads what it committed. (A plain
    BEGIN would read the old value, then fail to write over a snapshot that is no longer the latest.)"""
    path = tmp_path / "state.db"

    def increment(db: sqlite3.Connection) -> int:
        (v,) = db.execute("SELECT v FROM n").fetchone()
        db.execute("UPDATE n SET v = ?", (v + 1,))
        return int(v) + 1

    async def body(store: SqliteStore) -> None:
        def create(db: sqlite3.Connection) -> None:
            db.execute("CREATE TABLE n (v INTEGER)")
            db.execute("INSERT INTO n VALUES (0)")

        await store.transaction("create", create)
        with other_connection(path) as other:
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE n SET v = 10")
            added = asyncio.create_task(store.transaction("add", increment))
            await asyncio.sleep(0.2)
            assert not added.done()
            other.execute("COMMIT")
        assert await added == 11

    with_store(SqliteStore(path), body)


def test_a_quick_transaction_runs_on_the_loop_and_waits_for_a_locked_file_off_it(tmp_path: Path) -> None:
    """Free, the file takes the job on the event loop's thread; locked by another process, the job goes to the
    worker thread, which waits for the lock while the loop goes on serving."""
    import threading

    path = tmp_path / "state.db"

    def job(db: sqlite3.Connection) -> str:
        db.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER)")
        db.execute("INSERT INTO t VALUES (1)")
        return threading.current_thread().name

    async def body(store: SqliteStore) -> None:
        assert await store.quick_transaction("write", job) == threading.current_thread().name
        with other_connection(path) as other:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            ticks = Ticks()
            asyncio.get_running_loop().call_later(0.3, other.execute, "COMMIT")
            thread = await store.quick_transaction("write", job)
            await ticks.stop()
            assert thread.startswith("nanoroute-store")
            assert ticks.count >= 10  # the loop was not held while the lock was waited for
            assert other.execute("SELECT COUNT(*) FROM t").fetchall() == [(2,)]

    with_store(SqliteStore(path), body)
