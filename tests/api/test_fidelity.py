"""What clients meet where the gateway differs from OpenAI's own API: rate limits, missing models, unknown
paths, request ids on every response, and CORS for apps in a browser."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.api.support import CHAT, MESSAGES, Client, envelope, single_model
from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream

KEYS = "sk-alpha-0123456789"
ADMIN = "admin-key-0123456789"


def chain(*ups: FakeUpstream, breaker: str = "") -> str:
    """Backends b0, b1... (one per upstream) serving m0, m1...; `auto` tries them in order."""
    backends = "".join(f"  b{i}: {{type: openai, url: {u.url}{breaker}}}\n" for i, u in enumerate(ups))
    models = "".join(f"  m{i}: {{backend: b{i}, name: served-{i}}}\n" for i in range(len(ups)))
    names = ", ".join(f"m{i}" for i in range(len(ups)))
    return f"""\
backends:
{backends}models:
{models}policies:
  - {{name: chain, match: {{model: auto}}, candidates: [m0], fallback: [{names}]}}
"""


# -- every model rate limited: OpenAI's 429 ---------------------------------------------------------------


def test_every_model_rate_limited_is_openais_429_with_the_soonest_retry_after(
    servers: Servers, client: Client
) -> None:
    first = servers.upstream("first", behaviour="status:429", retry_after="3")
    second = servers.upstream("second", behaviour="status:429", retry_after="2")
    sdk = client(servers.gateway(chain(first, second)))
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="auto", messages=MESSAGES)
    exc = info.value
    assert (exc.status_code, exc.code, exc.type) == (429, "rate_limit_exceeded", "rate_limit_error")
    assert exc.response.headers["retry-after"] == "2"
    assert "m0: the upstream is limiting the rate of requests" in exc.message
    assert (len(first.seen), len(second.seen)) == (1, 1)


def test_breakers_opened_by_429s_answer_429_rather_than_503(servers: Servers, client: Client) -> None:
    up = servers.upstream(behaviour="status:429", retry_after="30")
    sdk = client(servers.gateway(chain(up, breaker=", breaker: {consecutive_failures: 1, cooldown_s: 5}")))
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="auto", messages=MESSAGES)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as info:  # skipped: the upstream said to wait 30 s
        sdk.chat.completions.create(model="auto", messages=MESSAGES)
    assert time.monotonic() - started < 0.5
    exc = info.value
    assert (exc.status_code, exc.code) == (429, "rate_limit_exceeded")
    assert 28 <= int(exc.response.headers["retry-after"]) <= 30
    assert len(up.seen) == 1


def test_a_breaker_opened_by_429s_and_a_model_rate_limiting_answer_429(servers: Servers, client: Client) -> None:
    first = servers.upstream("first", behaviour="status:429", retry_after="1")
    second = servers.upstream("second", behaviour="status:429", retry_after="4")
    sdk = client(servers.gateway(chain(first, second).replace(
        f"url: {first.url}}}", f"url: {first.url}, breaker: {{consecutive_failures: 1, cooldown_s: 9}}}}")))
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="auto", messages=MESSAGES)  # m0's 429 opens its breaker
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="auto", messages=MESSAGES)
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["retry-after"] == "4"  # m1's 4 s is sooner than m0's cooldown
    assert (len(first.seen), len(second.seen)) == (1, 2)


def test_a_breaker_opened_by_server_errors_still_answers_503(servers: Servers, client: Client) -> None:
    first = servers.upstream("first", behaviour="status:429")
    second = servers.upstream("second", behaviour="reset")
    sdk = client(servers.gateway(chain(first, second, breaker=", breaker: {consecutive_failures: 1, cooldown_s: 9}")))
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="auto", messages=MESSAGES)
    assert info.value.status_code == 503
    with pytest.raises(openai.InternalServerError) as info:  # both open now: one for 429s, one for resets
        sdk.chat.completions.create(model="auto", messages=MESSAGES)
    assert (info.value.status_code, info.value.code) == (503, "models_unavailable")


@pytest.mark.parametrize(("behaviours", "status", "code"), [
    (("status:500", "status:429"), 429, "upstream_rate_limited"),  # the last error decides, as before
    (("status:429", "status:500"), 502, "upstream_server_error"),
])
def test_a_mix_of_rate_limits_and_other_failures_keeps_the_last_error(
    servers: Servers, http: httpx.Client, behaviours: tuple[str, str], status: int, code: str
) -> None:
    ups = [servers.upstream(f"u{i}", behaviour=b) for i, b in enumerate(behaviours)]
    resp = http.post(f"{servers.gateway(chain(*ups))}/chat/completions", json={**CHAT, "model": "auto"})
    assert (resp.status_code, envelope(resp)["code"]) == (status, code)


# -- the upstream does not have the model --------------------------------------------------------------------

OPENAI_404 = {"error": {"message": "The model `served-1` does not exist or you do not have access to it.",
                        "type": "invalid_request_error", "param": None, "code": "model_not_found"}}
VLLM_404 = {"error": {"message": "The model `served-1` does not exist.", "type": "NotFoundError", "param": "model",
                      "code": 404}}
VLLM_OLD_404 = {"object": "error", "message": "The model `served-1` does not exist.", "type": "NotFoundError",
                "param": None, "code": 404}


@pytest.mark.parametrize("body", [OPENAI_404, VLLM_404, VLLM_OLD_404], ids=["openai", "vllm", "vllm-old"])
def test_a_missing_model_falls_back_first_then_is_openais_404(
    servers: Servers, client: Client, body: dict[str, object]
) -> None:
    first = servers.upstream("first", behaviour="status:404", error_body=body)
    second = servers.upstream("second", behaviour="status:404", error_body=body)
    sdk = client(servers.gateway(chain(first, second)))
    with pytest.raises(openai.NotFoundError) as info:
        sdk.chat.completions.create(model="auto", messages=MESSAGES)
    exc = info.value
    assert (exc.status_code, exc.code, exc.type) == (404, "model_not_found", "invalid_request_error")
    assert "m0: the upstream does not serve the model; m1: the upstream does not serve the model" in exc.message
    assert exc.response.headers["x-nanoroute-fallbacks"] == "2"
    assert (len(first.seen), len(second.seen)) == (1, 1)  # not retried, fallen back
    second.behaviour = "ok"
    raw = sdk.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert (raw.headers["x-nanoroute-model"], raw.headers["x-nanoroute-fallbacks"]) == ("m1", "1")


def test_a_404_that_names_no_model_is_still_the_gateways_502(servers: Servers, client: Client) -> None:
    up = servers.upstream(behaviour="status:404", error_body={"detail": "Not Found"})  # a wrong base URL
    sdk = client(servers.gateway(single_model(up)))
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="m", messages=MESSAGES)
    assert (info.value.status_code, info.value.code) == (502, "upstream_server_error")


def test_a_missing_model_through_litellm_is_404(servers: Servers, client: Client,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOROUTE_TEST_ANTHROPIC_KEY", "sk-ant-test-secret-key")
    fake = servers.anthropic(behaviour="status:404")
    sdk = client(servers.gateway(f"""
backends:
  anthropic: {{type: litellm, provider: anthropic, api_key_env: NANOROUTE_TEST_ANTHROPIC_KEY, url: {fake.url}}}
models:
  claude: {{backend: anthropic, name: claude-3-5-haiku-20241022}}
policies:
  - {{name: only, match: {{model: claude}}, candidates: [claude], reliability: {{retries: {{max: 0}}}}}}
"""))
    with pytest.raises(openai.NotFoundError) as info:
        sdk.chat.completions.create(model="claude", messages=MESSAGES, max_tokens=5)
    assert (info.value.code, info.value.type) == ("model_not_found", "invalid_request_error")
    assert len(fake.seen) == 1


# -- unknown paths: OpenAI's words --------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/foo"), ("POST", "/v1/chat/completion"),
                                              ("DELETE", "/"), ("GET", "/v2/models")])
def test_an_unknown_path_names_the_method_and_path(servers: Servers, http: httpx.Client, method: str,
                                                    path: str) -> None:
    base = servers.gateway(single_model(servers.upstream())).removesuffix("/v1")
    resp = http.request(method, base + path)
    assert resp.status_code == 404
    assert envelope(resp) == {"message": f"Invalid URL ({method} {path})", "type": "invalid_request_error",
                              "param": None, "code": "unknown_url"}


def test_an_unknown_path_is_an_sdk_not_found_error(servers: Servers, client: Client) -> None:
    sdk = client(servers.gateway(single_model(servers.upstream())))
    with pytest.raises(openai.NotFoundError) as info:
        sdk.get("/foo", cast_to=object)
    assert info.value.code == "unknown_url"


def test_a_long_unknown_path_is_cut_short_in_the_message(servers: Servers, http: httpx.Client) -> None:
    base = servers.gateway(single_model(servers.upstream())).removesuffix("/v1")
    resp = http.get(f"{base}/{'x' * 5000}")
    assert resp.status_code == 404
    assert len(envelope(resp)["message"]) < 200


# -- x-request-id on every response --------------------------------------------------------------------------

HEX_ID = re.compile(r"[0-9a-f]{32}")

EVERY_ROUTE = [  # method, path, body, key, status
    ("GET", "/v1/models", None, KEYS, 200),
    ("GET", "/v1/models/m", None, KEYS, 200),
    ("GET", "/v1/models/nope", None, KEYS, 404),
    ("GET", "/v1/models", None, None, 401),
    ("GET", "/healthz", None, None, 200),
    ("GET", "/readyz", None, None, 200),
    ("GET", "/metrics", None, None, 200),
    ("GET", "/admin/config", None, ADMIN, 200),
    ("GET", "/admin/config", None, KEYS, 401),
    ("POST", "/v1/feedback", {"request_id": "r-1", "score": 1}, KEYS, 200),
    ("POST", "/v1/feedback", {"request_id": "r-1", "pad": "x" * 70_000}, KEYS, 413),
    ("POST", "/v1/feedback", {"score": 1}, KEYS, 400),
    ("GET", "/v1/foo", None, KEYS, 404),
    ("DELETE", "/v1/models", None, KEYS, 405),
    ("POST", "/v1/chat/completions", CHAT, KEYS, 200),
    ("POST", "/v1/chat/completions", CHAT, None, 401),
    ("GET", "/v1/chat/completions", None, KEYS, 405),
    ("POST", "/v1/chat/completions", {**CHAT, "pad": "x" * 5000}, KEYS, 413),
    ("POST", "/v1/chat/completions", {"model": "m"}, KEYS, 400),
]


@pytest.fixture
def gateway_root(servers: Servers, tmp_path: Path) -> str:
    return servers.gateway(single_model(servers.upstream()), api_keys=KEYS, admin_key=ADMIN, max_body_bytes=4096,
                           data_dir=tmp_path).removesuffix("/v1")


def _call(http: httpx.Client, root: str, method: str, path: str, body: object, key: str | None,
          **headers: str) -> httpx.Response:
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    content = None if body is None else json.dumps(body).encode()
    return http.request(method, root + path, content=content, headers=headers)


@pytest.mark.parametrize(("method", "path", "body", "key", "status"), EVERY_ROUTE)
def test_every_response_echoes_a_valid_request_id(gateway_root: str, http: httpx.Client, method: str, path: str,
                                                  body: object, key: str | None, status: int) -> None:
    resp = _call(http, gateway_root, method, path, body, key, **{"x-request-id": "client-id-7"})
    assert resp.status_code == status
    assert resp.headers.get_list("x-request-id") == ["client-id-7"]  # once, never twice


@pytest.mark.parametrize(("method", "path", "body", "key", "status"), EVERY_ROUTE)
def test_every_response_has_a_new_request_id_otherwise(gateway_root: str, http: httpx.Client, method: str,
                                                       path: str, body: object, key: str | None, status: int) -> None:
    resp = _call(http, gateway_root, method, path, body, key, **{"x-request-id": "x" * 129})  # too long: not taken
    assert resp.status_code == status
    ids = resp.headers.get_list("x-request-id")
    assert len(ids) == 1 and HEX_ID.fullmatch(ids[0])
    assert _call(http, gateway_root, method, path, body, key).headers["x-request-id"] != ids[0]


# -- CORS ----------------------------------------------------------------------------------------------------

APP = "https://app.example"
PREFLIGHT = {"origin": APP, "access-control-request-method": "POST",
             "access-control-request-headers": "authorization, content-type, x-stainless-os, x-stainless-retry-count, "
                                               "x-nanoroute-task, anthropic-version, x-api-key"}


def test_cors_is_off_by_default(servers: Servers, http: httpx.Client) -> None:
    base = servers.gateway(single_model(servers.upstream()))
    resp = http.options(f"{base}/chat/completions", headers=PREFLIGHT)
    assert resp.status_code == 405
    assert "access-control-allow-origin" not in resp.headers
    resp = http.post(f"{base}/chat/completions", json=CHAT, headers={"origin": APP})
    assert resp.status_code == 200
    assert not [h for h in resp.headers if h.startswith("access-control-")]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/models", "/v1/feedback",
                                  "/v1/anything"])
def test_a_preflight_is_answered_without_a_key(servers: Servers, http: httpx.Client, path: str) -> None:
    up = servers.upstream()
    root = servers.gateway(single_model(up), api_keys=KEYS,
                           cors_origins=f"{APP}, https://other.example").removesuffix("/v1")
    resp = http.options(root + path, headers={**PREFLIGHT, "x-request-id": "pre-1"})
    assert resp.status_code == 204
    assert resp.content == b""
    h = resp.headers
    assert h["access-control-allow-origin"] == APP
    assert {"GET", "POST"} <= {m.strip() for m in h["access-control-allow-methods"].split(",")}
    assert h["access-control-allow-headers"] == PREFLIGHT["access-control-request-headers"]
    assert int(h["access-control-max-age"]) >= 600
    assert h.get_list("x-request-id") == ["pre-1"]
    assert up.seen == []


def test_a_preflight_from_another_origin_is_refused(servers: Servers, http: httpx.Client) -> None:
    base = servers.gateway(single_model(servers.upstream()), cors_origins=APP)
    resp = http.options(f"{base}/chat/completions", headers={**PREFLIGHT, "origin": "https://evil.example"})
    assert resp.status_code == 400
    assert "access-control-allow-origin" not in resp.headers


@pytest.mark.parametrize("stream", [False, True])
def test_answers_to_an_allowed_origin_carry_cors_headers(servers: Servers, client: Client, stream: bool) -> None:
    base = servers.gateway(single_model(servers.upstream()), api_keys=KEYS, cors_origins=APP)
    sdk = client(base, api_key=KEYS).with_options(default_headers={"origin": APP})
    with sdk.chat.completions.with_streaming_response.create(model="m", messages=MESSAGES, stream=stream) as raw:
        text = "".join(raw.iter_text())
    assert raw.headers["access-control-allow-origin"] == APP
    exposed = {h.strip() for h in raw.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "x-nanoroute-model", "x-nanoroute-policy", "x-nanoroute-fallbacks", "retry-after",
            "x-ratelimit-remaining-requests"} <= exposed
    assert ("tok0" in text and text.rstrip().endswith("[DONE]")) if stream else "Hello from the fake" in text


def test_errors_to_an_allowed_origin_carry_cors_headers(servers: Servers, http: httpx.Client) -> None:
    root = servers.gateway(single_model(servers.upstream(behaviour="status:429")), api_keys=KEYS,
                           cors_origins="*").removesuffix("/v1")
    resp = http.post(f"{root}/v1/chat/completions", json=CHAT, headers={"origin": APP})  # no key
    assert (resp.status_code, resp.headers["access-control-allow-origin"]) == (401, "*")
    resp = http.post(f"{root}/v1/chat/completions", json=CHAT,
                     headers={"origin": APP, "authorization": f"Bearer {KEYS}"})
    assert (resp.status_code, resp.headers["access-control-allow-origin"]) == (429, "*")
    assert "retry-after" in resp.headers["access-control-expose-headers"]
    resp = http.get(f"{root}/healthz", headers={"origin": APP})
    assert resp.headers["access-control-allow-origin"] == "*"
