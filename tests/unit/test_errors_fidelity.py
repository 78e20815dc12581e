"""gateway/errors.py: the answers that match OpenAI's own (rate limits, a model the upstream lacks, an unknown URL)."""

from __future__ import annotations

import orjson
import pytest

from gateway.errors import (
    AllAttemptsFailed,
    AllCandidatesUnavailable,
    CircuitOpen,
    Overloaded,
    UnknownPath,
    UpstreamConnectError,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamRateLimited,
    UpstreamServerError,
)


def error(exc: AllAttemptsFailed | UnknownPath) -> dict[str, object]:
    return orjson.loads(exc.envelope())["error"]  # type: ignore[no-any-return]


def limited(model: str, wait: float) -> CircuitOpen:
    return CircuitOpen("circuit open: the upstream is limiting the rate of requests", model=model, retry_after=wait,
                       rate_limited=True)


def test_every_attempt_rate_limited_is_openais_429_with_the_soonest_wait() -> None:
    exc = AllAttemptsFailed("p", [UpstreamRateLimited("a", model="a", retry_after=7),
                                  limited("b", 2.2), UpstreamRateLimited("c", model="c")])
    assert (exc.status, exc.type, exc.code) == (429, "rate_limit_error", "rate_limit_exceeded")
    assert exc.headers() == [(b"retry-after", b"3")]
    assert error(exc)["message"] == (
        "Rate limit reached for policy 'p': every model is limiting the rate of requests; retry after 3 s: "
        "a: the upstream is limiting the rate of requests; b: circuit open: the upstream is limiting the rate of "
        "requests; c: the upstream is limiting the rate of requests")


def test_no_retry_after_when_no_upstream_said_when() -> None:
    exc = AllAttemptsFailed("p", [UpstreamRateLimited("a")])
    assert (exc.status, exc.code, exc.headers()) == (429, "rate_limit_exceeded", [])


def test_every_circuit_opened_by_429s_is_429_rather_than_503() -> None:
    exc = AllCandidatesUnavailable("p", [limited("a", 9.0), limited("b", 4.5)])
    assert (exc.status, exc.code) == (429, "rate_limit_exceeded")
    assert exc.headers() == [(b"retry-after", b"5")]


@pytest.mark.parametrize("other", [CircuitOpen("open", model="b", retry_after=1.0),
                                   Overloaded("busy", model="b", retry_after=1.0)])
def test_circuits_open_for_other_reasons_stay_503(other: UpstreamError) -> None:
    exc = AllCandidatesUnavailable("p", [limited("a", 9.0), other])
    assert (exc.status, exc.code) == (503, "models_unavailable")


@pytest.mark.parametrize(("errors", "status", "code"), [
    ([UpstreamServerError("x"), UpstreamRateLimited("y", retry_after=4)], 429, "upstream_rate_limited"),
    ([UpstreamRateLimited("y", retry_after=4), UpstreamConnectError("x")], 503, "upstream_unavailable"),
    ([limited("a", 3.0), UpstreamServerError("x")], 502, "upstream_server_error"),
])
def test_a_mix_with_any_other_failure_keeps_the_last_errors_answer(
    errors: list[UpstreamError], status: int, code: str
) -> None:
    exc = AllAttemptsFailed("p", errors)
    assert (exc.status, exc.code) == (status, code)
    assert exc.headers() == errors[-1].headers()


def test_a_model_the_upstream_lacks_falls_back_and_is_openais_404_when_last() -> None:
    err = UpstreamModelNotFound("upstream does not serve the model: The model `x` does not exist.", model="m")
    assert (err.fallback, err.retryable, err.unhealthy, err.rate_limited) == (True, False, True, False)
    assert err.kind == "model_not_found"
    exc = AllAttemptsFailed("p", [UpstreamServerError("x", model="a"), err])
    assert (exc.status, exc.type, exc.code) == (404, "invalid_request_error", "model_not_found")
    assert error(exc)["message"] == ("All 2 attempt(s) for policy 'p' failed: a: the upstream answered with a server "
                                     "error; m: the upstream does not serve the model")  # not the upstream's words


def test_an_unknown_path_is_openais_invalid_url() -> None:
    exc = UnknownPath("GET", "/v1/foo")
    assert (exc.status, error(exc)) == (404, {"message": "Invalid URL (GET /v1/foo)", "type": "invalid_request_error",
                                              "param": None, "code": "unknown_url"})
    assert len(UnknownPath("GET", "/" + "x" * 10_000).message) < 160
