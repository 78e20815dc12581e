"""Fault injection through the gateway, with the official SDK against real fake upstreams on loopback.

Each test breaks the primary model's upstream in one way and asserts three things: what the client
sees, what the metrics count, and that nothing is left behind (no request open upstream, nothing in
flight in the gateway, no task beyond the baseline).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest

from tests.api.observe import Scrape, assert_nothing_left, tasks
from tests.api.support import MESSAGES, Client, wait_until
from tests.fakes.servers import Servers, free_port
from tests.fakes.upstream import FakeUpstream

SPARE_STREAM = "tok0 tok1 tok2 "


def config(main_url: str, spare_url: str, *, main_backend: str = "", main_model: str = "", policy: str = "",
           deadline_ms: int = 5000) -> str:
    """`auto` -> policy `resilient`: model `main` (backend `primary`), then `spare` (backend `backup`)."""
    return f"""\
backends:
  primary: {{type: openai, url: "{main_url}", timeouts: {{total_s: 1, ttft_s: 0.5, idle_s: 0.5}}{main_backend}}}
  backup: {{type: openai, url: "{spare_url}"}}
models:
  main: {{backend: primary, name: served-main{main_model}}}
  spare: {{backend: backup, name: served-spare}}
policies:
  - {{name: resilient, match: {{model: auto}}, candidates: [main], fallback: [spare],
     reliability: {{deadline_ms: {deadline_ms}{policy}}}}}
"""


@dataclass
class Setup:
    base: str
    main: FakeUpstream
    spare: FakeUpstream
    baseline: int

    def check_nothing_left(self, servers: Servers) -> None:
        assert_nothing_left(servers, [self.main, self.spare], self.baseline)


@pytest.fixture
def setup(servers: Servers, client: Client) -> Iterator[object]:
    def make(behaviour: str = "ok", *, listening: bool = True, **kwargs: str) -> Setup:
        main = servers.upstream("main", behaviour=behaviour)
        spare = servers.upstream("spare")
        url = main.url if listening else f"http://127.0.0.1:{free_port()}/v1"
        base = servers.gateway(config(url, spare.url, **kwargs), access_log=False)
        # Warm up: open the pools and the spare's connection, so the baseline counts what stays.
        client(base).chat.completions.create(model="spare", messages=MESSAGES)
        spare.seen.clear()
        return Setup(base, main, spare, tasks(servers))

    yield make


def read_stream(sdk: openai.OpenAI) -> tuple[str, dict[str, str], set[str]]:
    raw = sdk.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES, stream=True)
    text, models = "", set()
    for chunk in raw.parse():
        models.add(chunk.model)
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    return text, dict(raw.headers), models


# -- failures before the first content: the spare answers and the client cannot tell ---------------------

BEFORE_CONTENT = [
    ("status:500", "server_error"),
    ("status:503", "server_error"),
    ("status:429", "rate_limited"),
    ("hang", "timeout"),
    ("reset", "connect"),
    ("garbage", "malformed"),
    ("bad_json", "malformed"),
    ("not_listening", "connect"),
]
STREAM_ONLY = [("stall_first", "timeout"), ("stall_role", "timeout"), ("error_event", "server_error")]


def _counted_one_fallback(base: str, kind: str) -> None:
    m = Scrape(base)
    assert m.value("nanoroute_fallbacks_total", policy="resilient", from_model="main", to_model="spare",
                   reason=kind) == 1
    assert m.value("nanoroute_fallbacks_total") == 1
    assert m.value("nanoroute_upstream_errors_total", model="main", kind=kind) == 1
    assert m.value("nanoroute_requests_total", policy="resilient", model="spare", outcome="success") == 1


@pytest.mark.parametrize(("fault", "kind"), BEFORE_CONTENT)
def test_json_falls_back_invisibly(setup: object, servers: Servers, client: Client, fault: str, kind: str) -> None:
    s = setup(fault, listening=fault != "not_listening")  # type: ignore[operator]
    raw = client(s.base).chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == "Hello from the fake upstream."
    assert (raw.headers["x-nanoroute-model"], raw.headers["x-nanoroute-fallbacks"]) == ("spare", "1")
    assert len(s.spare.seen) == 1
    _counted_one_fallback(s.base, kind)
    s.check_nothing_left(servers)


@pytest.mark.parametrize(("fault", "kind"), BEFORE_CONTENT + STREAM_ONLY)
def test_stream_falls_back_invisibly(setup: object, servers: Servers, client: Client, fault: str, kind: str) -> None:
    s = setup(fault, listening=fault != "not_listening")  # type: ignore[operator]
    text, headers, models = read_stream(client(s.base))
    # Not one byte of the failed attempt reached the client (stall_role's role chunk included).
    assert (text, models) == (SPARE_STREAM, {"served-spare"})
    assert (headers["x-nanoroute-model"], headers["x-nanoroute-fallbacks"]) == ("spare", "1")
    _counted_one_fallback(s.base, kind)
    s.check_nothing_left(servers)


# -- failures after the first content: no switch; an error event and a clean end ----------------------


@pytest.mark.parametrize(("fault", "message"), [
    ("stall_mid", "the upstream stalled in the middle of the stream"),
    ("cut", "the upstream's answer was cut off before its end"),
])
def test_a_stream_failing_midway_ends_with_an_error_event(
    setup: object, servers: Servers, client: Client, fault: str, message: str
) -> None:
    s = setup(fault)  # type: ignore[operator]
    got = ""
    started = time.monotonic()
    with pytest.raises(openai.APIError) as info:
        for chunk in client(s.base).chat.completions.create(model="auto", messages=MESSAGES, stream=True):
            got += chunk.choices[0].delta.content or ""
    assert got == "tok0 "  # what the main model sent before it failed, and nothing from another model
    assert info.value.message == message
    assert time.monotonic() - started < 3
    assert s.spare.seen == []
    m = Scrape(s.base)
    assert m.value("nanoroute_requests_total", policy="resilient", model="main", outcome="stream_error") == 1
    assert m.value("nanoroute_fallbacks_total") == 0
    s.check_nothing_left(servers)


def test_the_deadline_ends_a_stream_that_is_too_slow(setup: object, servers: Servers, client: Client) -> None:
    s = setup("slow_chunks", deadline_ms=800)  # type: ignore[operator]
    s.main.chunks, s.main.chunk_delay_s = 10, 0.3  # each gap under idle_s, the whole over the deadline
    started = time.monotonic()
    with pytest.raises(openai.APIError) as info:
        for _ in client(s.base).chat.completions.create(model="auto", messages=MESSAGES, stream=True):
            pass
    assert 0.7 < time.monotonic() - started < 2
    assert "deadline" in info.value.message
    assert Scrape(s.base).value("nanoroute_requests_total", outcome="stream_error") == 1
    s.check_nothing_left(servers)


def test_a_slow_client_is_not_an_idle_upstream(setup: object, servers: Servers, client: Client) -> None:
    s = setup()  # type: ignore[operator]
    s.main.chunks = 4
    received = []
    for chunk in client(s.base).chat.completions.create(model="auto", messages=MESSAGES, stream=True):
        received.append(chunk)
        time.sleep(0.3)  # 1.2 s in all: more than idle_s (0.5), spent by the client, not the upstream
    assert len(received) == 5
    assert Scrape(s.base).value("nanoroute_requests_total", outcome="success") == 2
    s.check_nothing_left(servers)


# -- deadlines, retries, Retry-After -------------------------------------------------------------------


def test_the_deadline_bounds_all_attempts_together(servers: Servers, client: Client) -> None:
    main, spare = servers.upstream("main", behaviour="hang"), servers.upstream("spare", behaviour="hang")
    cfg = config(main.url, spare.url, deadline_ms=700).replace(
        f'url: "{spare.url}"', f'url: "{spare.url}", timeouts: {{total_s: 1}}')
    base = servers.gateway(cfg)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        client(base).chat.completions.create(model="auto", messages=MESSAGES)
    elapsed = time.monotonic() - started
    assert 0.6 < elapsed < 1.2  # not total_s (1 s) per model, one 0.7 s deadline for both
    assert info.value.status_code == 504
    assert "deadline ran out" in info.value.message


def test_the_clients_timeout_shortens_the_deadline(servers: Servers, client: Client) -> None:
    main, spare = servers.upstream("main", behaviour="hang"), servers.upstream("spare")
    base = servers.gateway(config(main.url, spare.url))
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        client(base).chat.completions.create(model="auto", messages=MESSAGES, extra_body={"timeout": 0.3})
    assert time.monotonic() - started < 0.8
    assert info.value.status_code == 504
    assert "timeout" not in main.seen[0].body  # the gateway's own field does not go upstream
    assert spare.seen == []


def test_a_short_retry_after_is_waited_out_on_the_same_model(servers: Servers, client: Client) -> None:
    main = servers.upstream("main", behaviour="status:429", switch_after=1, switch_to="ok")
    spare = servers.upstream("spare")
    base = servers.gateway(config(main.url, spare.url, policy=", retries: {max: 1}"))
    started = time.monotonic()
    raw = client(base).chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert time.monotonic() - started >= 1.0  # Retry-After: 1
    assert (raw.headers["x-nanoroute-model"], raw.headers["x-nanoroute-fallbacks"]) == ("main", "1")
    assert (len(main.seen), spare.seen) == (2, [])
    m = Scrape(base)
    assert m.value("nanoroute_fallbacks_total", from_model="main", to_model="main", reason="rate_limited") == 1


def test_a_long_retry_after_moves_on_at_once_and_holds_the_model_off(servers: Servers, client: Client) -> None:
    main = servers.upstream("main", behaviour="status:429", retry_after="30")
    spare = servers.upstream("spare")
    base = servers.gateway(config(main.url, spare.url, policy=", retries: {max: 3}"))
    sdk = client(base)
    started = time.monotonic()
    for _ in range(3):
        assert sdk.chat.completions.with_raw_response.create(
            model="auto", messages=MESSAGES).headers["x-nanoroute-model"] == "spare"
    assert time.monotonic() - started < 1
    assert len(main.seen) == 1  # the next two skipped it: the upstream said 30 s
    m = Scrape(base)
    assert m.value("nanoroute_fallbacks_total", from_model="main", reason="circuit_open") == 2
    assert m.value("nanoroute_upstream_errors_total", model="main") == 1  # skips are not upstream errors
    assert m.value("nanoroute_circuit_open", model="main") == 1


def test_5xx_is_retried_with_backoff_when_the_policy_asks(servers: Servers, client: Client) -> None:
    main = servers.upstream("main", behaviour="status:502", switch_after=2, switch_to="ok")
    spare = servers.upstream("spare")
    base = servers.gateway(config(main.url, spare.url, policy=", retries: {max: 2, backoff_ms: 100}"))
    started = time.monotonic()
    raw = client(base).chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert time.monotonic() - started >= 0.05 + 0.1  # at least half of each backoff (jitter)
    assert (raw.headers["x-nanoroute-model"], len(main.seen), spare.seen) == ("main", 3, [])


def test_a_request_the_upstream_rejects_is_neither_retried_nor_fallen_back(servers: Servers, client: Client) -> None:
    body = {"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
                      "management policy.", "type": None, "param": "prompt", "code": "content_filter"}}
    main = servers.upstream("main", behaviour="status:400", error_body=body)
    spare = servers.upstream("spare")
    base = servers.gateway(config(main.url, spare.url, policy=", retries: {max: 3}"))
    with pytest.raises(openai.BadRequestError) as info:
        client(base).chat.completions.create(model="auto", messages=MESSAGES)
    assert info.value.code == "content_filter"
    assert (len(main.seen), spare.seen) == (1, [])
    m = Scrape(base)
    assert m.value("nanoroute_upstream_errors_total", model="main", kind="content_filter") == 1
    assert m.value("nanoroute_requests_total", outcome="upstream_rejected") == 1


# -- context windows ----------------------------------------------------------------------------------


def test_context_length_skips_to_a_larger_window(servers: Servers, client: Client) -> None:
    small, same, large = (servers.upstream(n, behaviour=b) for n, b in
                          (("small", "context"), ("same", "ok"), ("large", "ok")))
    base = servers.gateway(f"""\
backends:
  small: {{type: openai, url: "{small.url}"}}
  same: {{type: openai, url: "{same.url}"}}
  large: {{type: openai, url: "{large.url}"}}
models:
  small: {{backend: small, context_window: 4096}}
  same: {{backend: same, context_window: 4096}}
  large: {{backend: large, context_window: 128000}}
policies:
  - {{name: p, match: {{model: auto}}, candidates: [small, same, large]}}
""")
    raw = client(base).chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert raw.headers["x-nanoroute-model"] == "large"
    assert (len(small.seen), len(same.seen), len(large.seen)) == (1, 0, 1)  # `same` would not fit either
    m = Scrape(base)
    assert m.value("nanoroute_fallbacks_total", from_model="small", reason="context_length") == 1
    assert m.value("nanoroute_fallbacks_total", from_model="same", to_model="large", reason="context_window") == 1


def test_a_prompt_that_cannot_fit_skips_the_model_without_a_call(setup: object, client: Client) -> None:
    s = setup(main_model=", context_window: 1000")  # type: ignore[operator]
    long = [{"role": "user", "content": "word " * 2000}]  # about 2,500 tokens
    raw = client(s.base).chat.completions.with_raw_response.create(model="auto", messages=long)
    assert raw.headers["x-nanoroute-model"] == "spare"
    assert s.main.seen == []
    short = client(s.base).chat.completions.with_raw_response.create(model="auto", messages=MESSAGES, max_tokens=900)
    assert short.headers["x-nanoroute-model"] == "main"
    over = client(s.base).chat.completions.with_raw_response.create(model="auto", messages=MESSAGES, max_tokens=1000)
    assert over.headers["x-nanoroute-model"] == "spare"  # prompt plus max_tokens is over the window
    assert Scrape(s.base).value("nanoroute_fallbacks_total", from_model="main", reason="context_window") == 2


# -- circuit breakers ---------------------------------------------------------------------------------

BREAKER = ", breaker: {consecutive_failures: 2, cooldown_s: 0.5}"


def test_the_breaker_opens_skips_the_model_then_probes_and_closes(setup: object, client: Client) -> None:
    s = setup("status:500", main_backend=BREAKER)  # type: ignore[operator]
    sdk = client(s.base)
    for i in range(4):
        assert sdk.chat.completions.with_raw_response.create(
            model="auto", messages=MESSAGES).headers["x-nanoroute-model"] == "spare"
        if i == 1:  # two failures: the gateway checks the model, which fails that too, and opens its breaker
            wait_until(lambda: Scrape(s.base).value("nanoroute_circuit_open", model="main") == 1)
    assert len(s.main.served) == 2  # then open: the next two did not call it
    assert [c.body["max_tokens"] for c in s.main.seen if c.check] == [1]
    m = Scrape(s.base)
    assert m.value("nanoroute_circuit_open", model="main") == 1
    assert m.value("nanoroute_fallbacks_total", from_model="main", reason="circuit_open") == 2
    s.main.behaviour = "ok"
    time.sleep(0.6)
    assert sdk.chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES).headers["x-nanoroute-model"] == "main"  # the probe
    assert Scrape(s.base).value("nanoroute_circuit_open", model="main") == 0


def single(up_url: str, extra: str = "", policy: str = "") -> str:
    return f"""\
backends:
  primary: {{type: openai, url: "{up_url}"{extra}}}
models:
  main: {{backend: primary}}
policies:
  - {{name: only, match: {{model: auto}}, candidates: [main]{policy}}}
"""


def test_when_every_candidate_is_open_the_answer_is_503_with_retry_after_at_once(
    servers: Servers, client: Client
) -> None:
    main = servers.upstream("main", behaviour="status:500")
    base = servers.gateway(single(main.url, ", breaker: {consecutive_failures: 1, cooldown_s: 7}"))
    sdk = client(base)
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="auto", messages=MESSAGES)
    wait_until(lambda: Scrape(base).value("nanoroute_circuit_open", model="main") == 1)  # the check failed too
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="auto", messages=MESSAGES)
    assert time.monotonic() - started < 0.5
    exc = info.value
    assert (exc.status_code, exc.code) == (503, "models_unavailable")
    assert exc.response.headers["retry-after"] == "7"
    assert len(main.served) == 1


def test_least_recently_failed_tries_an_open_model_anyway(servers: Servers, client: Client) -> None:
    main = servers.upstream("main", behaviour="status:500")
    base = servers.gateway(single(main.url, ", breaker: {consecutive_failures: 1, cooldown_s: 60}",
                                  ", reliability: {on_all_open: least_recently_failed}"))
    sdk = client(base)
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="auto", messages=MESSAGES)
    wait_until(lambda: Scrape(base).value("nanoroute_circuit_open", model="main") == 1)
    main.behaviour = "ok"
    raw = sdk.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert raw.headers["x-nanoroute-model"] == "main"
    assert len(main.served) == 2
    assert Scrape(base).value("nanoroute_circuit_open", model="main") == 0  # the answer closed it


# -- overload --------------------------------------------------------------------------------------------


def test_a_saturated_model_spills_over_instead_of_queueing(setup: object, servers: Servers) -> None:
    s = setup(main_model=", max_in_flight: 1")  # type: ignore[operator]
    s.main.delay_s = 0.5
    import concurrent.futures

    def one() -> str:
        with openai.OpenAI(base_url=s.base, api_key="k", max_retries=0) as sdk:
            raw = sdk.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
            return raw.headers["x-nanoroute-model"]

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(one)
        time.sleep(0.2)  # the first is in flight at main now
        rest = [pool.submit(one) for _ in range(2)]
        answered = sorted([first.result(), *(f.result() for f in rest)])
    assert answered == ["main", "spare", "spare"]
    m = Scrape(s.base)
    assert m.value("nanoroute_fallbacks_total", from_model="main", reason="overloaded") == 2
    s.check_nothing_left(servers)


def test_a_client_that_goes_away_frees_its_slot(setup: object, servers: Servers) -> None:
    import httpx

    s = setup("hang", main_model=", max_in_flight: 1")  # type: ignore[operator]
    with httpx.Client(timeout=0.3) as http, pytest.raises(httpx.ReadTimeout):
        http.post(f"{s.base}/chat/completions", json={"model": "auto", "messages": MESSAGES})
    s.check_nothing_left(servers)
    assert s.main.cancelled == 1
    s.main.behaviour = "ok"
    with openai.OpenAI(base_url=s.base, api_key="k", max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert raw.headers["x-nanoroute-model"] == "main"  # the slot is free again
    assert Scrape(s.base).value("nanoroute_requests_total", outcome="cancelled") == 1


# -- replicas ---------------------------------------------------------------------------------------------


def test_a_dead_replica_is_skipped_at_once_for_the_next_one(servers: Servers, client: Client) -> None:
    live = servers.upstream("live")
    base = servers.gateway(f"""\
backends:
  pool: {{type: vllm, urls: ["http://127.0.0.1:{free_port()}/v1", "{live.url}"],
          health: {{enabled: false}}, breaker: {{consecutive_failures: 2}}}}
models:
  main: {{backend: pool}}
""")
    sdk = client(base)
    headers = [sdk.chat.completions.with_raw_response.create(model="main", messages=MESSAGES).headers
               for _ in range(4)]
    assert [h["x-nanoroute-model"] for h in headers] == ["main"] * 4
    assert len(live.seen) == 4
    # The dead replica was tried twice (once per turn), then passive outlier detection took it out.
    assert sorted(h["x-nanoroute-fallbacks"] for h in headers) == ["0", "0", "1", "1"]
    m = Scrape(base)
    assert m.value("nanoroute_replica_up", backend="pool", replica="0") == 0
    assert m.value("nanoroute_replica_up", backend="pool", replica="1") == 1
    assert m.value("nanoroute_circuit_open", model="main") == 0
