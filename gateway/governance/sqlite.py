"""`SqliteCounters`: the governance counters in tables of their own in the `SqliteStore`'s file.

Every call is one `BEGIN IMMEDIATE` transaction, for one request or a batch of them (`admit_many`,
`settle_many`: the governor sends what arrived while the previous call ran): it takes the file's write lock
before its first read, so the processes of one host sharing the file count one after another, and a refusal
leaves nothing written. Admissions and small settlements run on the event loop's thread while the file is free
(`SqliteStore.quick_transaction`: tens of microseconds of CPU, never a wait; handing them to the worker thread
and back cost more than they do: 330 against 255 us a request at c=16, in process); the rest, and any that
finds the file locked by another process, on the store's worker thread (`SqliteStore.transaction`). The
checks and the window maths are counters.py's own functions, run in Python inside the transaction. The tables
are made at the first call (`CREATE TABLE IF NOT EXISTS`, in that call's transaction), so there is nothing to
start::

    governance_window (scope, minute, requests, tokens)   one row a scope a minute; older than the previous
                                                          minute deleted when the scope counts a request
    governance_hold   (scope, request_id, deadline, reserve_nusd)
                                                          lapsed holds (deadline <= now) deleted when read
    governance_spent  (scope, period, spent_nusd, until)  deleted after `until` (counters.SPENT_KEPT_S)
    governance_ledger (day, key, team, model, requests, prompt_tokens, completion_tokens, cost_nusd)

WITHOUT ROWID tables: their rows are a few integers, looked up by their primary key.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from gateway.governance.counters import (
    Ask,
    LedgerEntry,
    Reading,
    Scope,
    ScopeUsage,
    Settlement,
    Verdict,
    counted,
    judge,
    ledger_days,
    period_id,
    spent_until,
    usage_of,
    window_at,
)
from gateway.store.sqlite import SqliteStore

T = TypeVar("T")

QUICK_SETTLE = 128
"""Settlements written on the event loop's thread at most at once (`SqliteStore.quick_transaction`: ~15 us each,
so under 2 ms); a larger batch goes to the worker thread."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS governance_window (scope TEXT NOT NULL, minute INTEGER NOT NULL, "
    "requests INTEGER NOT NULL, tokens INTEGER NOT NULL, PRIMARY KEY (scope, minute)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS governance_hold (scope TEXT NOT NULL, request_id TEXT NOT NULL, "
    "deadline REAL NOT NULL, reserve_nusd INTEGER NOT NULL, PRIMARY KEY (scope, request_id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS governance_hold_deadline ON governance_hold (scope, deadline)",
    "CREATE TABLE IF NOT EXISTS governance_spent (scope TEXT NOT NULL, period TEXT NOT NULL, "
    "spent_nusd INTEGER NOT NULL, until REAL, PRIMARY KEY (scope, period)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS governance_ledger (day TEXT NOT NULL, key TEXT NOT NULL, team TEXT NOT NULL, "
    "model TEXT NOT NULL, requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, "
    "completion_tokens INTEGER NOT NULL, cost_nusd INTEGER NOT NULL, PRIMARY KEY (day, key, team, model)) "
    "WITHOUT ROWID",
)


class SqliteCounters:
    """The `Counters` (gateway/governance/counters.py) in `store`'s file, which must be started."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self._made = False  # the tables exist: made by an earlier call of this instance's

    async def admit(self, ask: Ask) -> Verdict:
        return (await self.admit_many([ask]))[0]

    async def admit_many(self, asks: Sequence[Ask]) -> list[Verdict]:
        if self._made:  # on the request path: on the loop's thread while the file is free (quick_transaction)
            return await self.store.quick_transaction("count requests", lambda db: _admit_many(db, asks))
        return await self._run("count requests", lambda db: _admit_many(db, asks))

    async def settle(self, settlement: Settlement) -> None:
        await self.settle_many([settlement])

    async def record(self, entry: LedgerEntry) -> None:
        await self.settle_many([entry])

    async def settle_many(self, items: Sequence[Settlement | LedgerEntry]) -> None:
        if self._made and len(items) <= QUICK_SETTLE:
            await self.store.quick_transaction("settle requests", lambda db: _settle_many(db, items))
            return
        await self._run("settle requests", lambda db: _settle_many(db, items))

    async def usage(self, scopes: Sequence[Scope], now: float) -> list[ScopeUsage]:
        minute, elapsed = window_at(now)
        return await self._run("read the counters", lambda db: [
            usage_of(_read(db, scope, now, minute), elapsed) for scope in scopes])

    async def spend(self, since: str, until: str) -> list[LedgerEntry]:
        ledger_days(since, until)  # a day that is not one is the caller's mistake: ValueError, before any I/O
        return await self._run("read the ledger", lambda db: _spend(db, since, until))

    async def _run(self, doing: str, job: Callable[[sqlite3.Connection], T]) -> T:
        if self._made:
            return await self.store.transaction(doing, job)
        result = await self.store.transaction(doing, lambda db: _make_tables(db, job))
        self._made = True
        return result


# On the store's worker thread, inside its transaction, from here down.

def _make_tables(db: sqlite3.Connection, then: Callable[[sqlite3.Connection], T]) -> T:
    for statement in _SCHEMA:
        db.execute(statement)
    return then(db)


def _read(db: sqlite3.Connection, scope: Scope, now: float, minute: int) -> Reading:
    counts = {m: (r, t) for m, r, t in db.execute(
        "SELECT minute, requests, tokens FROM governance_window WHERE scope = ? AND minute IN (?, ?)",
        (scope.id, minute - 1, minute))}
    previous, current = counts.get(minute - 1, (0, 0)), counts.get(minute, (0, 0))
    db.execute("DELETE FROM governance_hold WHERE scope = ? AND deadline <= ?", (scope.id, now))
    held, reserved = db.execute("SELECT COUNT(*), COALESCE(SUM(reserve_nusd), 0) FROM governance_hold "
                                "WHERE scope = ?", (scope.id,)).fetchone()
    row = db.execute("SELECT spent_nusd FROM governance_spent WHERE scope = ? AND period = ?",
                     (scope.id, period_id(scope.period, now))).fetchone()
    return Reading(requests=(previous[0], current[0]), tokens=(previous[1], current[1]), in_flight=held,
                   spent_nusd=0 if row is None else row[0], reserved_nusd=reserved)


def _admit_many(db: sqlite3.Connection, asks: Sequence[Ask]) -> list[Verdict]:
    """Each ask in turn, as if alone: a scope is read once, then its counts follow the asks admitted before in
    memory, and what they add is written once a scope at the end."""
    readings: dict[tuple[str, int], Reading] = {}
    added: dict[tuple[str, int], list[int]] = {}
    holds: list[tuple[str, str, float, int]] = []
    verdicts: list[Verdict] = []
    for ask in asks:
        minute, elapsed = window_at(ask.now)
        got = [readings.get((scope.id, minute)) or _read(db, scope, ask.now, minute) for scope in ask.scopes]
        verdict = judge(ask, got, elapsed)
        verdicts.append(verdict)
        for scope, reading in zip(ask.scopes, got, strict=True):
            if not verdict.admitted:
                readings[(scope.id, minute)] = reading
                continue
            readings[(scope.id, minute)] = counted(reading, ask)
            sums = added.setdefault((scope.id, minute), [0, 0])
            sums[0] += 1
            sums[1] += ask.tokens
            holds.append((scope.id, ask.request_id, ask.deadline, ask.reserve_nusd))
    for (scope_id, minute), (requests, tokens) in added.items():
        _add_to_window(db, scope_id, minute, requests, tokens)
        db.execute("DELETE FROM governance_window WHERE scope = ? AND minute < ?", (scope_id, minute - 1))
    if holds:
        db.executemany("INSERT INTO governance_hold VALUES (?, ?, ?, ?) ON CONFLICT (scope, request_id) DO UPDATE "
                       "SET deadline = excluded.deadline, reserve_nusd = excluded.reserve_nusd", holds)
    return verdicts


def _add_to_window(db: sqlite3.Connection, scope: str, minute: int, requests: int, tokens: int) -> None:
    db.execute("INSERT INTO governance_window VALUES (?, ?, ?, ?) ON CONFLICT (scope, minute) DO UPDATE "
               "SET requests = requests + excluded.requests, tokens = tokens + excluded.tokens",
               (scope, minute, requests, tokens))


def _settle_many(db: sqlite3.Connection, items: Sequence[Settlement | LedgerEntry]) -> None:
    """The settlements summed a row at a time: one write a scope's window, a scope's period, a ledger row."""
    holds: list[tuple[str, str]] = []
    corrections: dict[tuple[str, int], int] = {}
    spent: dict[tuple[str, str], list[Any]] = {}
    ledger: dict[tuple[str, str, str, str], list[int]] = {}
    for item in items:
        entry = item if isinstance(item, LedgerEntry) else item.ledger
        if entry is not None:
            sums = ledger.setdefault((entry.day, entry.key, entry.team, entry.model), [0, 0, 0, 0])
            sums[0] += entry.requests
            sums[1] += entry.prompt_tokens
            sums[2] += entry.completion_tokens
            sums[3] += entry.cost_nusd
        if isinstance(item, LedgerEntry):
            continue
        minute, _ = window_at(item.now)
        correction = item.tokens_used - item.tokens_counted
        for scope in item.scopes:
            holds.append((scope.id, item.request_id))
            if correction:
                corrections[(scope.id, minute)] = corrections.get((scope.id, minute), 0) + correction
            if item.cost_nusd:
                row = spent.setdefault((scope.id, period_id(scope.period, item.now)),
                                       [0, spent_until(scope.period, item.now), item.now])
                row[0] += item.cost_nusd
                row[2] = max(row[2], item.now)
    if holds:
        db.executemany("DELETE FROM governance_hold WHERE scope = ? AND request_id = ?", holds)
    for (scope_id, minute), correction in corrections.items():
        _add_to_window(db, scope_id, minute, 0, correction)
    for (scope_id, period), (cost, until, now) in spent.items():
        db.execute("DELETE FROM governance_spent WHERE scope = ? AND until <= ?", (scope_id, now))
        db.execute("INSERT INTO governance_spent VALUES (?, ?, ?, ?) ON CONFLICT (scope, period) DO UPDATE "
                   "SET spent_nusd = spent_nusd + excluded.spent_nusd", (scope_id, period, cost, until))
    if ledger:
        db.executemany("INSERT INTO governance_ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, key, team, "
                       "model) DO UPDATE SET requests = requests + excluded.requests, "
                       "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
                       "completion_tokens = completion_tokens + excluded.completion_tokens, "
                       "cost_nusd = cost_nusd + excluded.cost_nusd",
                       [(*row, *sums) for row, sums in ledger.items()])


def _spend(db: sqlite3.Connection, since: str, until: str) -> list[LedgerEntry]:
    rows = db.execute("SELECT day, key, team, model, prompt_tokens, completion_tokens, cost_nusd, requests "
                      "FROM governance_ledger WHERE day >= ? AND day <= ? ORDER BY day, key, team, model",
                      (since, until))
    return [LedgerEntry(*row) for row in rows]
