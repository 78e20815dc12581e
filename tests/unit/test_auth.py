"""gateway/auth.py: client keys and the admin key."""

from __future__ import annotations

import hashlib

import pytest

from gateway.auth import KeyCheck, key_id
from gateway.errors import AuthenticationFailed, NotFound


def test_key_id_is_a_short_hash_not_the_key() -> None:
    assert key_id("sk-one") == hashlib.sha256(b"sk-one").hexdigest()[:8]
    assert key_id("sk-one") != key_id("sk-two")
    assert "sk-one" not in key_id("sk-one")


def test_without_keys_the_api_is_open() -> None:
    check = KeyCheck([])
    assert check.open
    assert check.check(None) is None
    assert check.check(b"Bearer anything") is None


def test_with_keys_a_known_key_gives_its_id() -> None:
    check = KeyCheck(["sk-one", "sk-two"])
    assert not check.open
    assert check.check(b"Bearer sk-one") == key_id("sk-one")
    assert check.check(b"Bearer sk-two") == key_id("sk-two")


def test_a_missing_key_is_refused() -> None:
    with pytest.raises(AuthenticationFailed) as info:
        KeyCheck(["sk-one"]).check(None)
    assert (info.value.status, info.value.code) == (401, "invalid_api_key")
    assert "Missing API key" in info.value.message


@pytest.mark.parametrize(
    "header", [b"Bearer sk-three", b"sk-one", b"bearer sk-one", b"Bearer sk-one ", b"Bearer ", b"Basic c2stb25l"]
)
def test_a_wrong_key_is_refused(header: bytes) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        KeyCheck(["sk-one"]).check(header)
    assert info.value.message == "Incorrect API key provided"
    assert b"sk-one" not in info.value.envelope()


def test_admin_endpoints_are_disabled_without_an_admin_key() -> None:
    with pytest.raises(NotFound):
        KeyCheck(["sk-one"]).check_admin(b"Bearer sk-one")


def test_admin_key() -> None:
    check = KeyCheck(["sk-one"], admin_key="adm")
    assert check.check_admin(b"Bearer adm") is None
    for header in (None, b"Bearer sk-one", b"adm", b"Bearer adm2"):
        with pytest.raises(AuthenticationFailed):
            check.check_admin(header)


def test_the_admin_key_is_not_a_client_key() -> None:
    with pytest.raises(AuthenticationFailed):
        KeyCheck(["sk-one"], admin_key="adm").check(b"Bearer adm")
