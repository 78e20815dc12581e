"""Counters: the rate limits, in-flight caps, budgets and ledger that every process and replica shares.

One interface, `Counters`, with two implementations over the gateway's store: `SqliteCounters` (the embedded
SQLite file, one transaction per call) and `RedisCounters` (one Lua script per call). Each call is one round
trip and atomic, so that N processes admitting at once see each other's counts.

A request of a governed key makes two calls: `admit` before any upstream is called, and `settle` once it has
ended (in the background, off the request path). What they count, per `Scope` (a key, or a team, whose limits
cap all its keys together):

requests and tokens per minute
    A sliding window over two fixed one-minute windows (Cloudflare's "sliding window counter"): the count is
    `previous * (1 - elapsed / 60) + current`, where `elapsed` is the time since the current window began.
    A request is admitted when `count + 1 <= rpm` and `tokens_count + ask.tokens <= tpm`; admitting adds 1
    and `ask.tokens` to the current window. `settle` adds `tokens_used - tokens_counted` (which may be
    negative) to the window current at settle time; a count read below 0 is 0, and a window below 0 counts as
    0 once it is the previous one (a correction lends nothing to later minutes). Each window's entry expires
    two minutes after it began. Exact within the first minute; later it assumes the previous minute's
    requests were spread evenly, which can admit slightly more or fewer than `rpm` in some 60 s span.
in flight
    A hold per admitted request (`request_id`), which `settle` removes and which lapses by itself at
    `ask.deadline` should its process die before settling. Admitted when `holds < max_in_flight`.
budget
    Per period (`period_id`): `spent` (settled costs) and `reserved` (the sum of the reserves of the holds
    alive now). Admitted while `spent + reserved < budget`: so N requests admitted at once overshoot by at
    most one reserve, plus whatever their real costs exceed their reserves. `settle` releases the hold's
    reserve and adds the real cost to the spent of the period current at settle time.

Every scope of an `Ask` is checked before anything is counted: a refusal counts nothing anywhere. Money is in
integer nano-dollars (1e-9 USD), so sums are exact. The ledger adds, per UTC day, key, team and model: requests,
prompt and completion tokens, and cost.

The maths both implementations follow is at the bottom (`sliding`, `fit_in`, `reset_in`, `refusal`, `judge`,
`verdict`), and `build_counters` picks the implementation for a store: gateway/governance/sqlite.py, redis.py.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from gateway.store.base import Store

WINDOW_S = 60.0
NANO = 1_000_000_000
"""Nano-dollars per dollar."""

Period = Literal["day", "week", "month", "total"]
Reason = Literal["requests", "tokens", "in_flight", "budget", "reserved"]
"""`budget`: spent; `reserved`: not spent, but taken by the reserves of requests in flight (which may return it)."""


def nano(usd: float) -> int:
    return round(usd * NANO)


def period_id(period: Period, now: float) -> str:
    """The budget period `now` (Unix seconds) falls in, in UTC: `d2026-12-02`, `w2026-W49` (ISO weeks, from
    Monday), `m2026-12`, or `total`."""
    if period == "total":
        return "total"
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if period == "day":
        return f"d{day.isoformat()}"
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"w{year}-W{week:02d}"
    return f"m{day.year}-{day.month:02d}"


def period_end(period: Period, now: float) -> float | None:
    """When the period `now` falls in ends (Unix seconds); None for `total`."""
    if period == "total":
        return None
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if period == "day":
        end = day + dt.timedelta(days=1)
    elif period == "week":
        end = day + dt.timedelta(days=7 - day.weekday())
    else:
        end = dt.date(day.year + (day.month == 12), day.month % 12 + 1, 1)
    return dt.datetime(end.year, end.month, end.day, tzinfo=dt.UTC).timestamp()


def ledger_day(now: float) -> str:
    """The UTC date of `now`, `2026-12-02`: Unix time counts UTC days of 86,400 s each."""
    return _day(math.floor(now / 86400.0))


@functools.lru_cache(maxsize=8)
def _day(index: int) -> str:
    """Worked out once a day, though asked once a request."""
    return (dt.date(1970, 1, 1) + dt.timedelta(days=index)).isoformat()


@dataclass(frozen=True, slots=True)
class Scope:
    """One subject of limits: a key (`key:<id>`) or a team (`team:<name>`), with what limits it. None: not
    limited in that dimension."""

    id: str
    rpm: int | None = None
    tpm: int | None = None
    max_in_flight: int | None = None
    budget_nusd: int | None = None
    period: Period = "month"


@dataclass(frozen=True, slots=True)
class Ask:
    """What `admit` is asked: may this request go on, for every scope it counts against?"""

    request_id: str
    scopes: tuple[Scope, ...]
    tokens: int
    """Counted against `tpm` now: the prompt as estimated plus the output expected (max_tokens when given)."""
    reserve_nusd: int
    """Reserved against budgets until `settle`: the request's expected cost."""
    now: float
    """Unix seconds."""
    deadline: float
    """When the hold lapses if the request is never settled (its process died)."""


@dataclass(frozen=True, slots=True)
class Window:
    """A scope's count in a sliding window, for the x-ratelimit-* headers: after this request when admitted,
    without it when refused."""

    limit: int
    remaining: int
    reset_s: float
    """Seconds until the count is back to 0 if nothing more is admitted."""


@dataclass(frozen=True, slots=True)
class Verdict:
    admitted: bool
    scope: str | None = None
    """The scope that refused (its id), when refused."""
    reason: Reason | None = None
    retry_after_s: float | None = None
    """Refused for a rate or in-flight cap: in how many seconds a request like it may fit again. None for a
    budget (until the period ends; `period_end`), for a request that never fits (more tokens than the tpm),
    and when admitted."""
    requests: Window | None = None
    """The first scope's (the key's) request window, when it has an rpm."""
    tokens: Window | None = None
    """The first scope's token window, when it has a tpm."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """A request that `admit` let in has ended, whatever its outcome."""

    request_id: str
    scopes: tuple[Scope, ...]
    tokens_counted: int
    """`Ask.tokens`, as counted at admission."""
    tokens_used: int
    """The prompt and completion tokens it really used (0 when it failed before any upstream answered)."""
    cost_nusd: int
    now: float
    ledger: LedgerEntry | None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    day: str
    """UTC date, `2026-12-02`."""
    key: str
    """The key's id; `-` for a request without one."""
    team: str
    """The team's name; `-` for none."""
    model: str
    """The model that answered; `-` for none."""
    prompt_tokens: int
    completion_tokens: int
    cost_nusd: int
    requests: int = 1


@dataclass(frozen=True, slots=True)
class ScopeUsage:
    """A scope's counts now, for the admin API."""

    requests: float
    """In the sliding window."""
    tokens: float
    in_flight: int
    spent_nusd: int
    """In the current period of its budget (of `Scope.period`)."""
    reserved_nusd: int


class Counters(Protocol):
    async def admit(self, ask: Ask) -> Verdict:
        """Check every scope, and count the request against each only when all admit it. Raises
        `StorageUnavailable` when the store cannot be reached or fails (nothing counted)."""

    async def admit_many(self, asks: Sequence[Ask]) -> list[Verdict]:
        """`admit` for each ask in turn, in one round trip: each sees the ones before it counted."""

    async def settle(self, settlement: Settlement) -> None:
        """Release the request's hold, correct its tokens, add its cost to each scope's period, and add it to
        the ledger. Raises `StorageUnavailable`; the caller keeps it and tries again."""

    async def record(self, entry: LedgerEntry) -> None:
        """Add a request that was not admitted through `admit` (an ungoverned key) to the ledger alone."""

    async def settle_many(self, items: Sequence[Settlement | LedgerEntry]) -> None:
        """`settle` each settlement and `record` each ledger entry, in one round trip. Raises `StorageUnavailable`
        (then none was written, or for Redis possibly some: each is counted once however often it is sent)."""

    async def usage(self, scopes: Sequence[Scope], now: float) -> list[ScopeUsage]:
        """Each scope's counts now."""

    async def spend(self, since: str, until: str) -> list[LedgerEntry]:
        """The ledger's rows from day `since` to day `until` (both included, `YYYY-MM-DD`): one per (day, key,
        team, model), its numbers the sums of what was added. Sorted by day, key, team, model."""



# The maths both implementations follow: SQLite runs these functions inside its transaction; Redis's script checks
# with the same formula, in the same order of operations (so the same doubles), and these turn its counts into
# the verdict.

IN_FLIGHT_RETRY_S = 1.0
"""`Verdict.retry_after_s` for an in-flight cap: holds end when requests do, which nothing here can foresee."""
SPENT_KEPT_S: dict[Period, float] = {"day": 2 * 86400.0, "week": 8 * 86400.0, "month": 31 * 86400.0}
"""How long a period's spent is kept after the period ends (for a replica whose clock is behind); `total` for ever."""
HOLD_KEPT_S = 60.0
"""How long a scope's holds are kept after the last deadline among them, when nothing else touches them."""


@dataclass(frozen=True, slots=True)
class Reading:
    """A scope's counts in the store at some `now`, before the request asked about is counted."""

    requests: tuple[int, int]
    """The previous and the current minute's requests."""
    tokens: tuple[int, int]
    """The previous and the current minute's tokens (the current one may be below 0 after corrections)."""
    in_flight: int
    spent_nusd: int
    reserved_nusd: int


def window_at(now: float) -> tuple[int, float]:
    """The index of the one-minute window `now` falls in (`now // 60`), and the seconds since it began."""
    index = math.floor(now / WINDOW_S)
    return index, now - index * WINDOW_S


def sliding(previous: int, current: int, elapsed: float) -> float:
    """The sliding window's count: `previous * (1 - elapsed / 60) + current`, never below 0. A window's balance
    below 0 (tokens corrected down for requests counted in an earlier window) lowers the count only while it is
    the current window: as the previous one it counts as 0, so a correction never lends tokens to later minutes."""
    return max(0.0, max(previous, 0) * (1.0 - elapsed / WINDOW_S) + current)


def fit_in(previous: int, current: int, elapsed: float, need: int, limit: int) -> float | None:
    """Seconds from now until `need` more fit under `limit` (`sliding + need <= limit`) if nothing more is
    counted: 0 when they fit now, None when they never will (`need > limit`)."""
    if need > limit:
        return None
    if sliding(previous, current, elapsed) + need <= limit:
        return 0.0
    kept = max(previous, 0)
    if kept > 0:  # the previous minute's share decays linearly until the current one ends
        t = WINDOW_S * (kept + current + need - limit) / kept - elapsed
        if t < WINDOW_S - elapsed:
            return max(t, 0.0)
    ending = max(current, 0)  # the previous minute, once the current one has ended
    later = 0.0 if ending + need <= limit else WINDOW_S * (ending + need - limit) / ending
    return WINDOW_S - elapsed + later


def reset_in(previous: int, current: int, elapsed: float) -> float:
    """Seconds from now until the sliding count is 0 if nothing more is counted."""
    if current > 0:  # counted until the end of the next minute
        return 2 * WINDOW_S - elapsed
    kept = max(previous, 0)
    if kept == 0:
        return 0.0
    return max(0.0, WINDOW_S * (1 + current / kept) - elapsed)


def window(previous: int, current: int, elapsed: float, limit: int) -> Window:
    """The `Window` of a scope whose minutes hold `previous` and `current`."""
    remaining = max(0, math.floor(limit - sliding(previous, current, elapsed)))
    return Window(limit=limit, remaining=remaining, reset_s=reset_in(previous, current, elapsed))


def refusal(scope: Scope, reading: Reading, ask: Ask, elapsed: float) -> Reason | None:
    """Why `scope` refuses `ask` (requests, tokens, in_flight, budget, reserved: the first that does), or None."""
    if scope.rpm is not None and sliding(*reading.requests, elapsed) + 1 > scope.rpm:
        return "requests"
    if scope.tpm is not None and sliding(*reading.tokens, elapsed) + ask.tokens > scope.tpm:
        return "tokens"
    if scope.max_in_flight is not None and reading.in_flight >= scope.max_in_flight:
        return "in_flight"
    if scope.budget_nusd is not None and reading.spent_nusd >= scope.budget_nusd:
        return "budget"
    if scope.budget_nusd is not None and reading.spent_nusd + reading.reserved_nusd >= scope.budget_nusd:
        return "reserved"
    return None


def counted(reading: Reading, ask: Ask) -> Reading:
    """The reading once `ask` is admitted: what the next ask of the same batch sees."""
    previous, current = reading.requests
    tokens_previous, tokens_current = reading.tokens
    return Reading(requests=(previous, current + 1), tokens=(tokens_previous, tokens_current + ask.tokens),
                   in_flight=reading.in_flight + 1, spent_nusd=reading.spent_nusd,
                   reserved_nusd=reading.reserved_nusd + ask.reserve_nusd)


def judge(ask: Ask, readings: Sequence[Reading], elapsed: float) -> Verdict:
    """The verdict on `ask`, given each of its scopes' readings (in order): refused by the first scope that
    refuses it."""
    for index, (scope, reading) in enumerate(zip(ask.scopes, readings, strict=True)):
        reason = refusal(scope, reading, ask, elapsed)
        if reason is not None:
            return verdict(ask, readings, elapsed, (index, reason))
    return verdict(ask, readings, elapsed, None)


def verdict(ask: Ask, readings: Sequence[Reading], elapsed: float, refused: tuple[int, Reason] | None) -> Verdict:
    """The `Verdict` once it is known which scope refused, and why (None: admitted): the first scope's windows,
    counting this request when admitted, and when a refused request may fit again."""
    requests = tokens = None
    if ask.scopes:
        first, reading = ask.scopes[0], readings[0]
        counted = refused is None
        if first.rpm is not None:
            previous, current = reading.requests
            requests = window(previous, current + (1 if counted else 0), elapsed, first.rpm)
        if first.tpm is not None:
            previous, current = reading.tokens
            tokens = window(previous, current + (ask.tokens if counted else 0), elapsed, first.tpm)
    if refused is None:
        return Verdict(admitted=True, requests=requests, tokens=tokens)
    index, reason = refused
    scope, reading = ask.scopes[index], readings[index]
    retry: float | None = None
    if reason == "requests" and scope.rpm is not None:
        retry = fit_in(*reading.requests, elapsed, 1, scope.rpm)
    elif reason == "tokens" and scope.tpm is not None:
        retry = fit_in(*reading.tokens, elapsed, ask.tokens, scope.tpm)
    elif reason in ("in_flight", "reserved"):
        retry = IN_FLIGHT_RETRY_S
    return Verdict(admitted=False, scope=scope.id, reason=reason, retry_after_s=retry, requests=requests,
                   tokens=tokens)


def usage_of(reading: Reading, elapsed: float) -> ScopeUsage:
    return ScopeUsage(requests=sliding(*reading.requests, elapsed), tokens=sliding(*reading.tokens, elapsed),
                      in_flight=reading.in_flight, spent_nusd=reading.spent_nusd, reserved_nusd=reading.reserved_nusd)


def spent_until(period: Period, now: float) -> float | None:
    """Until when the spent of the period `now` falls in is kept (`SPENT_KEPT_S` after its end); None: for ever."""
    end = period_end(period, now)
    return None if end is None else end + SPENT_KEPT_S[period]


def ledger_days(since: str, until: str) -> list[str]:
    """The days from `since` to `until`, both included (`YYYY-MM-DD`); ValueError for a day that is not one."""
    first, last = dt.date.fromisoformat(since), dt.date.fromisoformat(until)
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def build_counters(store: Store) -> Counters:
    """The counters kept in `store`: one Lua script per call for a `RedisStore`, one SQLite transaction per call
    for a `SqliteStore`. Nothing to start: each makes what it needs at its first call."""
    from gateway.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        from gateway.governance.sqlite import SqliteCounters

        return SqliteCounters(store)
    # Imported only here: redis-py takes ~60 ms to import, which a gateway on SQLite need not pay.
    from gateway.store.redis import RedisStore

    if isinstance(store, RedisStore):
        from gateway.governance.redis import RedisCounters

        return RedisCounters(store)
    raise TypeError(f"no counters for a store of type {type(store).__name__}")
