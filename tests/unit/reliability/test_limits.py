"""gateway/reliability/limits.py: the request's deadline, and the pause before a retry."""

from __future__ import annotations

import pytest

from gateway.backends.base import Operation
from gateway.config import schema
from gateway.config.table import ChainSettings
from gateway.errors import (
    ContextLengthExceeded,
    UpstreamConnectError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from gateway.reliability.limits import deadline, retry_delay
from gateway.routing.request import parse_request


def settings(**retries: float) -> ChainSettings:
    return ChainSettings.of(schema.Reliability(deadline_ms=30_000, retries=schema.Retries(**retries)))  # type: ignore[arg-type]


def request(**extra: object) -> object:
    import orjson

    raw = orjson.dumps({"model": "m", "messages": [], **extra})
    return parse_request(Operation.CHAT, raw, task_header=None, key_id=None, request_id="r")


@pytest.mark.parametrize(("timeout", "expected"), [
    (None, 130.0), (5, 105.0), (2.5, 102.5), (60, 130.0), (0, 130.0), (-1, 130.0), (True, 130.0), ("5", 130.0)])
def test_the_clients_timeout_may_shorten_the_deadline_never_extend_it(timeout: object, expected: float) -> None:
    req = request() if timeout is None else request(timeout=timeout)
    assert deadline(req, settings(), 100.0) == expected  # type: ignore[arg-type]


def test_errors_a_retry_cannot_fix_are_not_retried() -> None:
    s = settings(max=3)
    for err in (ContextLengthExceeded("x"), UpstreamTimeout("x", phase="first_token"), UpstreamTimeout("x")):
        assert retry_delay(err, 0, s, 100.0) is None


def test_no_retry_once_they_are_spent() -> None:
    s = settings(max=2)
    assert retry_delay(UpstreamServerError("x"), 1, s, 100.0) is not None
    assert retry_delay(UpstreamServerError("x"), 2, s, 100.0) is None
    assert retry_delay(UpstreamServerError("x"), 0, settings(max=0), 100.0) is None


def test_backoff_doubles_with_jitter_between_half_and_all_of_it_up_to_the_cap() -> None:
    s = settings(max=10, backoff_ms=100, max_backoff_ms=1000)
    err = UpstreamConnectError("x")
    assert [retry_delay(err, t, s, 100.0, rand=lambda: 1.0) for t in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert [retry_delay(err, t, s, 100.0, rand=lambda: 0.0) for t in range(3)] == [0.05, 0.1, 0.2]


def test_a_short_retry_after_is_waited_out_and_a_long_one_moves_on() -> None:
    s = settings(max=1, backoff_ms=100, respect_retry_after_max_s=5)
    assert retry_delay(UpstreamRateLimited("x", retry_after=2.0), 0, s, 100.0, rand=lambda: 0.0) == 2.0
    assert retry_delay(UpstreamRateLimited("x", retry_after=2.0), 0, s, 100.0, rand=lambda: 1.0) == 2.05
    assert retry_delay(UpstreamRateLimited("x", retry_after=30.0), 0, s, 100.0) is None
    assert retry_delay(UpstreamRateLimited("x"), 0, s, 100.0, rand=lambda: 1.0) == 0.1


def test_no_retry_that_would_outlast_the_deadline() -> None:
    s = settings(max=1, respect_retry_after_max_s=5)
    assert retry_delay(UpstreamRateLimited("x", retry_after=2.0), 0, s, 1.5) is None
    assert retry_delay(UpstreamServerError("x"), 0, s, 0.01, rand=lambda: 1.0) is None
