"""gateway/errors.py, the part the attempt chain reads: what each error says may help, and the answers
for skips and for a chain where no model could be tried."""

from __future__ import annotations

import orjson
import pytest

from gateway.errors import (
    AllAttemptsFailed,
    AllCandidatesUnavailable,
    CircuitOpen,
    ContentFiltered,
    ContextLengthExceeded,
    ContextWindowTooSmall,
    Overloaded,
    UpstreamAuthFailed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
)

REJECTED = UpstreamRejected("x", status=400, body=b"{}")


@pytest.mark.parametrize(("err", "fallback", "retryable", "unhealthy"), [
    (UpstreamConnectError("x"), True, True, True),
    (UpstreamTimeout("x", phase="connect"), True, True, True),
    (UpstreamTimeout("x", phase="first_token"), True, False, True),
    (UpstreamTimeout("x", phase="idle"), True, False, True),
    (UpstreamTimeout("x", phase="total"), True, False, True),
    (UpstreamTimeout("x", phase="deadline"), False, False, False),
    (UpstreamRateLimited("x"), True, True, True),
    (UpstreamServerError("x"), True, True, True),
    (UpstreamMalformed("x"), True, False, True),
    (UpstreamAuthFailed("x"), True, False, True),
    (ContextLengthExceeded("x"), True, False, False),
    (REJECTED, False, False, False),
    (ContentFiltered("x", status=400, body=b"{}"), False, False, False),
    (CircuitOpen("x"), True, False, False),
    (Overloaded("x"), True, False, False),
    (ContextWindowTooSmall("x"), True, False, False),
], ids=lambda v: f"{type(v).__name__}-{getattr(v, 'phase', '')}" if isinstance(v, Exception) else None)
def test_what_each_error_says_may_help(err: UpstreamError, fallback: bool, retryable: bool, unhealthy: bool) -> None:
    assert (err.fallback, err.retryable, err.unhealthy) == (fallback, retryable, unhealthy)


def test_only_skips_were_not_sent_upstream() -> None:
    assert all(not cls("x").attempted for cls in (CircuitOpen, Overloaded, ContextWindowTooSmall))
    assert UpstreamConnectError("x").attempted and REJECTED.attempted


def test_kinds_stay_a_small_fixed_set() -> None:
    kinds = {e.kind for e in (CircuitOpen("x"), Overloaded("x"), ContextWindowTooSmall("x"),
                               ContentFiltered("x", status=400, body=b""))}
    assert kinds == {"circuit_open", "overloaded", "context_window", "content_filter"}


def test_a_skip_can_say_when_to_come_back() -> None:
    assert CircuitOpen("x", retry_after=2.4).headers() == [(b"retry-after", b"3")]  # never sooner
    assert CircuitOpen("x").headers() == []
    too_small = ContextWindowTooSmall("x")
    assert (too_small.status, too_small.code) == (400, "context_length_exceeded")


def test_all_candidates_unavailable_is_503_with_the_soonest_retry() -> None:
    exc = AllCandidatesUnavailable("p", [CircuitOpen("open", model="a", retry_after=9.0),
                                         Overloaded("busy", model="b", retry_after=1.5)])
    assert isinstance(exc, AllAttemptsFailed)
    assert (exc.status, exc.code) == (503, "models_unavailable")
    assert exc.headers() == [(b"retry-after", b"2")]
    body = orjson.loads(exc.envelope())["error"]
    assert body["message"].startswith("No model can take the request now for policy 'p'")
    assert "a: open; b: busy" in body["message"]
    assert body["type"] == "upstream_error"


def test_a_chain_that_ends_on_a_too_small_window_is_a_400() -> None:
    exc = AllAttemptsFailed("p", [ContextLengthExceeded("no fit", model="a"), ContextWindowTooSmall("x", model="b")])
    assert (exc.status, exc.code) == (400, "context_length_exceeded")
