"""gateway/errors.py: the exception tree, its status map and OpenAI's error envelope."""

from __future__ import annotations

import orjson
import pytest

from gateway import errors
from gateway.errors import (
    AllAttemptsFailed,
    AllCandidatesUnavailable,
    AuthenticationFailed,
    CircuitOpen,
    ClientError,
    ConfigError,
    ContextLengthExceeded,
    ContextWindowTooSmall,
    InvalidRequest,
    ModelNotFound,
    NanorouteError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    PolicyUnmet,
    UpstreamAuthFailed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
    error_body,
)


def envelope(exc: NanorouteError) -> dict[str, object]:
    data = orjson.loads(exc.envelope())
    assert list(data) == ["error"]
    assert list(data["error"]) == ["message", "type", "param", "code"]
    return data["error"]  # type: ignore[no-any-return]


def test_error_body_is_openais_envelope() -> None:
    assert orjson.loads(error_body("m", "t", "c", "p")) == {"error": {"message": "m", "type": "t", "param": "p",
                                                                      "code": "c"}}
    assert orjson.loads(error_body("m", "t")) == {"error": {"message": "m", "type": "t", "param": None, "code": None}}


def test_envelope_of_a_client_error() -> None:
    exc = InvalidRequest("'stream' must be a boolean", param="stream")
    assert envelope(exc) == {"message": "'stream' must be a boolean", "type": "invalid_request_error",
                             "param": "stream", "code": None}


def test_a_code_given_to_one_error_does_not_change_its_class() -> None:
    exc = InvalidRequest("x", code="special")
    assert exc.code == "special"
    assert InvalidRequest("y").code is None


@pytest.mark.parametrize(
    ("exc", "status", "type_", "code"),
    [
        (NanorouteError("x"), 500, "server_error", None),
        (InvalidRequest("x"), 400, "invalid_request_error", None),
        (AuthenticationFailed("x"), 401, "authentication_error", "invalid_api_key"),
        (PermissionDenied("x"), 403, "permission_error", None),
        (NotFound("x"), 404, "not_found_error", None),
        (ModelNotFound("m"), 404, "not_found_error", "model_not_found"),
        (PayloadTooLarge("x"), 413, "invalid_request_error", "request_too_large"),
        (UpstreamConnectError("x"), 503, "upstream_error", "upstream_unavailable"),
        (UpstreamTimeout("x"), 504, "upstream_error", "upstream_timeout"),
        (UpstreamRateLimited("x"), 429, "rate_limit_error", "upstream_rate_limited"),
        (UpstreamServerError("x"), 502, "upstream_error", "upstream_server_error"),
        (UpstreamMalformed("x"), 502, "upstream_error", "upstream_malformed_response"),
        (UpstreamAuthFailed("x"), 502, "upstream_error", "upstream_auth_failed"),
        (ContextLengthExceeded("x"), 400, "invalid_request_error", "context_length_exceeded"),
        (PolicyUnmet("x"), 503, "server_error", "no_eligible_model"),
        (CircuitOpen("x"), 503, "upstream_error", "circuit_open"),
        (Overloaded("x"), 503, "upstream_error", "model_overloaded"),
        (ContextWindowTooSmall("x"), 400, "invalid_request_error", "context_length_exceeded"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_status_map(exc: NanorouteError, status: int, type_: str, code: str | None) -> None:
    assert exc.status == status
    body = envelope(exc)
    assert (body["type"], body["code"]) == (type_, code)


def test_the_tree() -> None:
    for cls in (InvalidRequest, AuthenticationFailed, PermissionDenied, NotFound, PayloadTooLarge):
        assert issubclass(cls, ClientError)
    assert issubclass(ModelNotFound, NotFound)
    for cls in (UpstreamConnectError, UpstreamTimeout, UpstreamRateLimited, UpstreamServerError,
                UpstreamMalformed, UpstreamAuthFailed, ContextLengthExceeded, UpstreamRejected):
        assert issubclass(cls, UpstreamError)
        assert not issubclass(cls, ClientError)
    assert not issubclass(AllAttemptsFailed, UpstreamError)
    assert all(issubclass(c, NanorouteError) for c in (ConfigError, ClientError, UpstreamError, AllAttemptsFailed))


def test_only_a_rejection_stops_the_fallback() -> None:
    rejected = UpstreamRejected("no", status=422, body=b"{}")
    assert rejected.fallback is False
    for exc in (UpstreamConnectError("x"), UpstreamTimeout("x"), UpstreamRateLimited("x"), UpstreamServerError("x"),
                UpstreamMalformed("x"), UpstreamAuthFailed("x"), ContextLengthExceeded("x")):
        assert exc.fallback is True, type(exc).__name__


def test_every_upstream_error_has_a_kind() -> None:
    kinds = {cls: cls("x").kind for cls in (UpstreamConnectError, UpstreamTimeout, UpstreamRateLimited,
                                            UpstreamServerError, UpstreamMalformed, UpstreamAuthFailed,
                                            ContextLengthExceeded)}
    kinds[UpstreamRejected] = UpstreamRejected("x", status=400, body=b"").kind
    assert len(set(kinds.values())) == len(kinds)
    assert kinds[UpstreamTimeout] == "timeout"


def test_model_not_found_names_the_model() -> None:
    body = envelope(ModelNotFound("gpt-9"))
    assert body["param"] == "model"
    assert "'gpt-9'" in str(body["message"])


def test_upstream_error_keeps_model_and_backend() -> None:
    exc = UpstreamServerError("upstream answered 500", model="m", backend="b")
    assert (exc.model, exc.backend, exc.message) == ("m", "b", "upstream answered 500")


def test_upstream_rejected_relays_status_and_body() -> None:
    body = b'{"error": {"message": "temperature must be <= 2", "type": "invalid_request_error", "param": "t"}}'
    exc = UpstreamRejected("rejected", model="m", backend="b", status=422, body=body)
    assert exc.status == 422
    assert exc.envelope() is body


@pytest.mark.parametrize(("retry_after", "header"),
                         [(1.0, b"1"), (0.2, b"1"), (0, b"1"), (2.2, b"3"), (2.6, b"3"), (30, b"30")])
def test_retry_after_header_in_whole_seconds_rounded_up_at_least_one(retry_after: float, header: bytes) -> None:
    assert UpstreamRateLimited("slow down", retry_after=retry_after).headers() == [(b"retry-after", header)]


def test_no_retry_after_header_when_the_upstream_gave_none() -> None:
    assert UpstreamRateLimited("slow down").headers() == []
    assert UpstreamServerError("x").headers() == []


def test_all_attempts_failed_keeps_errors_in_order_and_takes_the_last_status() -> None:
    first = UpstreamConnectError("cannot connect", model="small", backend="local")
    second = UpstreamTimeout("too slow", model="large", backend="openai")
    exc = AllAttemptsFailed("support", [first, second])
    assert exc.errors == (first, second)
    assert (exc.status, exc.code, exc.type) == (504, "upstream_timeout", "upstream_error")
    assert exc.message == ("All 2 attempt(s) for policy 'support' failed: small (local): cannot connect; "
                           "large (openai): too slow")
    # The client is told which model failed how, not the backends nor the upstreams' own words (the log is).
    assert envelope(exc)["message"] == ("All 2 attempt(s) for policy 'support' failed: small: the upstream could "
                                        "not be reached; large: the upstream did not answer in time")


def test_all_attempts_failed_takes_the_last_errors_headers() -> None:
    exc = AllAttemptsFailed("p", [UpstreamServerError("x"), UpstreamRateLimited("y", retry_after=4)])
    assert exc.status == 429
    assert exc.headers() == [(b"retry-after", b"4")]
    assert AllAttemptsFailed("p", [UpstreamRateLimited("y", retry_after=4), UpstreamServerError("x")]).headers() == []


def test_all_attempts_failed_relays_a_final_rejection_as_the_upstream_sent_it() -> None:
    body = b'{"error": {"message": "bad tool schema", "type": "invalid_request_error", "param": null, "code": null}}'
    exc = AllAttemptsFailed("p", [UpstreamServerError("x"), UpstreamRejected("r", status=400, body=body)])
    assert exc.status == 400
    assert exc.envelope() is body


def test_an_error_class_is_not_changed_by_all_attempts_failed() -> None:
    AllAttemptsFailed("p", [UpstreamRateLimited("y")])
    assert AllAttemptsFailed.status == 500
    assert AllAttemptsFailed.type == "upstream_error"


def test_all_candidates_unavailable_is_503_with_the_soonest_retry_after() -> None:
    exc = AllCandidatesUnavailable("p", [CircuitOpen("open", model="a", retry_after=7.5),
                                         Overloaded("busy", model="b", retry_after=2.2)])
    assert (exc.status, exc.code) == (503, "models_unavailable")
    assert exc.headers() == [(b"retry-after", b"3")]
    assert envelope(exc)["message"] == exc.message
    assert "a: open; b: busy" in exc.message


def test_config_error_lists_every_problem_under_the_file() -> None:
    exc = ConfigError("/etc/nanoroute.yaml", [("", "the file is empty"), ("models.m (line 3)", "bad")])
    assert exc.problems == (("", "the file is empty"), ("models.m (line 3)", "bad"))
    assert exc.message == "/etc/nanoroute.yaml: 2 problem(s)\n  <top>: the file is empty\n  models.m (line 3): bad"
    assert str(exc) == exc.message


def test_the_docstring_draws_every_class() -> None:
    doc = errors.__doc__ or ""
    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, NanorouteError)]
    assert classes
    for cls in classes:
        assert cls.__name__ in doc, cls.__name__
