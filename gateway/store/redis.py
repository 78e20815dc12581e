"""`RedisStore`: the store in a Redis server, shared by every replica of the gateway on every host.

A value is a Redis string under `{prefix}{namespace}:{key}`, written with `SET` (with `PX` when it has a
lifetime, so Redis itself expires it), read with `GET`, removed with `DEL`. Redis never returns an expired
key, so there is no sweep here. Durability is Redis's own: with `appendonly yes` a write is in the
append-only file when it returns, and `appendfsync` says when that file reaches the disk (docs/configuration.md,
"The store").

Every call is bounded: a free connection of the pool (`max_connections`) is waited for within `timeout_s`, a
connection opened within `connect_timeout_s`, a command answered within `timeout_s`; a timeout is never
retried. A connection found lost (closed by a Redis that restarted, reset, refused) is replaced and the command
sent once more, at once: so the first call after Redis is back works, even on a pooled connection whose close
the event loop has not read yet. That is safe for SET, GET, DEL, SCAN and MGET, which leave the same state when
they run twice (a DEL whose first answer was lost may say False).

A command that must not run twice goes through a second pool whose connections never resend: `swap` (a compare
and set sent again after its answer was lost would find its own write and answer False) and `script` (the
governance counters' scripts, whose INCRBYs would count twice). redis-py cannot tell a command lost before it
reached Redis from one whose answer was lost after Redis ran it, so that pool fails both with
`StorageUnavailable` and leaves the choice to the caller. Its connections are checked before each use like
the other pool's, so a connection that Redis closed while idle is replaced rather than failing the call. Each pool
holds up to `max_connections`.

Every error of redis-py's, or of the socket under it, becomes `StorageUnavailable` at this boundary, with a
message safe for clients; the URL is logged and raised only with its password masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.maint_notifications import MaintNotificationsConfig

from gateway.errors import StorageUnavailable
from gateway.store.base import check_put

log = logging.getLogger("nanoroute")

T = TypeVar("T")

LOG_EVERY_S = 60.0
"""A store that keeps failing is logged once a minute, not once a request."""

_SWAP = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
"""
"""KEYS: the name. ARGV: '1' when a value is expected (else '0'), the value expected, the new value, its
lifetime in ms ('' for none). 1 when written, 0 when the live value was not the one expected."""


class RedisStore:
    """The `Store` (gateway/store/base.py) in the Redis server at `url` (`redis://[[user]:password@]host[:port][/db]`,
    `rediss://` for TLS, or `unix:///path.sock`).

    `max_value_bytes`: larger values are refused with `PayloadTooLarge`. `prefix`: put before every key, so
    that several gateways (or other programs) can share one server. `connect_timeout_s`, `timeout_s`: the
    longest a connection takes to open, and a command (or the wait for a free connection) to be answered.
    `max_connections`: the size of each of its two pools in this process. A namespace may not hold `:`, so that
    keys of two namespaces never meet.
    """

    def __init__(self, url: str, *, max_value_bytes: int = 16 << 20, prefix: str = "nanoroute:",
                 connect_timeout_s: float = 1.0, timeout_s: float = 2.0, max_connections: int = 64) -> None:
        if max_value_bytes < 1 or max_connections < 1 or not (connect_timeout_s > 0 and timeout_s > 0):
            raise ValueError("max_value_bytes and max_connections must be positive, the timeouts above 0")
        self.where = redacted(url)
        try:
            parse_url(url)
        except ValueError as exc:
            raise ValueError(f"The Redis URL {self.where} cannot be used: {exc}") from None
        self.max_value_bytes = max_value_bytes
        self.prefix = prefix
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._url = url
        self._secrets = _passwords(url)
        self._client: aioredis.Redis | None = None  # resends a command once on a lost connection
        self._once: aioredis.Redis | None = None  # never resends
        self._scripts: dict[str, AsyncScript] = {}
        self._started = self._closed = False
        self._calls = 0  # calls in flight; close() waits for them
        self._idle = asyncio.Event()
        self._idle.set()
        self._logged_at = -math.inf

    async def start(self) -> None:
        """Open the pools and PING the server, so that a wrong URL, password or a server that is down is said
        at start (StorageUnavailable) rather than at the first request. The pools stay open either way: each
        later call connects again, so the store works once the server answers."""
        if self._started or self._closed:
            raise RuntimeError("a RedisStore is started once")
        self._started = True
        client = self._client = self._pool(retries=1)
        self._once = self._pool(retries=0)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            raise StorageUnavailable(f"The store at {self.where} could not be reached: {self._safe(exc)}") from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True  # refuse new calls; those in flight finish (each within the timeouts) first
        await self._idle.wait()
        clients = (self._client, self._once)
        self._client = self._once = None
        for client in clients:
            if client is None:
                continue
            try:
                await client.aclose()
            except (RedisError, OSError) as exc:
                log.warning("closing the store at %s: %s", self.where, self._safe(exc))

    async def get(self, namespace: str, key: str) -> bytes | None:
        name = self._name(namespace, key)
        value = await self._call("read", lambda client: client.get(name))
        return cast(bytes | None, value)  # decode_responses is off: redis-py answers bytes

    async def put(self, namespace: str, key: str, value: bytes, ttl_s: float | None) -> None:
        check_put(value, ttl_s, self.max_value_bytes)
        name = self._name(namespace, key)
        px = _px(ttl_s)
        await self._call("write", lambda client: client.set(name, value, px=px))

    async def delete(self, namespace: str, key: str) -> bool:
        name = self._name(namespace, key)
        deleted = await self._call("delete", lambda client: client.delete(name))
        return bool(deleted)

    async def items(self, namespace: str) -> list[tuple[str, bytes]]:
        start = self._name(namespace, "")
        pattern = _glob_escaped(start) + "*"
        skip = len(start.encode())

        async def read(client: aioredis.Redis) -> list[tuple[str, bytes]]:
            found: dict[bytes, bytes] = {}  # SCAN may name a key twice
            cursor = 0
            while True:
                cursor, page = await client.scan(cursor, match=pattern, count=1000)
                names = cast(list[bytes], page)  # decode_responses is off: bytes
                if names:
                    values = cast(list[bytes | None], await client.mget(names))
                    found.update((n, v) for n, v in zip(names, values, strict=True) if v is not None)
                if cursor == 0:
                    return sorted((name[skip:].decode(errors="replace"), value) for name, value in found.items())

        return await self._call("read", read)

    async def swap(self, namespace: str, key: str, expected: bytes | None, value: bytes, ttl_s: float | None) -> bool:
        check_put(value, ttl_s, self.max_value_bytes)
        px = _px(ttl_s)
        args = ["0" if expected is None else "1", expected or b"", value, "" if px is None else px]
        return bool(await self.script("write", _SWAP, [self._name(namespace, key)], args))

    async def script(self, doing: str, text: str, keys: Sequence[str],
                     args: Sequence[str | bytes | int | float]) -> Any:
        """Run the Lua script `text` with `keys` and `args` (EVALSHA; the text is sent only when Redis does not
        know it yet, after a restart say) and return Redis's answer as redis-py decodes it (bytes, ints, lists).
        Atomic in Redis, and never sent twice: a connection lost before the answer raises `StorageUnavailable`,
        and whether it ran is unknown. Keys are full names: build them under `prefix`. Errors as every call's,
        `doing` saying what failed."""
        async def run(client: aioredis.Redis) -> Any:
            self._sha(client, text)  # its SHA1 computed once; the text stays client-side until NOSCRIPT asks for it
            return await self._scripts[text](keys, args, client=client)

        return await self._call(doing, run, once=True)

    async def scripts(self, doing: str, calls: Sequence[tuple[str, Sequence[str], Sequence[str | bytes | int | float]]],
                      ) -> list[Any]:
        """`script` for each (text, keys, args), in one round trip (a pipeline, not a transaction: each script is
        atomic on its own), their answers in order. A script Redis does not know yet (NOSCRIPT: it did not run)
        is loaded and sent again, alone; any other error raises `StorageUnavailable` for the whole call."""
        async def run(client: aioredis.Redis) -> list[Any]:
            shas = [self._sha(client, text) for text, _, _ in calls]
            pipe = client.pipeline(transaction=False)
            for sha, (_, keys, args) in zip(shas, calls, strict=True):
                pipe.evalsha(sha, len(keys), *keys, *args)
            answers: list[Any] = await pipe.execute(raise_on_error=False)
            for i, answer in enumerate(answers):
                if isinstance(answer, NoScriptError):
                    text, keys, args = calls[i]
                    answers[i] = await self._scripts[text](keys, args, client=client)
                elif isinstance(answer, Exception):
                    raise answer
            return answers

        return await self._call(doing, run, once=True)

    def _sha(self, client: aioredis.Redis, text: str) -> str:
        script = self._scripts.get(text)
        if script is None:
            script = self._scripts[text] = client.register_script(text)
        return str(script.sha)

    def _pool(self, retries: int) -> aioredis.Redis:
        # Maintenance notifications (Redis Enterprise's, on by default as "auto" with RESP3) are off: while they
        # are on, the pool skips its check that an idle connection was not closed by the server.
        pool = BlockingConnectionPool.from_url(
            self._url, max_connections=self.max_connections, timeout=self.timeout_s,
            socket_connect_timeout=self.connect_timeout_s, socket_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), retries, supported_errors=(RedisConnectionError,)),
            maint_notifications_config=MaintNotificationsConfig(enabled=False))
        return aioredis.Redis.from_pool(pool)

    def _name(self, namespace: str, key: str) -> str:
        if ":" in namespace:
            raise ValueError(f"a namespace may not hold ':' ({namespace!r})")
        return f"{self.prefix}{namespace}:{key}"

    async def _call(self, doing: str, command: Callable[[aioredis.Redis], Awaitable[T]], *, once: bool = False) -> T:
        """Run one command (on the pool that never resends, when `once`); redis-py's and the socket's errors become
        `StorageUnavailable` here."""
        client = self._once if once else self._client
        if client is None or self._closed:
            raise StorageUnavailable("The gateway's store is not open")
        async with self._in_flight():
            try:
                return await command(client)
            except (RedisError, OSError) as exc:
                now = time.monotonic()
                if now - self._logged_at >= LOG_EVERY_S:
                    self._logged_at = now
                    log.error("the store at %s failed to %s: %s: %s (further failures this minute are not logged)",
                              self.where, doing, type(exc).__name__, self._safe(exc))
                raise StorageUnavailable(f"The gateway's store failed to {doing}; try again later") from exc

    @contextlib.asynccontextmanager
    async def _in_flight(self) -> AsyncIterator[None]:
        self._calls += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._calls -= 1
            if not self._calls:
                self._idle.set()

    def _safe(self, exc: BaseException) -> str:
        """An error's text with the password masked, should redis-py ever quote it."""
        text = str(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _px(ttl_s: float | None) -> int | None:
    """A lifetime in whole milliseconds, rounded up so that it never ends early; an infinite one is none at all."""
    return None if ttl_s is None or math.isinf(ttl_s) else max(1, math.ceil(ttl_s * 1000))


def _glob_escaped(text: str) -> str:
    """`text` matched literally by SCAN's MATCH pattern, whatever the prefix holds."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def redacted(url: str) -> str:
    """`url` with its password (in the authority or a `password=` query parameter) replaced by `***`."""
    try:
        parts = urlsplit(url)
        shown = url
        if parts.password is not None:
            user, _, host = parts.netloc.rpartition("@")
            shown = shown.replace(parts.netloc, f"{user.partition(':')[0]}:***@{host}", 1)
    except ValueError:
        return "(a Redis URL that cannot be parsed)"
    if parts.query:
        query = "&".join("password=***" if item.partition("=")[0] == "password" else item
                         for item in parts.query.split("&"))
        shown = shown.replace(f"?{parts.query}", f"?{query}", 1)
    return shown


def _passwords(url: str) -> tuple[str, ...]:
    """The URL's password as written and as decoded, to mask in any text."""
    try:
        parts = urlsplit(url)
        found = [parts.password or "", *(v for k, v in parse_qsl(parts.query) if k == "password")]
    except ValueError:
        return ()
    return tuple({form for p in found if p for form in (p, unquote(p))})
