"""RedisStore against a real redis-server: values, namespaces, lifetimes, limits, replicas, restarts, failures."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import pytest
import redis

from gateway.errors import PayloadTooLarge, StorageUnavailable
from gateway.settings import Settings
from gateway.store import SqliteStore, Store, build_store
from gateway.store.redis import RedisStore, redacted
from tests.conftest import StartRedis
from tests.fakes.redis import RedisServer

FAST_S = 3.0
"""A call to a Redis that is down returns within this, with the default timeouts (1 s connect, 2 s command)."""


@contextlib.asynccontextmanager
async def opened(store: RedisStore) -> AsyncIterator[RedisStore]:
    await store.start()
    try:
        yield store
    finally:
        await store.close()


@contextlib.contextmanager
def other_client(server: RedisServer) -> Iterator[redis.Redis]:
    """The server as another program sees it (redis-py's blocking client, not the store)."""
    with redis.Redis.from_url(server.url, socket_timeout=5) as client:
        yield client


async def failing(call: Coroutine[Any, Any, object]) -> tuple[StorageUnavailable, float]:
    """Await `call`, which must raise StorageUnavailable; the error and how long it took."""
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as raised:
        await call
    return raised.value, time.monotonic() - started


def test_put_get_delete(redis_server: RedisServer) -> None:
    async def run() -> None:
        async with opened(RedisStore(redis_server.url)) as store:
            assert await store.get("responses", "a") is None
            await store.put("responses", "a", b"one", None)
            assert await store.get("responses", "a") == b"one"
            await store.put("responses", "a", b"\x00\xfftwo", None)  # replaces; bytes, not text
            assert await store.get("responses", "a") == b"\x00\xfftwo"
            assert await store.delete("responses", "a") is True
            assert await store.get("responses", "a") is None
            assert await store.delete("responses", "a") is False

    asyncio.run(run())


def test_keys_are_prefix_namespace_key_and_namespaces_do_not_see_each_other(redis_server: RedisServer) -> None:
    async def run() -> None:
        async with opened(RedisStore(redis_server.url)) as store, \
                opened(RedisStore(redis_server.url, prefix="other:")) as other:
            await store.put("responses", "alice:resp_1", b"response", None)
            await store.put("budgets", "alice:resp_1", b"budget", None)
            assert await store.get("responses", "alice:resp_1") == b"response"
            assert await store.get("budgets", "alice:resp_1") == b"budget"
            assert await store.delete("budgets", "alice:resp_1") is True
            assert await store.get("responses", "alice:resp_1") == b"response"
            assert await store.get("keys", "alice:resp_1") is None
            assert await other.get("responses", "alice:resp_1") is None  # another prefix, another gateway
            with pytest.raises(ValueError, match="may not hold ':'"):  # "a:b"+"c" would meet "a"+"b:c"
                await store.put("responses:alice", "resp_1", b"v", None)

    asyncio.run(run())
    with other_client(redis_server) as client:
        assert client.keys("*") == [b"nanoroute:responses:alice:resp_1"]


def test_lifetimes_are_redis_expiries(redis_server: RedisServer) -> None:
    async def run() -> None:
        async with opened(RedisStore(redis_server.url)) as store:
            await store.put("responses", "short", b"v", 0.1)
            await store.put("responses", "gone", b"v", 0.1)
            await store.put("responses", "kept", b"v", 0.1)
            await store.put("responses", "kept", b"v", None)  # a new write replaces the lifetime too
            await store.put("responses", "minute", b"v", 60.0)
            await store.put("responses", "tiny", b"v", 0.0001)  # rounded up to 1 ms, never to "no lifetime"
            await store.put("responses", "endless", b"v", float("inf"))
            assert await store.get("responses", "short") == b"v"
            with other_client(redis_server) as client:
                assert 59_000 < client.pttl("nanoroute:responses:minute") <= 60_000
                assert client.pttl("nanoroute:responses:kept") == -1  # -1: no expiry
                assert client.pttl("nanoroute:responses:endless") == -1
            await asyncio.sleep(0.2)
            assert await store.get("responses", "short") is None
            assert await store.get("responses", "tiny") is None
            assert await store.delete("responses", "gone") is False  # expired: nothing alive to delete
            assert await store.get("responses", "kept") == b"v"
            assert await store.get("responses", "minute") == b"v"

    asyncio.run(run())


def test_a_lifetime_must_be_positive(redis_server: RedisServer) -> None:
    async def run() -> None:
        async with opened(RedisStore(redis_server.url)) as store:
            for ttl in (0.0, -1.0, float("nan")):
                with pytest.raises(ValueError, match="ttl_s"):
                    await store.put("responses", "k", b"v", ttl)
            assert await store.get("responses", "k") is None

    asyncio.run(run())


def test_a_value_over_the_limit_is_refused(redis_server: RedisServer) -> None:
    async def run() -> None:
        async with opened(RedisStore(redis_server.url, max_value_bytes=1024)) as store:
            await store.put("responses", "fits", b"x" * 1024, None)
            with pytest.raises(PayloadTooLarge, match="1025 bytes, over the store's limit of 1024"):
                await store.put("responses", "big", b"x" * 1025, None)
            assert await store.get("responses", "big") is None
            assert await store.get("responses", "fits") == b"x" * 1024

    asyncio.run(run())


@pytest.mark.parametrize("max_connections", [64, 4])
def test_concurrent_puts_all_land(redis_server: RedisServer, max_connections: int) -> None:
    async def run() -> None:  # with 4 connections, 196 of the calls wait for one to come free
        async with opened(RedisStore(redis_server.url, max_connections=max_connections)) as store:
            await asyncio.gather(*(store.put("responses", f"k{i}", f"v{i}".encode(), 60.0) for i in range(200)))
            values = await asyncio.gather(*(store.get("responses", f"k{i}") for i in range(200)))
            assert values == [f"v{i}".encode() for i in range(200)]
            with other_client(redis_server) as client:
                opened_by_store = len(client.client_list()) - 1  # less this client
            assert 1 <= opened_by_store <= max_connections

    asyncio.run(run())


def test_two_replicas_see_each_others_writes_at_once(redis_server: RedisServer) -> None:
    async def run() -> None:
        async with opened(RedisStore(redis_server.url)) as a, opened(RedisStore(redis_server.url)) as b:
            await a.put("responses", "k", b"from a", 60.0)
            assert await b.get("responses", "k") == b"from a"
            await b.put("responses", "k", b"from b", None)
            assert await a.get("responses", "k") == b"from b"
            assert await a.delete("responses", "k") is True
            assert await b.get("responses", "k") is None
            assert await b.delete("responses", "k") is False

    asyncio.run(run())


def test_values_and_lifetimes_survive_a_redis_kill(redis_server: RedisServer) -> None:
    """SIGKILL, so Redis has no chance to flush on the way out: with `appendfsync always`, what `put` returned
    from is on the disk already. The store that was open goes on working after the restart."""

    async def run() -> None:
        async with opened(RedisStore(redis_server.url)) as store:
            await store.put("responses", "forever", b"\x00\xffbinary", None)
            await store.put("responses", "for-a-minute", b"soon gone", 60.0)
            await store.put("responses", "deleted", b"v", None)
            await store.delete("responses", "deleted")
            redis_server.restart()  # kill -9, then the same port and folder
            assert await store.get("responses", "forever") == b"\x00\xffbinary"  # the same instance, reconnected
            assert await store.get("responses", "for-a-minute") == b"soon gone"
            assert await store.get("responses", "deleted") is None
        with other_client(redis_server) as client:
            assert 0 < client.pttl("nanoroute:responses:for-a-minute") <= 60_000
        async with opened(RedisStore(redis_server.url)) as fresh:
            assert await fresh.get("responses", "forever") == b"\x00\xffbinary"

    asyncio.run(run())


def test_a_redis_that_is_down_fails_fast_and_the_store_recovers(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        async with opened(RedisStore(redis_server.url)) as store:
            await store.put("responses", "k", b"v", None)
            redis_server.kill()
            for call in (store.get("responses", "k"), store.put("responses", "k", b"w", None),
                         store.delete("responses", "k"), store.get("responses", "k")):
                error, took = await failing(call)
                assert took < FAST_S
                assert error.status == 503 and str(error).endswith("try again later")
                assert isinstance(error.__cause__, redis.RedisError)
            redis_server.start()
            assert await store.get("responses", "k") == b"v"  # the very next call works
            await store.put("responses", "k", b"after", None)
            assert await store.get("responses", "k") == b"after"

    with caplog.at_level(logging.ERROR, logger="nanoroute"):
        asyncio.run(run())
    logged = [r.getMessage() for r in caplog.records if "failed to" in r.getMessage()]
    assert len(logged) == 1, logged  # once a minute, not once a call
    assert f"127.0.0.1:{redis_server.port}" in logged[0] and "ConnectionError" in logged[0]


def test_a_redis_that_does_not_answer_times_out(redis_server: RedisServer) -> None:
    """SIGSTOP: the kernel accepts the connection and takes the command; nothing ever answers."""

    async def run() -> None:
        async with opened(RedisStore(redis_server.url, connect_timeout_s=0.2, timeout_s=0.5)) as store:
            await store.put("responses", "k", b"v", None)
            redis_server.pause()
            try:
                for call in (store.get("responses", "k"), store.put("responses", "k", b"w", None)):
                    error, took = await failing(call)
                    assert 0.4 < took < 2.0, took  # the command's timeout ended it
                    assert isinstance(error.__cause__, redis.TimeoutError)
            finally:
                redis_server.resume()
            assert await store.get("responses", "k") == b"v"

    asyncio.run(run())


def test_start_says_fast_that_redis_is_unreachable_and_the_store_works_once_it_answers(
        redis_server: RedisServer) -> None:
    redis_server.kill()
    store = RedisStore(redis_server.url)

    async def run() -> None:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match=f"The store at {redis_server.url} could not be reached"):
            await store.start()
        assert time.monotonic() - started < FAST_S
        error, took = await failing(store.get("responses", "k"))
        assert took < FAST_S and str(error).endswith("try again later")
        redis_server.start()  # the gateway kept serving; the store works from the next call
        await store.put("responses", "k", b"v", None)
        assert await store.get("responses", "k") == b"v"
        await store.close()

    asyncio.run(run())


def test_the_password_never_appears_in_errors_or_logs(start_redis: StartRedis,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    password = "s3cret-Pa55word"
    server = start_redis(password=password)
    masked = f"redis://:***@127.0.0.1:{server.port}/0"
    texts: list[str] = []

    def seen(error: BaseException) -> None:
        texts.extend([str(error), repr(error), "".join(traceback.format_exception(error))])

    async def run() -> None:
        wrong = RedisStore(server.url.replace(password, "not-the-password"))
        with pytest.raises(StorageUnavailable, match=rf"The store at redis://:\*\*\*@127.0.0.1:{server.port}/0 "
                                                     "could not be reached") as refused:
            await wrong.start()
        seen(refused.value)
        assert wrong.where == masked
        async with opened(RedisStore(server.url)) as store:
            assert store.where == masked
            await store.put("responses", "k", b"v", None)
            assert await store.get("responses", "k") == b"v"
            server.kill()
            error, _ = await failing(store.get("responses", "k"))
            seen(error)

    with caplog.at_level(logging.DEBUG):  # every logger, redis-py's included
        asyncio.run(run())
    texts.extend(r.getMessage() for r in caplog.records)
    assert any(masked in t for t in texts)
    assert not [t for t in texts if password in t]


def test_close_waits_for_calls_in_flight_and_then_refuses_calls(redis_server: RedisServer) -> None:
    async def run() -> None:
        store = RedisStore(redis_server.url, max_connections=4)
        await store.start()
        puts = [asyncio.create_task(store.put("responses", f"k{i}", b"v" * 100_000, None)) for i in range(50)]
        await asyncio.sleep(0)  # each put has started
        await store.close()
        assert all(p.done() and p.exception() is None for p in puts)
        with pytest.raises(StorageUnavailable, match="not open"):
            await store.get("responses", "k0")
        await store.close()  # twice is fine
        with pytest.raises(RuntimeError, match="started once"):
            await store.start()

    asyncio.run(run())
    with other_client(redis_server) as client:
        assert len(client.keys("nanoroute:responses:*")) == 50


def test_calls_before_start_are_refused(redis_server: RedisServer) -> None:
    async def run() -> None:
        with pytest.raises(StorageUnavailable, match="not open"):
            await RedisStore(redis_server.url).get("responses", "k")

    asyncio.run(run())


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
    ("redis://default:p%40ss@host/1", "redis://default:***@host/1"),
    ("rediss://host:6380", "rediss://host:6380"),
    ("unix:///run/redis.sock?db=2&password=pw", "unix:///run/redis.sock?db=2&password=***"),
])
def test_the_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redacted(url) == shown
    assert RedisStore(url).where == shown


def test_a_url_that_is_not_redis_is_refused_without_its_password() -> None:
    with pytest.raises(ValueError, match="The Redis URL http://:\\*\\*\\*@host/ cannot be used") as refused:
        RedisStore("http://:pw@host/")
    assert "pw" not in str(refused.value)


def test_build_store_chooses_redis_when_its_url_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOROUTE_REDIS_URL", "redis://:hunter2-password@cache:6379/0")
    settings = Settings()
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    store: Store = build_store(settings)
    assert isinstance(store, RedisStore) and store.where == "redis://:***@cache:6379/0"
    monkeypatch.setenv("NANOROUTE_REDIS_URL", "")  # empty is unset
    assert isinstance(build_store(Settings()), SqliteStore)


class DroppingProxy:
    """A TCP proxy on loopback in front of Redis that, once armed, passes the next command on and then closes the
    client's connection instead of passing the answer back: the lost answer of a command that did run."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.armed = False
        self._server: asyncio.Server | None = None
        self._serving: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:  # each connection's pipes read the end and return
            writer.close()
        await asyncio.gather(*self._serving)
        await self._server.wait_closed()

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        self._writers.append(client_out)
        try:
            redis_in, redis_out = await asyncio.open_connection("127.0.0.1", self.port)
            self._writers.append(redis_out)
            await _first_to_end(_pipe(client_in, redis_out, lambda: False), _pipe(redis_in, client_out, self._drop))
            redis_out.close()
            await redis_out.wait_closed()
        finally:
            client_out.close()
            with contextlib.suppress(OSError):
                await client_out.wait_closed()
            self._serving.discard(task)

    def _drop(self) -> bool:
        dropping, self.armed = self.armed, False
        return dropping


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, drop: Callable[[], bool]) -> None:
    with contextlib.suppress(OSError):
        while (data := await source.read(65536)) and not drop():
            sink.write(data)


async def _first_to_end(*coroutines: Coroutine[Any, Any, None]) -> None:
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_a_script_whose_answer_is_lost_is_not_sent_again(redis_server: RedisServer) -> None:
    """The counters' INCRBYs must not count twice: the pool for `script` (and `swap`) never resends."""
    incr = "return redis.call('INCR', KEYS[1])"

    async def run() -> None:
        proxy = DroppingProxy(redis_server.port)
        await proxy.start()
        async with opened(RedisStore(proxy.url)) as store:
            assert await store.script("count", incr, ["nanoroute:n"], []) == 1
            proxy.armed = True
            error, took = await failing(store.script("count", incr, ["nanoroute:n"], []))
            assert took < FAST_S and str(error) == "The gateway's store failed to count; try again later"
            assert isinstance(error.__cause__, redis.ConnectionError)
            with other_client(redis_server) as client:
                assert client.get("nanoroute:n") == b"2"  # it ran once, its answer lost; not sent again
            assert await store.script("count", incr, ["nanoroute:n"], []) == 3  # a new connection
            proxy.armed = True
            await store.put("responses", "k", b"v", None)  # the other pool sends a SET again, which is safe
            assert not proxy.armed  # the first answer was lost all the same
            assert await store.get("responses", "k") == b"v"
        await proxy.close()

    asyncio.run(run())


def test_scripts_are_sent_by_sha_and_loaded_again_after_a_flush(redis_server: RedisServer) -> None:
    add = "return redis.call('INCRBY', KEYS[1], ARGV[1])"

    def calls(client: redis.Redis) -> dict[str, int]:
        stats = client.info("commandstats")
        return {name: stats.get(f"cmdstat_{name}", {"calls": 0})["calls"] for name in ("eval", "evalsha")}

    async def run() -> None:
        async with opened(RedisStore(redis_server.url)) as store:
            for i in range(1, 101):
                assert await store.script("add", add, ["nanoroute:n"], [1]) == i
            with other_client(redis_server) as client:
                assert calls(client) == {"eval": 0, "evalsha": 101}  # the first answered NOSCRIPT; never compiled again
                client.script_flush()  # as a restarted Redis forgets them
            assert await store.script("add", add, ["nanoroute:n"], [2]) == 102

    asyncio.run(run())


def test_swap_and_scripts_fail_fast_while_redis_is_down_and_work_once_it_is_back(redis_server: RedisServer) -> None:
    async def run() -> None:
        async with opened(RedisStore(redis_server.url)) as store:
            assert await store.swap("keys", "k", None, b"v", None) is True
            redis_server.kill()
            for call in (store.swap("keys", "k", b"v", b"w", None), store.script("read", "return 1", [], []),
                         store.items("keys")):
                error, took = await failing(call)
                assert took < FAST_S and str(error).endswith("try again later")
            redis_server.start()
            await asyncio.sleep(0.05)  # the event loop reads the close of the pooled connections
            assert await store.swap("keys", "k", b"v", b"w", None) is True
            assert await store.items("keys") == [("k", b"w")]

    asyncio.run(run())


def test_items_reads_its_prefix_literally(redis_server: RedisServer) -> None:
    async def run() -> None:
        async with opened(RedisStore(redis_server.url, prefix="a*[b]?\\:")) as glob, \
                opened(RedisStore(redis_server.url, prefix="axb:")) as other:
            await glob.put("keys", "k", b"glob", None)
            await other.put("keys", "k", b"other", None)
            assert await glob.items("keys") == [("k", b"glob")]
            assert await other.items("keys") == [("k", b"other")]

    asyncio.run(run())
