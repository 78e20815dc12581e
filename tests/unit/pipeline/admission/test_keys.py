"""gateway/pipeline/admission/keys.py: parsing NANOROUTE_API_KEYS, the headers a key comes in, and the admin key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gateway.errors import AuthenticationFailed, ConfigError, NotFound
from gateway.governance.registry import Registry
from gateway.pipeline.admission.keys import KeyCheck, key_id, parse_entries, presented
from gateway.store.sqlite import SqliteStore

ONE, TWO = "sk-one-0123456789abcdef", "sk-two-0123456789abcdef"
ADMIN = "admin-0123456789abcdef"


def check(*entries: str, admin: str | None = None) -> KeyCheck:
    """The keys of NANOROUTE_API_KEYS alone: a registry whose store (never opened) holds no admin keys."""
    registry = Registry(((key.id, secret) for key, secret in parse_entries(entries)), SqliteStore(Path("unused.db")))
    return KeyCheck(registry, admin)


def identity(keys: KeyCheck, key: bytes) -> tuple[str, str] | None:
    found = keys.check(key)
    return None if found is None else (found.id, found.source)


def test_key_id_is_a_short_hash_not_the_key() -> None:
    assert key_id(ONE) == hashlib.sha256(ONE.encode()).hexdigest()[:8]
    assert key_id(ONE) != key_id(TWO)


def test_without_keys_the_api_is_open() -> None:
    keys = check()
    assert keys.open
    assert keys.check(None) is None
    assert keys.check(b"anything") is None


def test_a_known_key_gives_its_id_and_a_named_one_its_name() -> None:
    keys = check(ONE, f"team-a={TWO}")
    assert not keys.open
    assert identity(keys, ONE.encode()) == (key_id(ONE), "env")
    assert identity(keys, TWO.encode()) == ("team-a", "env")
    assert keys.ids == {key_id(ONE), "team-a"}


def test_a_named_key_may_hold_equals_signs() -> None:
    padded = "c2stYWJjZGVmZ2hpamtsbW5vcA=="  # base64 with its padding
    keys = check(f"svc={padded}", "mid=abcdefgh=ijklmnop=")
    assert identity(keys, padded.encode()) == ("svc", "env")
    assert identity(keys, b"abcdefgh=ijklmnop=") == ("mid", "env")
    with pytest.raises(AuthenticationFailed):
        keys.check(b"=")


@pytest.mark.parametrize(("entry", "problem"), [
    ("c2stYWJjZGVmZ2hpamtsbW5vcA==", "a key of 1 characters"),  # a bare base64 key: refused, never the key "="
    ("name=", "an empty key"),
    ("short", "a key of 5 characters"),
    ("name=short", "a key of 5 characters"),
    ("bad name=0123456789abcdefgh", "a name that is not"),
    ("sk/with+slash=0123456789abcdefgh", "a name that is not"),
    ("name=has space 0123456789ab", "spaces"),
])
def test_bad_entries_stop_the_start_without_showing_the_key(entry: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_entries(["ok-key-0123456789abcdef", entry])
    assert info.value.problems[0][0] == "entry 2"
    assert problem in info.value.problems[0][1]
    secret = entry.partition("=")[2] or entry
    assert secret not in info.value.message or len(secret) <= 1
    assert entry.partition("=")[0] not in info.value.message or "=" not in entry or len(entry.partition("=")[0]) < 4


def test_repeated_names_and_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="repeats"):
        parse_entries([f"a={ONE}", f"a={TWO}"])
    with pytest.raises(ConfigError, match="repeats"):
        parse_entries([f"a={ONE}", f"b={ONE}"])


def test_a_missing_key_is_refused() -> None:
    with pytest.raises(AuthenticationFailed) as info:
        check(ONE).check(None)
    assert (info.value.status, info.value.code) == (401, "invalid_api_key")
    assert "Missing API key" in info.value.message


@pytest.mark.parametrize("key", [b"sk-three-0123456789", ONE.encode()[:-1], ONE.encode() + b"x", b""])
def test_a_wrong_key_is_refused(key: bytes) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        check(ONE).check(key)
    assert info.value.message == "Incorrect API key provided"
    assert ONE.encode() not in info.value.envelope()


@pytest.mark.parametrize(("headers", "key"), [
    ((b"Bearer k1", None, None), b"k1"),
    ((b"bearer k1", None, None), b"k1"),
    ((b"BEARER  k1 ", None, None), b"k1"),
    ((b"Basic azE=", None, None), b""),
    ((b"k1", None, None), b""),
    ((None, b"k2", None), b"k2"),
    ((None, None, b"k3"), b"k3"),
    ((b"Bearer k1", b"k2", b"k3"), b"k1"),
    ((None, b"k2", b"k3"), b"k2"),
    ((None, None, None), None),
])
def test_the_key_comes_from_authorization_then_x_api_key_then_api_key(
        headers: tuple[bytes | None, bytes | None, bytes | None], key: bytes | None) -> None:
    assert presented(*headers) == key


def test_admin_endpoints_are_disabled_without_an_admin_key() -> None:
    with pytest.raises(NotFound):
        check(ONE).check_admin(ONE.encode())


def test_admin_key() -> None:
    keys = check(ONE, admin=ADMIN)
    assert keys.check_admin(ADMIN.encode()) is None
    for key in (None, ONE.encode(), ADMIN.encode() + b"2", b""):
        with pytest.raises(AuthenticationFailed):
            keys.check_admin(key)


def test_a_short_admin_key_stops_the_start() -> None:
    with pytest.raises(ConfigError, match="NANOROUTE_ADMIN_KEY"):
        check(ONE, admin="adm")


def test_the_admin_key_is_not_a_client_key() -> None:
    with pytest.raises(AuthenticationFailed):
        check(ONE, admin=ADMIN).check(ADMIN.encode())
