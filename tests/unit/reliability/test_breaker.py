"""gateway/reliability/breaker.py: when a breaker opens, how long it stays open, and its half-open probe."""

from __future__ import annotations

from gateway.config import schema
from gateway.reliability.breaker import CLOSED, HALF_OPEN, OPEN, Breaker


def breaker(**cfg: object) -> tuple[Breaker, list[int]]:
    changes: list[int] = []
    b = Breaker(schema.Breaker(**cfg))  # type: ignore[arg-type]
    b.on_change = lambda: changes.append(b.state)
    return b, changes


def fail(b: Breaker, times: int, now: float = 0.0) -> None:
    for _ in range(times):
        b.failure(now)


def test_it_opens_on_consecutive_failures_and_a_success_resets_the_count() -> None:
    b, changes = breaker(consecutive_failures=3)
    fail(b, 2)
    b.success(0.0)
    fail(b, 2)
    assert b.state == CLOSED and b.ready(0.0)
    b.failure(0.0)
    assert b.state == OPEN
    assert not b.ready(0.1)
    assert changes == [OPEN]


def test_it_opens_on_the_error_rate_once_there_are_enough_requests() -> None:
    b, _ = breaker(consecutive_failures=100, error_rate=0.5, min_requests=10, window_s=10)
    for i in range(9):  # alternate: never two failures in a row, 50% failed
        (b.failure if i % 2 else b.success)(1.0)
    assert b.state == CLOSED  # 9 requests: under min_requests
    b.failure(1.0)
    assert b.state == OPEN


def test_old_outcomes_leave_the_window() -> None:
    b, _ = breaker(consecutive_failures=100, error_rate=0.5, min_requests=4, window_s=10)
    fail(b, 3, now=0.0)
    b.success(0.0)
    b.success(15.0)  # the failures at t=0 are out of the 10 s window now
    b.failure(15.0)
    assert b.state == CLOSED


def test_after_the_cooldown_one_probe_at_a_time() -> None:
    b, _ = breaker(consecutive_failures=1, cooldown_s=5)
    b.failure(100.0)
    assert b.wait(101.0) == 4.0
    assert not b.ready(104.9)
    assert b.ready(105.0)
    assert b.acquire(105.0) is True
    assert b.state == HALF_OPEN
    assert not b.ready(105.0)  # the probe is out
    b.release()  # it ended without a verdict (the client went away)
    assert b.ready(105.1)


def test_a_successful_probe_closes_it() -> None:
    b, changes = breaker(consecutive_failures=1, cooldown_s=5)
    b.failure(0.0)
    b.acquire(5.0)
    b.success(5.5)
    assert b.state == CLOSED
    assert b.acquire(6.0) is False  # closed: no probe to hand back
    assert changes == [OPEN, CLOSED]


def test_a_failed_probe_doubles_the_cooldown_up_to_the_cap() -> None:
    b, _ = breaker(consecutive_failures=1, cooldown_s=5, max_cooldown_s=12)
    b.failure(0.0)
    now = 0.0
    waits = []
    for _ in range(3):
        now += b.wait(now)
        b.acquire(now)
        b.failure(now)
        waits.append(b.wait(now))
    assert waits == [10.0, 12.0, 12.0]


def test_reopening_soon_after_closing_grows_the_cooldown_and_later_it_starts_again() -> None:
    b, _ = breaker(consecutive_failures=1, cooldown_s=5, max_cooldown_s=60)
    b.failure(0.0)
    b.acquire(5.0)
    b.success(5.0)
    b.failure(10.0)  # reopened 5 s after closing: the repeat waits longer
    assert b.wait(10.0) == 10.0
    b.acquire(20.0)
    b.success(20.0)
    b.failure(200.0)  # closed for longer than max_cooldown_s: back to the base cooldown
    assert b.wait(200.0) == 5.0


def test_results_of_requests_started_before_it_opened_do_not_count() -> None:
    b, _ = breaker(consecutive_failures=1, cooldown_s=5)
    b.failure(0.0)
    b.success(1.0)
    assert b.state == OPEN
    b.failure(2.0)
    assert b.wait(2.0) == 3.0  # not pushed back


def test_hold_opens_it_for_what_the_upstream_asked_capped() -> None:
    b, changes = breaker(max_cooldown_s=30)
    b.hold(0.0, 20.0)
    assert (b.state, b.wait(0.0)) == (OPEN, 20.0)
    b.hold(1.0, 5.0)  # a shorter hold does not cut a longer one short
    assert b.wait(1.0) == 19.0
    b.hold(2.0, 3600.0)
    assert b.wait(2.0) == 30.0
    assert changes == [OPEN]


def test_a_disabled_breaker_never_opens_but_remembers_failures() -> None:
    b, _ = breaker(enabled=False, consecutive_failures=1)
    fail(b, 50, now=7.0)
    b.hold(7.0, 10.0)
    assert b.state == CLOSED and b.ready(7.0)
    assert b.last_failure == 7.0
