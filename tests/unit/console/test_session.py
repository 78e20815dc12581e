"""Sessions: the signed cookie, its expiry and forgery, logout through the store, CSRF tokens, same-origin
checks, and the brake on failed logins."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.console.session import Sessions, Throttle, same_origin, session_key
from gateway.store import SqliteStore

KEY = session_key("admin-key-0123456789")
NOW = 1_800_000_000.0


def with_sessions(tmp_path: Path, body: Callable[[Sessions, SqliteStore], Awaitable[None]],
                  key: bytes = KEY) -> None:
    async def run() -> None:
        store = SqliteStore(tmp_path / "state.db")
        await store.start()
        try:
            await body(Sessions(key, store), store)
        finally:
            await store.close()

    asyncio.run(run())


def test_a_cookie_holds_its_session_until_it_expires(tmp_path: Path) -> None:
    async def body(sessions: Sessions, _: SqliteStore) -> None:
        session, cookie = sessions.issue(NOW)
        assert session.expires == NOW + sessions.session_s
        assert await sessions.check(cookie, NOW + 1) == session
        assert await sessions.check(cookie, NOW + sessions.session_s - 1) == session
        assert await sessions.check(cookie, NOW + sessions.session_s) is None

    with_sessions(tmp_path, body)


def test_a_forged_or_altered_cookie_is_refused(tmp_path: Path) -> None:
    async def body(sessions: Sessions, store: SqliteStore) -> None:
        _, cookie = sessions.issue(NOW)
        expires, sid, mac = cookie.split(".")
        later = str(int(expires) + 86400)
        for forged in (f"{later}.{sid}.{mac}", f"{expires}.{'0' * 32}.{mac}", f"{expires}.{sid}.{'0' * 64}",
                       f"{expires}.{sid}", "", "a.b.c", cookie + "0", "x" * 500):
            assert await sessions.check(forged, NOW) is None, forged
        other = Sessions(session_key("another-admin-key-0123"), store)
        assert await other.check(cookie, NOW) is None  # a new admin key ends every session

    with_sessions(tmp_path, body)


def test_the_cookie_carries_neither_the_key_nor_the_csrf_token(tmp_path: Path) -> None:
    async def body(sessions: Sessions, _: SqliteStore) -> None:
        session, cookie = sessions.issue(NOW)
        assert "admin-key" not in cookie and KEY.hex() not in cookie
        assert session.csrf not in cookie
        again, _ = sessions.issue(NOW)
        assert again.id != session.id and again.csrf != session.csrf

    with_sessions(tmp_path, body)


def test_logout_ends_the_session_for_every_process_sharing_the_store(tmp_path: Path) -> None:
    async def body(sessions: Sessions, store: SqliteStore) -> None:
        session, cookie = sessions.issue(NOW)
        other_worker = Sessions(KEY, store)
        assert await other_worker.check(cookie, NOW) == session
        await sessions.end(session, NOW)
        assert await sessions.check(cookie, NOW) is None
        assert await other_worker.check(cookie, NOW) is None

    with_sessions(tmp_path, body)


def test_without_its_store_a_process_still_honours_its_own_logouts(tmp_path: Path) -> None:
    async def body(sessions: Sessions, store: SqliteStore) -> None:
        session, cookie = sessions.issue(NOW)
        _, other = sessions.issue(NOW)
        await store.close()  # every call now raises StorageUnavailable
        await sessions.end(session, NOW)
        assert await sessions.check(cookie, NOW) is None
        assert await sessions.check(other, NOW) is not None  # judged by its cookie alone meanwhile

    with_sessions(tmp_path, body)


def test_csrf_tokens_belong_to_their_session(tmp_path: Path) -> None:
    async def body(sessions: Sessions, _: SqliteStore) -> None:
        one, _ = sessions.issue(NOW)
        two, _ = sessions.issue(NOW)
        assert sessions.csrf_ok(one, one.csrf)
        assert not sessions.csrf_ok(one, two.csrf)
        assert not sessions.csrf_ok(one, None)
        assert not sessions.csrf_ok(one, "")

    with_sessions(tmp_path, body)


def test_same_origin() -> None:
    host = "gw.example:8080"
    assert same_origin("https://gw.example:8080", None, host)
    assert same_origin("http://GW.example:8080", None, host)  # TLS ended by a proxy in front
    assert not same_origin("https://evil.example", None, host)
    assert not same_origin("https://gw.example", None, host)  # another port is another origin
    assert not same_origin("null", None, host)
    assert same_origin(None, "https://gw.example:8080/ui/rollouts", host)
    assert not same_origin(None, "https://evil.example/ui", host)
    assert same_origin(None, None, host)  # not a browser: the CSRF token is what it still needs
    assert not same_origin("https://gw.example:8080", None, None)


def test_failed_logins_make_an_address_wait_and_the_table_stays_bounded() -> None:
    t = Throttle(limit=3, window_s=60, addresses=2)
    for i in range(3):
        assert t.wait_s("10.0.0.1", NOW + i) == 0
        t.failed("10.0.0.1", NOW + i)
    assert t.wait_s("10.0.0.1", NOW + 3) == 57  # until the oldest failure is a minute old
    assert t.wait_s("10.0.0.2", NOW + 3) == 0  # another address is not held up
    assert t.wait_s("10.0.0.1", NOW + 60) == 0
    t.failed("10.0.0.2", NOW)
    t.failed("10.0.0.3", NOW)
    assert len(t._failures) == 2 and "10.0.0.1" not in t._failures
