"""`SqliteCounters`: the governance counters in tables of their own in the `SqliteStore`'s file.

Every call is one `BEGIN IMMEDIATE` transaction on the store's worker thread (`SqliteStore.transaction`): it
takes the file's write lock before its first read, so the processes of one host sharing the file count one
after another, and a refusal leaves nothing written. The checks and the window maths are counters.py's own
functions, run in Python inside the transaction. The tables are made at the first call (`CREATE TABLE IF NOT
EXISTS`, in that call's transaction), so there is nothing to start::

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
from typing import TypeVar

from gateway.governance.counters import (
    Ask,
    LedgerEntry,
    Reading,
    Scope,
    ScopeUsage,
    Settlement,
    Verdict,
    judge,
    ledger_days,
    period_id,
    spent_until,
    usage_of,
    window_at,
)
from gateway.store.sqlite import SqliteStore

T = TypeVar("T")

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
        return await self._run("count a request", lambda db: _admit(db, ask))

    async def settle(self, settlement: Settlement) -> None:
        await self._run("settle a request", lambda db: _settle(db, settlement))

    async def record(self, entry: LedgerEntry) -> None:
        await self._run("add to the ledger", lambda db: _add_to_ledger(db, entry))

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


def _admit(db: sqlite3.Connection, ask: Ask) -> Verdict:
    minute, elapsed = window_at(ask.now)
    readings = [_read(db, scope, ask.now, minute) for scope in ask.scopes]
    verdict = judge(ask, readings, elapsed)
    if verdict.admitted:
        for scope in ask.scopes:
            _add_to_window(db, scope.id, minute, 1, ask.tokens)
            db.execute("DELETE FROM governance_window WHERE scope = ? AND minute < ?", (scope.id, minute - 1))
            db.execute("INSERT INTO governance_hold VALUES (?, ?, ?, ?) ON CONFLICT (scope, request_id) DO UPDATE "
                       "SET deadline = excluded.deadline, reserve_nusd = excluded.reserve_nusd",
                       (scope.id, ask.request_id, ask.deadline, ask.reserve_nusd))
    return verdict


def _add_to_window(db: sqlite3.Connection, scope: str, minute: int, requests: int, tokens: int) -> None:
    db.execute("INSERT INTO governance_window VALUES (?, ?, ?, ?) ON CONFLICT (scope, minute) DO UPDATE "
               "SET requests = requests + excluded.requests, tokens = tokens + excluded.tokens",
               (scope, minute, requests, tokens))


def _settle(db: sqlite3.Connection, settlement: Settlement) -> None:
    minute, _ = window_at(settlement.now)
    correction = settlement.tokens_used - settlement.tokens_counted
    for scope in settlement.scopes:
        db.execute("DELETE FROM governance_hold WHERE scope = ? AND request_id = ?", (scope.id, settlement.request_id))
        if correction:
            _add_to_window(db, scope.id, minute, 0, correction)
        if settlement.cost_nusd:
            db.execute("DELETE FROM governance_spent WHERE scope = ? AND until <= ?", (scope.id, settlement.now))
            db.execute("INSERT INTO governance_spent VALUES (?, ?, ?, ?) ON CONFLICT (scope, period) DO UPDATE "
                       "SET spent_nusd = spent_nusd + excluded.spent_nusd",
                       (scope.id, period_id(scope.period, settlement.now), settlement.cost_nusd,
                        spent_until(scope.period, settlement.now)))
    if settlement.ledger is not None:
        _add_to_ledger(db, settlement.ledger)


def _add_to_ledger(db: sqlite3.Connection, entry: LedgerEntry) -> None:
    db.execute("INSERT INTO governance_ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, key, team, model) "
               "DO UPDATE SET requests = requests + excluded.requests, "
               "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
               "completion_tokens = completion_tokens + excluded.completion_tokens, "
               "cost_nusd = cost_nusd + excluded.cost_nusd",
               (entry.day, entry.key, entry.team, entry.model, entry.requests, entry.prompt_tokens,
                entry.completion_tokens, entry.cost_nusd))


def _spend(db: sqlite3.Connection, since: str, until: str) -> list[LedgerEntry]:
    rows = db.execute("SELECT day, key, team, model, prompt_tokens, completion_tokens, cost_nusd, requests "
                      "FROM governance_ledger WHERE day >= ? AND day <= ? ORDER BY day, key, team, model",
                      (since, until))
    return [LedgerEntry(*row) for row in rows]
