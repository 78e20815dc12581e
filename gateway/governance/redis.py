"""`RedisCounters`: the governance counters in the `RedisStore`'s server, one Lua script per call.

Each call is one EVALSHA (`RedisStore.script`): Redis runs a script alone, so every replica's admits see each
other's counts, and a refusal writes nothing. A script is never sent twice: one whose answer was lost raises
`StorageUnavailable` rather than risk counting twice. Times are the caller's (`Ask.now`, `Settlement.now`), never
Redis's clock, so that both stores behave alike. The keys, under the store's prefix and `counters:` (as if a
namespace of the store's)::

    rl:r:{minute}:{scope}   requests in that minute (`now // 60`); expires 2 minutes after the minute began
    rl:t:{minute}:{scope}   tokens, likewise (below 0 after corrections down)
    hold:{scope}            ZSET: request id -> deadline of each hold
    hold-reserve:{scope}    HASH: request id -> its reserve in nano-dollars
    hold-sum:{scope}        the sum of that hash, so that a budget check is O(1)
                            (the three expire together, `HOLD_KEPT_S` after the latest deadline)
    settled:{request id}    marks a settled request for `SETTLED_S`, so that a settlement sent again after its
                            answer was lost (the governor retries it) is not counted twice
    spent:{period}:{scope}  settled costs of a period (`d2026-12-02`...); expires `SPENT_KEPT_S` after it ends
    ledger:{day}            HASH: `{key}\\x1f{team}\\x1f{model}\\x1f{requests|prompt|completion|cost}` -> sum; kept

Money and tokens are integers (INCRBY, HINCRBY). Lua's numbers are doubles, exact below 2**53: nano-dollars
up to about $9 million a scope and period. The checks use counters.py's formula in the same order of
operations, so a verdict is the one SQLite would give; the script answers the counts it read, and counters.py
turns them into the `Verdict`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from gateway.governance.counters import (
    HOLD_KEPT_S,
    WINDOW_S,
    Ask,
    LedgerEntry,
    Reading,
    Reason,
    Scope,
    ScopeUsage,
    Settlement,
    Verdict,
    ledger_days,
    period_id,
    spent_until,
    usage_of,
    verdict,
    window_at,
)
from gateway.store.redis import RedisStore

Call = tuple[str, list[str], list[str | int | float]]
"""A script's text, keys and arguments, for `RedisStore.scripts`."""
SEP = "\x1f"
"""Between a ledger field's parts: a key, team or model may not hold it."""
_REASONS: tuple[Reason, ...] = ("requests", "tokens", "in_flight", "budget", "reserved")
_KEYS_A_SCOPE = 8
_ANSWERS_A_SCOPE = 7

# Reads a scope's counts (KEYS[k+1..k+8]: requests previous/current, tokens previous/current, holds, reserves,
# reserved, spent) after letting its lapsed holds go, into out[o+1..o+7].
_READ = """
local function read(k, now, out, o)
  local holds, reserves, reserved = KEYS[k + 5], KEYS[k + 6], KEYS[k + 7]
  while true do
    local lapsed = redis.call('ZRANGEBYSCORE', holds, '-inf', now, 'LIMIT', 0, 1000)
    if #lapsed == 0 then break end
    local freed = 0
    for _, r in ipairs(redis.call('HMGET', reserves, unpack(lapsed))) do freed = freed + (tonumber(r) or 0) end
    redis.call('ZREM', holds, unpack(lapsed))
    redis.call('HDEL', reserves, unpack(lapsed))
    redis.call('DECRBY', reserved, string.format('%d', freed))
  end
  local v = redis.call('MGET', KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 8], reserved)
  for i = 1, 4 do out[o + i] = tonumber(v[i]) or 0 end
  out[o + 5] = redis.call('ZCARD', holds)
  out[o + 6] = tonumber(v[5]) or 0
  out[o + 7] = tonumber(v[6]) or 0
end
"""

_ADMIT = _READ + """
-- ARGV: now, elapsed, tokens, reserve, deadline, request id, window ms, hold ms; then a scope's
-- rpm, tpm, max in flight, budget ('' for none) for each scope.
local n = #KEYS / 8
local now, tokens = ARGV[1], tonumber(ARGV[3])
local weight = 1.0 - tonumber(ARGV[2]) / 60.0
local out = {0, 0}
for s = 0, n - 1 do read(s * 8, now, out, 2 + s * 7) end
for s = 0, n - 1 do
  local o, a = 2 + s * 7, 8 + s * 4
  local rpm, tpm, cap, budget = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]),
    tonumber(ARGV[a + 4])
  local status = 0
  if rpm and math.max(0.0, math.max(out[o + 1], 0) * weight + out[o + 2]) + 1 > rpm then status = 1
  elseif tpm and math.max(0.0, math.max(out[o + 3], 0) * weight + out[o + 4]) + tokens > tpm then status = 2
  elseif cap and out[o + 5] >= cap then status = 3
  elseif budget and out[o + 6] >= budget then status = 4
  elseif budget and out[o + 6] + out[o + 7] >= budget then status = 5 end
  if status > 0 then
    out[1], out[2] = status, s
    return out
  end
end
local rid, reserve = ARGV[6], tonumber(ARGV[4])
for s = 0, n - 1 do
  local k = s * 8
  redis.call('INCR', KEYS[k + 2])
  redis.call('PEXPIRE', KEYS[k + 2], ARGV[7])
  redis.call('INCRBY', KEYS[k + 4], ARGV[3])
  redis.call('PEXPIRE', KEYS[k + 4], ARGV[7])
  local old = tonumber(redis.call('HGET', KEYS[k + 6], rid)) or 0
  redis.call('ZADD', KEYS[k + 5], ARGV[5], rid)
  redis.call('HSET', KEYS[k + 6], rid, ARGV[4])
  redis.call('INCRBY', KEYS[k + 7], string.format('%d', reserve - old))
  if redis.call('PTTL', KEYS[k + 5]) < tonumber(ARGV[8]) then
    for i = 5, 7 do redis.call('PEXPIRE', KEYS[k + i], ARGV[8]) end
  end
end
return out
"""
"""KEYS: 8 a scope (`_scope_keys`). Answers: status (0 admitted, else 1 + the index of the reason in
`_REASONS`), the index of the scope that refused, then 7 counts a scope as read (`Reading`'s fields)."""

_USAGE = _READ + """
local out = {}
for s = 0, #KEYS / 8 - 1 do read(s * 8, ARGV[1], out, s * 7) end
return out
"""

SETTLED_S = 600
"""How long a settled request is remembered: longer than the governor waits between retries of one whose
answer was lost (a second, or the length of an outage that began just then, up to ten minutes)."""

_SETTLE = """
-- ARGV: request id, tokens correction, cost, window ms, number of scopes, then each scope's spent ms ('' for
-- none); then, when KEYS ends with a ledger, its field prefix, requests, prompt, completion, cost; then, with
-- scopes, the name of the request's settled marker last.
local rid, n = ARGV[1], tonumber(ARGV[5])
if n > 0 and not redis.call('SET', ARGV[#ARGV], 1, 'NX', 'PX', SETTLED_MS) then
  return 0  -- settled already: a retry of a settlement whose answer was lost
end
for s = 0, n - 1 do
  local k = s * 5
  local reserve = redis.call('HGET', KEYS[k + 3], rid)
  if reserve then
    redis.call('HDEL', KEYS[k + 3], rid)
    redis.call('DECRBY', KEYS[k + 4], reserve)
  end
  redis.call('ZREM', KEYS[k + 2], rid)
  if ARGV[2] ~= '0' then
    redis.call('INCRBY', KEYS[k + 1], ARGV[2])
    redis.call('PEXPIRE', KEYS[k + 1], ARGV[4])
  end
  if ARGV[3] ~= '0' then
    redis.call('INCRBY', KEYS[k + 5], ARGV[3])
    if ARGV[6 + s] ~= '' then redis.call('PEXPIRE', KEYS[k + 5], ARGV[6 + s]) end
  end
end
if #KEYS > n * 5 then
  local ledger, field, a = KEYS[n * 5 + 1], ARGV[6 + n], 6 + n
  redis.call('HINCRBY', ledger, field .. 'requests', ARGV[a + 1])
  redis.call('HINCRBY', ledger, field .. 'prompt', ARGV[a + 2])
  redis.call('HINCRBY', ledger, field .. 'completion', ARGV[a + 3])
  redis.call('HINCRBY', ledger, field .. 'cost', ARGV[a + 4])
end
return 1
""".replace("SETTLED_MS", str(SETTLED_S * 1000))
"""KEYS: 5 a scope (tokens window now, holds, reserves, reserved, spent), then the ledger's day when there is an
entry. With no scope, it adds to the ledger alone (`record`)."""

_SPEND = """
local out = {}
for i, day in ipairs(KEYS) do out[i] = redis.call('HGETALL', day) end
return out
"""

class RedisCounters:
    """The `Counters` (gateway/governance/counters.py) in `store`'s server."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self._root = f"{store.prefix}counters:"

    async def admit(self, ask: Ask) -> Verdict:
        return (await self.admit_many([ask]))[0]

    async def admit_many(self, asks: Sequence[Ask]) -> list[Verdict]:
        """One script per ask, all in one pipeline: one round trip for the batch."""
        answers = await self.store.scripts("count requests", [self._admit(ask) for ask in asks])
        verdicts = []
        for ask, (status, index, *counts) in zip(asks, answers, strict=True):
            _, elapsed = window_at(ask.now)
            readings = _readings(counts, len(ask.scopes))
            verdicts.append(verdict(ask, readings, elapsed, None if status == 0 else (index, _REASONS[status - 1])))
        return verdicts

    def _admit(self, ask: Ask) -> Call:
        minute, elapsed = window_at(ask.now)
        keys: list[str] = []
        args: list[str | int | float] = [ask.now, elapsed, ask.tokens, ask.reserve_nusd, ask.deadline, ask.request_id,
                                         _window_ms(minute, ask.now),
                                         max(1, math.ceil((ask.deadline - ask.now + HOLD_KEPT_S) * 1000))]
        for scope in ask.scopes:
            keys += self._scope_keys(scope, minute, ask.now)
            args += [_limit(scope.rpm), _limit(scope.tpm), _limit(scope.max_in_flight), _limit(scope.budget_nusd)]
        return _ADMIT, keys, args

    async def settle(self, settlement: Settlement) -> None:
        await self.settle_many([settlement])

    async def record(self, entry: LedgerEntry) -> None:
        await self.settle_many([entry])

    async def settle_many(self, items: Sequence[Settlement | LedgerEntry]) -> None:
        """One script per item, all in one pipeline. Sent again after a failure, a settlement already written
        counts once (its settled marker); a ledger entry alone would count twice, which only a lost answer
        followed by a retry can cause."""
        await self.store.scripts("settle requests", [self._settle(item) for item in items])

    def _settle(self, item: Settlement | LedgerEntry) -> Call:
        keys: list[str] = []
        if isinstance(item, LedgerEntry):
            args: list[str | int | float] = ["", 0, 0, 0, 0]
            self._add_ledger(item, keys, args)
            return _SETTLE, keys, args
        minute, _ = window_at(item.now)
        now = item.now
        spent_ms: list[str | int | float] = []
        for scope in item.scopes:
            name = self._scope_keys(scope, minute, now)
            keys += [name[3], *name[4:]]
            until = spent_until(scope.period, now)
            spent_ms.append("" if until is None else max(1, math.ceil((until - now) * 1000)))
        args = [item.request_id, item.tokens_used - item.tokens_counted, item.cost_nusd, _window_ms(minute, now),
                len(item.scopes), *spent_ms]
        if item.ledger is not None:
            self._add_ledger(item.ledger, keys, args)
        if item.scopes:
            args.append(f"{self._root}settled:{item.request_id}")
        return _SETTLE, keys, args

    async def usage(self, scopes: Sequence[Scope], now: float) -> list[ScopeUsage]:
        minute, elapsed = window_at(now)
        keys = [name for scope in scopes for name in self._scope_keys(scope, minute, now)]
        counts = await self.store.script("read the counters", _USAGE, keys, [now])
        return [usage_of(reading, elapsed) for reading in _readings(counts, len(scopes))]

    async def spend(self, since: str, until: str) -> list[LedgerEntry]:
        days = ledger_days(since, until)
        if not days:
            return []
        answer = await self.store.script("read the ledger", _SPEND, [f"{self._root}ledger:{day}" for day in days], [])
        found: list[LedgerEntry] = []
        for day, flat in zip(days, answer, strict=True):
            rows: dict[tuple[str, str, str], dict[str, int]] = {}
            for i in range(0, len(flat), 2):
                key, team, model, what = flat[i].decode().split(SEP)
                rows.setdefault((key, team, model), {})[what] = int(flat[i + 1])
            found += [LedgerEntry(day=day, key=key, team=team, model=model, requests=sums.get("requests", 0),
                                  prompt_tokens=sums.get("prompt", 0), completion_tokens=sums.get("completion", 0),
                                  cost_nusd=sums.get("cost", 0))
                      for (key, team, model), sums in sorted(rows.items())]
        return found

    def _scope_keys(self, scope: Scope, minute: int, now: float) -> list[str]:
        root, id_ = self._root, scope.id
        return [f"{root}rl:r:{minute - 1}:{id_}", f"{root}rl:r:{minute}:{id_}", f"{root}rl:t:{minute - 1}:{id_}",
                f"{root}rl:t:{minute}:{id_}", f"{root}hold:{id_}", f"{root}hold-reserve:{id_}", f"{root}hold-sum:{id_}",
                f"{root}spent:{period_id(scope.period, now)}:{id_}"]

    def _add_ledger(self, entry: LedgerEntry, keys: list[str], args: list[str | int | float]) -> None:
        if any(SEP in name for name in (entry.key, entry.team, entry.model)):
            raise ValueError(f"a ledger's key, team and model may not hold {SEP!r}")
        keys.append(f"{self._root}ledger:{entry.day}")
        args += [f"{entry.key}{SEP}{entry.team}{SEP}{entry.model}{SEP}", entry.requests, entry.prompt_tokens,
                 entry.completion_tokens, entry.cost_nusd]


def _limit(value: int | None) -> str | int:
    return "" if value is None else value


def _window_ms(minute: int, now: float) -> int:
    """Until 2 minutes after the minute began, in ms from now (the caller's now, not Redis's clock)."""
    return max(1, math.ceil(((minute * WINDOW_S + 2 * WINDOW_S) - now) * 1000))


def _readings(counts: Sequence[Any], scopes: int) -> list[Reading]:
    return [Reading(requests=(counts[o], counts[o + 1]), tokens=(counts[o + 2], counts[o + 3]),
                    in_flight=counts[o + 4], spent_nusd=counts[o + 5], reserved_nusd=counts[o + 6])
            for o in range(0, scopes * _ANSWERS_A_SCOPE, _ANSWERS_A_SCOPE)]
