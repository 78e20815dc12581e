"""`SqliteStore`: the embedded store, one SQLite file that the gateway's processes on one host share.

Every SQLite call runs on one worker thread of the store's own: the event loop never waits on the disk, the
connection never changes threads (SQLite's own check stays on), and calls run in the order they were made, so
a read sees every write made before it. The one exception is `quick_transaction`, for the short transactions
on the request path (admitting requests), which runs on the loop's thread while the file is free, never
waiting for a lock nor syncing the disk. The file is in WAL mode with `synchronous=NORMAL`: readers never wait
for the writer, and a commit survives the process dying (a power cut may lose the last commits, never corrupt
the file). Several workers open the same file; a writer that finds it locked waits up to `BUSY_TIMEOUT_S`.

The table::

    kv(namespace TEXT, key TEXT, expires_at REAL, value BLOB, PRIMARY KEY (namespace, key))

An ordinary rowid table, not WITHOUT ROWID: values run from bytes to megabytes, and a WITHOUT ROWID table keeps
whole rows in its interior pages, which SQLite's documentation advises against for rows past ~1/20 of a page
(with 50 KB values: 6x slower lookups, 1.7x slower inserts). `expires_at` (Unix time, NULL: never) comes before
the value so that checking it never reads the value's overflow pages. Expired rows are deleted when a read
finds one, and by a sweep every `sweep_interval_s`, `sweep_batch` rows at a time so that no read or write
waits behind more than one batch. The file and the folders made for it are readable by this user alone: the
values hold prompts and answers.

`swap` and `transaction` (which the governance counters use for tables of their own in the same file) run as
one `BEGIN IMMEDIATE` transaction: it takes the file's write lock before its first read, so a read-then-write
by another process cannot come between, and another process's transaction makes it wait (`BUSY_TIMEOUT_S`)
rather than fail halfway.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gateway.errors import StorageUnavailable
from gateway.files import private_dir
from gateway.store.base import check_put
from gateway.tasks import Background

log = logging.getLogger("nanoroute")

T = TypeVar("T")

BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another process's transaction on the same file before it fails."""
LOG_EVERY_S = 60.0
"""A store that keeps failing is logged once a minute, not once a request."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    expires_at REAL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires_at) WHERE expires_at IS NOT NULL;
"""


class SqliteStore:
    """The embedded `Store` (gateway/store/base.py) in the SQLite file at `path`.

    `max_value_bytes`: larger values are refused with `PayloadTooLarge`. `clock`: the time in Unix seconds
    (wall-clock, since expiry times outlive the process). `sweep_interval_s`, `sweep_batch`: how often expired
    rows are deleted, and how many at a time.
    """

    def __init__(self, path: Path, *, max_value_bytes: int = 16 << 20, clock: Callable[[], float] = time.time,
                 sweep_interval_s: float = 300.0, sweep_batch: int = 1000) -> None:
        if max_value_bytes < 1 or sweep_batch < 1 or not sweep_interval_s > 0:
            raise ValueError("max_value_bytes and sweep_batch must be positive, sweep_interval_s above 0")
        self.path = path
        self.max_value_bytes = max_value_bytes
        self.sweep_interval_s = sweep_interval_s
        self.sweep_batch = sweep_batch
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nanoroute-store")
        self._db: sqlite3.Connection | None = None  # used on the worker thread alone
        self._quick: sqlite3.Connection | None = None  # used on the event loop's thread alone (`transaction`)
        self._closed = False
        self._tasks = Background("store")
        self._logged_at = -math.inf

    async def start(self) -> None:
        if self._db is not None or self._closed:
            raise RuntimeError("a SqliteStore is started once")
        loop = asyncio.get_running_loop()
        try:
            self._db = await loop.run_in_executor(self._executor, _open, self.path)
        except (sqlite3.Error, OSError) as exc:
            raise StorageUnavailable(f"The store at {self.path} could not be opened: {exc}") from exc
        self._quick = _open_quick(self.path)
        self._tasks.start(self._sweep_every(), "sweep")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True  # refuse new calls; those already submitted still run, in order, before the close
        await self._tasks.stop()
        quick, self._quick = self._quick, None
        if quick is not None:
            quick.close()
        db, self._db = self._db, None
        if db is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
            except sqlite3.Error as exc:
                log.warning("closing the store at %s: %s", self.path, exc)
        self._executor.shutdown()  # its queue is empty: the close above ran last

    async def get(self, namespace: str, key: str) -> bytes | None:
        now = self._clock()
        return await self._call("read", lambda db: _get(db, namespace, key, now))

    async def put(self, namespace: str, key: str, value: bytes, ttl_s: float | None) -> None:
        check_put(value, ttl_s, self.max_value_bytes)
        expires_at = None if ttl_s is None else self._clock() + ttl_s
        await self._call("write", lambda db: _put(db, namespace, key, value, expires_at))

    async def delete(self, namespace: str, key: str) -> bool:
        now = self._clock()
        return await self._call("delete", lambda db: _delete(db, namespace, key, now))

    async def items(self, namespace: str) -> list[tuple[str, bytes]]:
        now = self._clock()
        return await self._call("read", lambda db: _items(db, namespace, now))

    async def swap(self, namespace: str, key: str, expected: bytes | None, value: bytes, ttl_s: float | None) -> bool:
        check_put(value, ttl_s, self.max_value_bytes)
        now = self._clock()
        expires_at = None if ttl_s is None else now + ttl_s
        return await self.transaction("write", lambda db: _swap(db, namespace, key, expected, value, now, expires_at))

    async def transaction(self, doing: str, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run `job(connection)` on the store's worker thread inside one `BEGIN IMMEDIATE` transaction: committed
        when it returns, rolled back when it raises. Other processes' transactions on the file wait for it, and it
        for them (up to `BUSY_TIMEOUT_S`). For features that keep tables of their own in the store's file (the
        governance counters): `job` may create them (`CREATE TABLE IF NOT EXISTS`), and must not commit. SQLite's
        and the disk's errors become `StorageUnavailable`, as in every call (`doing` says what failed, in the
        message and the log); any other exception of `job`'s is raised as it is."""
        return await self._call(doing, functools.partial(_in_transaction, job))

    async def quick_transaction(self, doing: str, job: Callable[[sqlite3.Connection], T]) -> T:
        """`transaction`, run on the event loop's own thread when the file is free: for a short job on the
        request path (admitting requests: tens of microseconds of CPU), where handing it to the worker thread
        and back would cost more than the job, and the two threads taking turns at the GIL more still.

        It never waits: its connection has no busy timeout, so a file locked by another process sends the job
        to the worker thread (which waits for it); and it never syncs the disk: with `synchronous=NORMAL` a
        commit in WAL mode writes to the page cache only, and this connection does no checkpoints
        (`wal_autocheckpoint=0`; the worker's connection does them)."""
        quick = self._quick
        if quick is None or self._closed:
            return await self.transaction(doing, job)
        try:
            return _in_transaction(job, quick)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):  # extended codes too
                raise self._failed(doing, exc) from exc
        except (sqlite3.Error, OSError) as exc:
            raise self._failed(doing, exc) from exc
        return await self.transaction(doing, job)  # another process holds the file: wait for it off the loop

    async def sweep(self) -> int:
        """Delete every expired row, `sweep_batch` at a time; how many were deleted. Each batch is a call of
        its own, so reads and writes made meanwhile wait for one batch at most."""
        deleted = 0
        while True:
            batch = await self._call("sweep", functools.partial(_sweep, now=self._clock(), limit=self.sweep_batch))
            deleted += batch
            if batch < self.sweep_batch:
                return deleted

    async def _sweep_every(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            with contextlib.suppress(StorageUnavailable):  # logged by _call; the next sweep tries again
                await self.sweep()

    async def _call(self, doing: str, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run `job` on the worker thread; SQLite's and the disk's errors become `StorageUnavailable` here."""
        db = self._db
        if db is None or self._closed:
            raise StorageUnavailable("The gateway's store is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, job, db)
        except (sqlite3.Error, OSError) as exc:
            raise self._failed(doing, exc) from exc

    def _failed(self, doing: str, exc: Exception) -> StorageUnavailable:
        """What a failure of SQLite's or the disk's becomes (logged once a minute)."""
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.error("the store at %s failed to %s: %s (further failures this minute are not logged)",
                      self.path, doing, exc)
        return StorageUnavailable(f"The gateway's store failed to {doing}; try again later")


# On the worker thread, from here down.

def _open(path: Path) -> sqlite3.Connection:
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask, or a mode it had before; SQLite gives -wal and -shm the same
    finally:
        os.close(fd)
    # isolation_level=None: each statement commits on its own, and none holds a transaction open between calls.
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode != "wal":
            raise sqlite3.OperationalError(f"the file system does not allow WAL mode (journal_mode is {mode})")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


def _open_quick(path: Path) -> sqlite3.Connection | None:
    """The event loop's connection (`quick_transaction`), on a file `_open` made ready; None if it will not open
    (the worker's connection then does everything)."""
    try:
        db = sqlite3.connect(path, timeout=0, isolation_level=None)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
    except sqlite3.Error as exc:
        log.warning("the store at %s: requests are admitted through its worker thread (%s)", path, exc)
        return None
    return db


def _get(db: sqlite3.Connection, namespace: str, key: str, now: float) -> bytes | None:
    row = db.execute("SELECT expires_at, value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)).fetchone()
    if row is None:
        return None
    expires_at, value = row
    if expires_at is not None and expires_at <= now:
        # Only if still expired: another process may have written a fresh value since the read.
        db.execute("DELETE FROM kv WHERE namespace = ? AND key = ? AND expires_at <= ?", (namespace, key, now))
        return None
    return bytes(value)


def _items(db: sqlite3.Connection, namespace: str, now: float) -> list[tuple[str, bytes]]:
    # TEXT compares as memcmp of UTF-8 (BINARY collation): the order of Python's sorted() on the keys.
    found = db.execute("SELECT key, value FROM kv WHERE namespace = ? AND (expires_at IS NULL OR expires_at > ?) "
                       "ORDER BY key", (namespace, now)).fetchall()
    return [(key, bytes(value)) for key, value in found]


def _in_transaction(job: Callable[[sqlite3.Connection], T], db: sqlite3.Connection) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = job(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite ends some failed transactions itself (a full disk, say)
            db.execute("ROLLBACK")
        raise
    return result


def _swap(db: sqlite3.Connection, namespace: str, key: str, expected: bytes | None, value: bytes, now: float,
          expires_at: float | None) -> bool:
    row = db.execute("SELECT expires_at, value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)).fetchone()
    current = None if row is None or (row[0] is not None and row[0] <= now) else bytes(row[1])
    if current != expected:
        return False
    _put(db, namespace, key, value, expires_at)
    return True


def _put(db: sqlite3.Connection, namespace: str, key: str, value: bytes, expires_at: float | None) -> None:
    db.execute("INSERT INTO kv (namespace, key, expires_at, value) VALUES (?, ?, ?, ?) "
               "ON CONFLICT (namespace, key) DO UPDATE SET expires_at = excluded.expires_at, value = excluded.value",
               (namespace, key, expires_at, value))


def _delete(db: sqlite3.Connection, namespace: str, key: str, now: float) -> bool:
    live = db.execute("DELETE FROM kv WHERE namespace = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?)",
                      (namespace, key, now)).rowcount
    if not live:  # an expired row the sweep has not reached yet
        db.execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))
    return live > 0


def _sweep(db: sqlite3.Connection, now: float, limit: int) -> int:
    return db.execute("DELETE FROM kv WHERE rowid IN (SELECT rowid FROM kv WHERE expires_at IS NOT NULL "
                      "AND expires_at <= ? LIMIT ?)", (now, limit)).rowcount
