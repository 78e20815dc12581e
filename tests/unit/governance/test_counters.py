"""The counters: the window maths against numbers worked out by hand, then one suite of behaviour that both
implementations must show alike, SqliteCounters on a file of the test's own and RedisCounters on a real
redis-server. Time is the caller's (`Ask.now`), so the tests drive it by hand.

Instants are kept off the exact edges the maths predicts (a request fits again at 80.0 s: the test asks at 79.5
and 80.5), since a double an ulp either side of an edge is not what these tests are about."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.governance.counters import (
    IN_FLIGHT_RETRY_S,
    Ask,
    Counters,
    LedgerEntry,
    Period,
    Reading,
    Scope,
    ScopeUsage,
    Settlement,
    Verdict,
    Window,
    build_counters,
    fit_in,
    judge,
    ledger_days,
    period_end,
    reset_in,
    sliding,
    window,
    window_at,
)
from gateway.store import SqliteStore, Store
from tests.conftest import StartRedis

T0 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp()
"""A Monday, the 2nd of a month, at 00:00:00 UTC: the start of a minute, a day and an ISO week."""
MINUTE = int(T0 // 60)


# The window maths.

def test_window_at_is_the_minute_and_the_seconds_into_it() -> None:
    assert window_at(T0) == (MINUTE, 0.0)
    assert window_at(T0 + 75.5) == (MINUTE + 1, 15.5)
    assert window_at(T0 - 0.5) == (MINUTE - 1, 59.5)


@pytest.mark.parametrize(("previous", "current", "elapsed", "count"), [
    (0, 7, 59.5, 7.0),  # the first minute: exact
    (10, 2, 15.0, 9.5),  # 10 * 45/60 + 2
    (10, 0, 30.0, 5.0),
    (-5, 3, 0.0, 3.0),  # a previous minute below 0 lends nothing
    (10, -20, 30.0, 0.0),  # 5 - 20, read as 0
    (10, -2, 30.0, 3.0),  # a current minute below 0 corrects the estimate
])
def test_sliding(previous: int, current: int, elapsed: float, count: float) -> None:
    assert sliding(previous, current, elapsed) == pytest.approx(count)


@pytest.mark.parametrize(("previous", "current", "elapsed", "need", "limit", "seconds"), [
    (0, 0, 0.0, 1, 10, 0.0),  # fits now
    (10, 2, 15.0, 1, 10, 3.0),  # 10 * (1 - 18/60) + 2 + 1 = 10: the previous minute's decay suffices
    (0, 3, 59.0, 1, 3, 21.0),  # the current minute alone is full: 1 s to its end, then 3 * (1 - 20/60) + 1 = 3
    (10, 9, 30.0, 1, 10, 30.0),  # 5 + 9 + 1 > 10 all this minute; 9 + 1 fits as the next one begins
    (1000, 500, 30.0, 600, 1000, 42.0),  # tokens: 30 s to the minute's end, then 500 * (1 - 12/60) + 600 = 1000
    (1000, -100, 15.0, 400, 1000, 3.0),  # corrected down: 1000 * (1 - 18/60) - 100 + 400 = 1000
    (0, 5, 10.0, 11, 10, None),  # more than the limit never fits
])
def test_fit_in(previous: int, current: int, elapsed: float, need: int, limit: int, seconds: float | None) -> None:
    found = fit_in(previous, current, elapsed, need, limit)
    if seconds is None:
        assert found is None
    else:
        assert found == pytest.approx(seconds)


def test_fit_in_is_the_first_instant_that_fits() -> None:
    """Checked against the count itself, a hundredth of a second either side, across the minute boundary."""
    for previous, current, elapsed, need, limit in [(10, 2, 15.0, 1, 10), (0, 3, 59.0, 1, 3), (7, 7, 20.0, 2, 8),
                                                    (100, 60, 45.0, 30, 100), (1000, -100, 15.0, 400, 1000)]:
        t = fit_in(previous, current, elapsed, need, limit)
        assert t is not None

        def count_at(seconds: float, previous: int = previous, current: int = current,
                     elapsed: float = elapsed) -> float:
            if elapsed + seconds < 60:
                return sliding(previous, current, elapsed + seconds)
            return sliding(current, 0, elapsed + seconds - 60)  # the next minute

        assert count_at(t - 0.01) + need > limit
        assert count_at(t + 0.01) + need <= limit


@pytest.mark.parametrize(("previous", "current", "elapsed", "seconds"), [
    (10, 2, 15.0, 105.0),  # the current minute's 2 count until the end of the next one
    (10, 0, 15.0, 45.0),  # only the previous minute's, gone when this one ends
    (10, -5, 15.0, 15.0),  # 10 * (1 - 30/60) - 5 = 0
    (10, -20, 15.0, 0.0),
    (0, 0, 10.0, 0.0),
])
def test_reset_in(previous: int, current: int, elapsed: float, seconds: float) -> None:
    assert reset_in(previous, current, elapsed) == pytest.approx(seconds)


def test_window_counts_what_remains_whole() -> None:
    assert window(10, 2, 15.0, 10) == Window(limit=10, remaining=0, reset_s=105.0)  # 9.5 counted
    assert window(10, 1, 15.0, 10) == Window(limit=10, remaining=1, reset_s=105.0)  # 8.5: one more fits
    assert window(0, 1, 1.0, 3) == Window(limit=3, remaining=2, reset_s=119.0)
    assert window(0, 9, 1.0, 3).remaining == 0  # over the limit (a lowered limit): 0, not below


def test_judge_takes_the_first_scope_that_refuses_and_says_when_to_retry() -> None:
    key = Scope("key:a", rpm=10, tpm=1000)
    team = Scope("team:t", rpm=5, max_in_flight=2, budget_nusd=100)
    ask = Ask("r1", (key, team), tokens=100, reserve_nusd=10, now=T0 + 15, deadline=T0 + 60)
    fresh = Reading(requests=(0, 0), tokens=(0, 0), in_flight=0, spent_nusd=0, reserved_nusd=0)
    admitted = judge(ask, [fresh, fresh], 15.0)
    assert admitted == Verdict(admitted=True, requests=Window(10, 9, 105.0), tokens=Window(1000, 900, 105.0))

    team_full = Reading(requests=(4, 2), tokens=(0, 0), in_flight=2, spent_nusd=0, reserved_nusd=0)
    refused = judge(ask, [fresh, team_full], 15.0)  # 4 * 0.75 + 2 + 1 = 6 > 5: requests, before in_flight
    assert (refused.admitted, refused.scope, refused.reason) == (False, "team:t", "requests")
    assert refused.retry_after_s == pytest.approx(60 * (4 + 2 + 1 - 5) / 4 - 15)  # 15 s
    assert refused.requests == Window(10, 10, 0.0)  # the key's window, not counting the refused request

    busy = Reading(requests=(0, 0), tokens=(0, 0), in_flight=2, spent_nusd=0, reserved_nusd=0)
    assert judge(ask, [fresh, busy], 15.0).retry_after_s == IN_FLIGHT_RETRY_S
    reserved = Reading(requests=(0, 0), tokens=(0, 0), in_flight=0, spent_nusd=60, reserved_nusd=40)
    taken = judge(ask, [fresh, reserved], 15.0)  # not spent: requests in flight may leave some of it
    assert (taken.reason, taken.retry_after_s) == ("reserved", IN_FLIGHT_RETRY_S)
    spent = Reading(requests=(0, 0), tokens=(0, 0), in_flight=0, spent_nusd=100, reserved_nusd=0)
    broke = judge(ask, [fresh, spent], 15.0)
    assert (broke.reason, broke.retry_after_s) == ("budget", None)  # until the period ends


def test_ledger_days() -> None:
    assert ledger_days("2026-02-27", "2026-03-02") == ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"]
    assert ledger_days("2026-03-02", "2026-03-01") == []
    with pytest.raises(ValueError):
        ledger_days("2026-02-30", "2026-03-01")


# The behaviour both implementations share.

OpenCounters = Callable[[], contextlib.AbstractAsyncContextManager[Counters]]


@pytest.fixture(params=["sqlite", "redis"])
def open_counters(request: pytest.FixtureRequest, tmp_path: Path) -> OpenCounters:
    """Counters on one shared state: each call opens another store on the same file or server, as another
    process (or replica) would."""
    if request.param == "sqlite":
        def make() -> Store:
            return SqliteStore(tmp_path / "state.db")
    else:
        from gateway.store.redis import RedisStore

        start_redis: StartRedis = request.getfixturevalue("start_redis")
        server = start_redis()

        def make() -> Store:
            # These tests are about counting, not connecting: 50 admits at once open 50 connections, which a
            # loaded CI machine has once taken over the store's 1 s default to accept.
            return RedisStore(server.url, connect_timeout_s=10.0)

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[Counters]:
        store = make()
        await store.start()
        try:
            yield build_counters(store)
        finally:
            await store.close()

    return opened


def ask(request_id: str, *scopes: Scope, now: float, tokens: int = 0, reserve: int = 0,
        deadline: float | None = None) -> Ask:
    return Ask(request_id, scopes, tokens=tokens, reserve_nusd=reserve, now=now,
               deadline=now + 600 if deadline is None else deadline)


def settled(request_id: str, *scopes: Scope, now: float, counted: int = 0, used: int = 0, cost: int = 0,
            ledger: LedgerEntry | None = None) -> Settlement:
    return Settlement(request_id, scopes, tokens_counted=counted, tokens_used=used, cost_nusd=cost, now=now,
                      ledger=ledger)


def test_rpm_is_exact_within_the_first_minute(open_counters: OpenCounters) -> None:
    key = Scope("key:a", rpm=3)

    async def run() -> None:
        async with open_counters() as counters:
            first = await counters.admit(ask("r1", key, now=T0 + 1))
            assert first == Verdict(admitted=True, requests=Window(limit=3, remaining=2, reset_s=119.0))
            assert (await counters.admit(ask("r2", key, now=T0 + 2))).requests == Window(3, 1, 118.0)
            assert (await counters.admit(ask("r3", key, now=T0 + 3))).requests == Window(3, 0, 117.0)
            refused = await counters.admit(ask("r4", key, now=T0 + 59))
            assert (refused.admitted, refused.scope, refused.reason) == (False, "key:a", "requests")
            assert refused.retry_after_s == pytest.approx(21.0)  # 3 * (1 - 20/60) + 1 = 3 at T0 + 80
            assert refused.requests == Window(3, 0, 61.0)
            assert not (await counters.admit(ask("r5", key, now=T0 + 79.5))).admitted
            assert (await counters.admit(ask("r6", key, now=T0 + 80.5))).admitted
            assert not (await counters.admit(ask("r7", key, now=T0 + 80.6))).admitted
            [usage] = await counters.usage([key], T0 + 90)
            assert usage.requests == pytest.approx(3 * 0.5 + 1)  # the refused ones counted nothing

    asyncio.run(run())


def test_the_previous_minute_counts_by_its_weight(open_counters: OpenCounters) -> None:
    key = Scope("key:a", rpm=10)

    async def run() -> None:
        async with open_counters() as counters:
            for i in range(10):
                assert (await counters.admit(ask(f"a{i}", key, now=T0 + 10 + i))).admitted
            assert not (await counters.admit(ask("full", key, now=T0 + 59))).admitted
            now = T0 + 75  # 15 s into the next minute: 10 * 0.75 = 7.5
            assert (await counters.admit(ask("b1", key, now=now))).requests == Window(10, 1, 105.0)  # 8.5
            assert (await counters.admit(ask("b2", key, now=now))).requests == Window(10, 0, 105.0)  # 9.5
            refused = await counters.admit(ask("b3", key, now=now))  # 10.5
            assert refused.reason == "requests" and refused.retry_after_s == pytest.approx(3.0)
            assert refused.requests == Window(10, 0, 105.0)
            assert not (await counters.admit(ask("b4", key, now=now + 2.5))).admitted
            assert (await counters.admit(ask("b5", key, now=now + 3.5))).admitted  # 10 * (1 - 18.5/60) + 2 + 1 < 10
            [usage] = await counters.usage([key], T0 + 150)  # two minutes on: only the minute that began at 120
            assert usage.requests == pytest.approx(3 * (1 - 30 / 60))

    asyncio.run(run())


def test_tokens_are_counted_at_admission_and_corrected_at_settlement(open_counters: OpenCounters) -> None:
    key = Scope("key:a", tpm=1000)

    async def run() -> None:
        async with open_counters() as counters:
            first = await counters.admit(ask("r1", key, now=T0 + 1, tokens=600))
            assert first.tokens == Window(1000, 400, 119.0)
            refused = await counters.admit(ask("r2", key, now=T0 + 2, tokens=600))
            # 58 s to the minute's end, then 600 * (1 - 20/60) + 600 = 1000
            assert (refused.reason, refused.retry_after_s) == ("tokens", pytest.approx(58 + 20))
            await counters.settle(settled("r1", key, now=T0 + 3, counted=600, used=100))  # 500 fewer
            assert (await counters.admit(ask("r3", key, now=T0 + 4, tokens=600))).tokens == Window(1000, 300, 116.0)
            await counters.settle(settled("r3", key, now=T0 + 5, counted=600, used=900))  # 300 more: 1000
            assert (await counters.admit(ask("r4", key, now=T0 + 6, tokens=1))).reason == "tokens"
            assert (await counters.admit(ask("r5", key, now=T0 + 6, tokens=0))).admitted
            # A correction in the next minute lowers that minute's count (1000 * 0.5 - 400), not the ones after.
            await counters.settle(settled("r5", key, now=T0 + 61, counted=0, used=0))
            await counters.admit(ask("r6", key, now=T0 + 62, tokens=0))
            await counters.settle(settled("r6", key, now=T0 + 62, counted=400, used=0))
            [usage] = await counters.usage([key], T0 + 90)
            assert usage.tokens == pytest.approx(1000 * 0.5 - 400)
            [usage] = await counters.usage([key], T0 + 150)  # -400 is the previous minute now: it lends nothing
            assert usage.tokens == 0.0
            never = await counters.admit(ask("big", key, now=T0 + 200, tokens=1001))
            assert (never.reason, never.retry_after_s) == ("tokens", None)  # over the limit itself

    asyncio.run(run())


def test_in_flight_holds_end_at_settlement_or_lapse_at_their_deadline(open_counters: OpenCounters) -> None:
    key = Scope("key:a", max_in_flight=2)

    async def run() -> None:
        async with open_counters() as counters:
            assert (await counters.admit(ask("a", key, now=T0, deadline=T0 + 30))).admitted
            assert (await counters.admit(ask("b", key, now=T0, deadline=T0 + 100))).admitted
            refused = await counters.admit(ask("c", key, now=T0 + 1, deadline=T0 + 200))
            assert (refused.reason, refused.retry_after_s) == ("in_flight", IN_FLIGHT_RETRY_S)
            await counters.settle(settled("a", key, now=T0 + 2))
            assert (await counters.admit(ask("c", key, now=T0 + 3, deadline=T0 + 200))).admitted
            assert not (await counters.admit(ask("d", key, now=T0 + 99.5, deadline=T0 + 300))).admitted
            assert [u.in_flight for u in await counters.usage([key], T0 + 99.5)] == [2]
            # b's process died: its hold lapses at its deadline
            assert [u.in_flight for u in await counters.usage([key], T0 + 100)] == [1]
            assert (await counters.admit(ask("d", key, now=T0 + 100, deadline=T0 + 300))).admitted
            await counters.settle(settled("b", key, now=T0 + 101))  # late: b's hold is gone already
            assert [u.in_flight for u in await counters.usage([key], T0 + 101)] == [2]

    asyncio.run(run())


def test_a_budget_counts_spent_and_reserved(open_counters: OpenCounters) -> None:
    key = Scope("key:a", budget_nusd=1000, period="day")

    async def run() -> None:
        async with open_counters() as counters:
            for i in range(4):  # reserved 0, 300, 600, 900: each below 1000 when asked
                assert (await counters.admit(ask(f"r{i}", key, now=T0 + i, reserve=300))).admitted
            refused = await counters.admit(ask("r4", key, now=T0 + 5, reserve=300))
            assert (refused.admitted, refused.scope, refused.reason, refused.retry_after_s) == (
                False, "key:a", "reserved", IN_FLIGHT_RETRY_S)  # 1200 reserved, nothing spent yet
            assert await counters.usage([key], T0 + 5) == [ScopeUsage(4.0, 0.0, 4, 0, 1200)]
            await counters.settle(settled("r0", key, now=T0 + 6, cost=50))  # the reserve goes, the cost is spent
            assert await counters.usage([key], T0 + 6) == [ScopeUsage(4.0, 0.0, 3, 50, 900)]
            assert (await counters.admit(ask("r5", key, now=T0 + 7, reserve=300))).admitted  # 950 < 1000
            assert not (await counters.admit(ask("r6", key, now=T0 + 8, reserve=1))).admitted
            for i in (1, 2, 3, 5):
                await counters.settle(settled(f"r{i}", key, now=T0 + 9, cost=250))  # over their reserves
            assert await counters.usage([key], T0 + 9) == [ScopeUsage(5.0, 0.0, 0, 1050, 0)]
            broke = await counters.admit(ask("r7", key, now=T0 + 10, reserve=300))
            assert (broke.admitted, broke.reason, broke.retry_after_s) == (False, "budget", None)  # spent alone
            tomorrow = T0 + 86400
            assert await counters.usage([key], tomorrow) == [ScopeUsage(0.0, 0.0, 0, 0, 0)]
            assert (await counters.admit(ask("r8", key, now=tomorrow, reserve=300))).admitted

    asyncio.run(run())


@pytest.mark.parametrize("period", ["day", "week", "month", "total"])
def test_each_period_starts_from_0_but_total(open_counters: OpenCounters, period: Period) -> None:
    key = Scope("key:a", budget_nusd=100, period=period)

    async def run() -> None:
        async with open_counters() as counters:
            assert (await counters.admit(ask("r1", key, now=T0 + 60, reserve=10))).admitted
            await counters.settle(settled("r1", key, now=T0 + 61, cost=100))
            end = period_end(period, T0) or T0 + 400 * 86400
            assert not (await counters.admit(ask("r2", key, now=end - 1, reserve=10))).admitted
            [usage] = await counters.usage([key], end + 1)
            next_period = await counters.admit(ask("r3", key, now=end + 1, reserve=10))
            if period == "total":
                assert usage.spent_nusd == 100 and not next_period.admitted
            else:
                assert usage.spent_nusd == 0 and next_period.admitted

    asyncio.run(run())


def test_a_scope_that_refuses_leaves_every_scope_uncounted(open_counters: OpenCounters) -> None:
    key = Scope("key:a", rpm=100, tpm=100_000, max_in_flight=10, budget_nusd=10**9)
    team = Scope("team:t", rpm=1)

    async def run() -> None:
        async with open_counters() as counters:
            assert (await counters.admit(ask("r1", key, team, now=T0 + 1, tokens=50, reserve=7))).admitted
            refused = await counters.admit(ask("r2", key, team, now=T0 + 2, tokens=50, reserve=7))
            assert (refused.admitted, refused.scope, refused.reason) == (False, "team:t", "requests")
            assert refused.requests == Window(100, 99, 118.0)  # the key's window: one request, not two
            assert refused.tokens == Window(100_000, 99_950, 118.0)
            assert await counters.usage([key, team], T0 + 3) == [ScopeUsage(1.0, 50.0, 1, 0, 7),
                                                                 ScopeUsage(1.0, 50.0, 1, 0, 7)]
            assert (await counters.admit(ask("r3", key, now=T0 + 4, tokens=50, reserve=7))).admitted  # key alone

    asyncio.run(run())


def test_the_ledger_sums_by_day_key_team_and_model(open_counters: OpenCounters) -> None:
    key = Scope("key:a")

    def entry(day: str, key: str, model: str, prompt: int, completion: int, cost: int, team: str = "-") -> LedgerEntry:
        return LedgerEntry(day=day, key=key, team=team, model=model, prompt_tokens=prompt,
                           completion_tokens=completion, cost_nusd=cost)

    async def run() -> None:
        async with open_counters() as counters:
            await counters.admit(ask("r1", key, now=T0))
            await counters.settle(settled("r1", key, now=T0 + 1, cost=30,
                                          ledger=entry("2026-03-02", "a", "gpt", 10, 20, 30, team="t")))
            await counters.record(entry("2026-03-02", "a", "gpt", 1, 2, 3, team="t"))
            await counters.record(entry("2026-03-02", "-", "gpt", 5, 0, 0))  # no key
            await counters.record(entry("2026-03-01", "b", "llama", 7, 8, 9))
            await counters.record(entry("2026-03-03", "a", "gpt", 1, 1, 1))
            await counters.record(entry("2026-02-28", "a", "gpt", 1, 1, 1))
            await counters.record(LedgerEntry("2026-03-02", "a", "t", "gpt", 0, 0, 0, requests=0))
            assert await counters.spend("2026-03-01", "2026-03-02") == [
                LedgerEntry("2026-03-01", "b", "-", "llama", 7, 8, 9, requests=1),
                LedgerEntry("2026-03-02", "-", "-", "gpt", 5, 0, 0, requests=1),
                LedgerEntry("2026-03-02", "a", "t", "gpt", 11, 22, 33, requests=2),
            ]
            assert [e.day for e in await counters.spend("2026-02-01", "2026-03-31")] == [
                "2026-02-28", "2026-03-01", "2026-03-02", "2026-03-02", "2026-03-03"]
            assert await counters.spend("2026-03-04", "2026-03-31") == []
            with pytest.raises(ValueError):
                await counters.spend("March", "2026-03-31")

    asyncio.run(run())


def test_a_scope_without_limits_is_still_counted(open_counters: OpenCounters) -> None:
    key = Scope("key:a")

    async def run() -> None:
        async with open_counters() as counters:
            verdict = await counters.admit(ask("r1", key, now=T0 + 1, tokens=10, reserve=5))
            assert verdict == Verdict(admitted=True)  # no rpm, no tpm: no windows to show
            assert await counters.usage([key, Scope("key:other")], T0 + 2) == [
                ScopeUsage(1.0, 10.0, 1, 0, 5), ScopeUsage(0.0, 0.0, 0, 0, 0)]
            assert await counters.admit(ask("r2", now=T0 + 2)) == Verdict(admitted=True)  # no scope at all

    asyncio.run(run())


@pytest.mark.parametrize("processes", [1, 2])
def test_concurrent_admits_reserve_no_more_than_the_budget_allows(open_counters: OpenCounters,
                                                                  processes: int) -> None:
    """50 at once against a budget that holds 10 reserves: exactly 10 admitted, however they interleave, from
    one process or two."""
    key = Scope("key:a", budget_nusd=1000, period="month")

    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            opened = [await stack.enter_async_context(open_counters()) for _ in range(processes)]
            verdicts = await asyncio.gather(*(opened[i % processes].admit(ask(f"r{i}", key, now=T0, reserve=100))
                                              for i in range(50)))
            assert sum(v.admitted for v in verdicts) == 10
            assert {v.reason for v in verdicts if not v.admitted} == {"reserved"}
            assert await opened[0].usage([key], T0) == [ScopeUsage(10.0, 0.0, 10, 0, 1000)]

    asyncio.run(run())


@pytest.mark.parametrize("processes", [1, 2])
def test_concurrent_admits_keep_to_the_rpm(open_counters: OpenCounters, processes: int) -> None:
    key = Scope("key:a", rpm=17)

    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            opened = [await stack.enter_async_context(open_counters()) for _ in range(processes)]
            verdicts = await asyncio.gather(*(opened[i % processes].admit(ask(f"r{i}", key, now=T0 + 1))
                                              for i in range(50)))
            assert sum(v.admitted for v in verdicts) == 17
            assert sorted(v.requests.remaining for v in verdicts if v.admitted and v.requests) == list(range(17))

    asyncio.run(run())


def test_a_batch_counts_each_ask_as_if_it_came_alone(open_counters: OpenCounters) -> None:
    key, team = Scope("key:a", rpm=5, max_in_flight=4), Scope("team:t", budget_nusd=100)

    async def run() -> None:
        async with open_counters() as counters:
            asks = [ask(f"r{i}", key, team, now=T0 + 1 + i / 100, tokens=3, reserve=30) for i in range(6)]
            verdicts = await counters.admit_many(asks)
            # The team's budget admits while spent + reserved < 100: 4 reserves of 30; the key's cap is also 4.
            assert [v.admitted for v in verdicts] == [True, True, True, True, False, False]
            assert [v.requests.remaining for v in verdicts if v.requests] == [4, 3, 2, 1, 1, 1]
            assert {v.reason for v in verdicts[4:]} == {"in_flight"}
            [k, t] = await counters.usage([key, team], T0 + 2)
            assert (k.requests, k.tokens, k.in_flight, t.reserved_nusd) == (4, 12, 4, 120)
            await counters.settle_many([
                settled("r0", key, team, now=T0 + 3, counted=3, used=10, cost=25,
                        ledger=LedgerEntry("2026-03-02", "a", "t", "gpt", 6, 4, 25)),
                settled("r1", key, team, now=T0 + 3, counted=3, used=1, cost=5,
                        ledger=LedgerEntry("2026-03-02", "a", "t", "gpt", 1, 0, 5)),
                LedgerEntry("2026-03-02", "b", "-", "gpt", 2, 2, 2),
            ])
            [k, t] = await counters.usage([key, team], T0 + 4)
            assert (k.tokens, k.in_flight, t.spent_nusd, t.reserved_nusd) == (12 + 7 - 2, 2, 30, 60)
            assert await counters.spend("2026-03-02", "2026-03-02") == [
                LedgerEntry("2026-03-02", "a", "t", "gpt", 7, 4, 30, requests=2),
                LedgerEntry("2026-03-02", "b", "-", "gpt", 2, 2, 2, requests=1)]

    asyncio.run(run())
