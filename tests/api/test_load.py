"""300 concurrent clients through the official async SDK while the primary model fails halfway.

Not timed: it asserts outcomes. Every request ends, within the deadline, in a success (by fallback
when the primary is gone) or a clean OpenAI error; none is lost or hung; the upstreams' request counts
add up with what the clients saw and what the metrics counted; nothing is left behind.

"Within the deadline" is read from the gateway's access log (each request's latency as the gateway
measured it): the clients, the gateway and the upstreams share one process and its CPU here, so times
taken on the client side mostly measure the SDK waiting for its turn. One fault runs with the default
suite; the others are marked e2e (each takes several seconds).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass

import httpx
import openai
import pytest

from tests.api.observe import Scrape, assert_nothing_left, tasks
from tests.api.support import MESSAGES, wait_until
from tests.fakes.servers import Servers

CLIENTS = 300
DEADLINE_S = 6.0
SLACK_S = 1.0  # for the event loop to end a request whose deadline ran out, on a busy machine


@dataclass
class Outcome:
    model: str | None  # the catalog model that answered (x-nanoroute-model), None when none did
    error: str | None  # the OpenAI error's status and code, or the stream's error event; None on success
    seconds: float


async def one(sdk: openai.AsyncOpenAI, stream: bool) -> Outcome:
    started = time.monotonic()
    model = error = None
    try:
        raw = await sdk.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES, stream=stream)
        model = raw.headers.get("x-nanoroute-model")
        if stream:
            text = ""
            async for chunk in raw.parse():  # type: ignore[union-attr]
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
            assert text == "tok0 tok1 tok2 "
        else:
            assert raw.parse().choices[0].message.content == "Hello from the fake upstream."  # type: ignore[union-attr]
    except openai.APIConnectionError:
        raise  # not an answer from the gateway: the test fails
    except openai.APIStatusError as exc:  # a clean OpenAI error envelope, with the gateway's headers
        model = exc.response.headers.get("x-nanoroute-model")
        error = f"{exc.status_code} {exc.code}"
    except openai.APIError as exc:  # an error event that ended a stream after its first content
        error = f"stream: {exc.message}"
    return Outcome(model, error, time.monotonic() - started)


async def run_clients(base: str) -> list[Outcome]:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with (
        httpx.AsyncClient(limits=limits, timeout=30) as http,
        openai.AsyncOpenAI(base_url=base, api_key="k", max_retries=0, http_client=http) as sdk,
    ):
        # Half the clients stream, half do not, interleaved.
        return await asyncio.wait_for(asyncio.gather(*(one(sdk, stream=i % 2 == 1) for i in range(CLIENTS))), 120)


@pytest.mark.parametrize("fault", [
    "reset",
    pytest.param("status:500", marks=pytest.mark.e2e),
    pytest.param("hang", marks=pytest.mark.e2e),
    pytest.param("stall_mid", marks=pytest.mark.e2e),
])
def test_300_clients_while_the_primary_fails_halfway(
    servers: Servers, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    total = CLIENTS
    main = servers.upstream("main", switch_after=total // 2, switch_to=fault)
    spare = servers.upstream("spare")
    base = servers.gateway(f"""\
backends:
  primary: {{type: openai, url: "{main.url}", timeouts: {{total_s: 2.5, ttft_s: 2.5, idle_s: 1}}}}
  backup: {{type: openai, url: "{spare.url}"}}
models:
  main: {{backend: primary}}
  spare: {{backend: backup}}
policies:
  - {{name: resilient, match: {{model: auto}}, candidates: [main], fallback: [spare],
     reliability: {{deadline_ms: {DEADLINE_S * 1000:.0f}}}}}
""")
    baseline = tasks(servers)

    with caplog.at_level(logging.INFO, logger="nanoroute.access"):
        outcomes = asyncio.run(run_clients(base))
    log = [json.loads(r.getMessage()) for r in caplog.records if r.name == "nanoroute.access"]

    # None lost, none hung: every request ended, each within the deadline (plus the time to say so).
    assert len(outcomes) == total
    assert len(log) == total
    assert max(entry["latency_ms"] for entry in log) < (DEADLINE_S + SLACK_S) * 1000
    m = Scrape(base)
    answered = Counter(o.model for o in outcomes if o.error is None)
    errors = Counter(o.error for o in outcomes if o.error is not None)
    assert answered["main"] > 0
    if fault == "stall_mid":
        # Streams cannot switch once main sent content: they end with an error event. JSON is unaffected.
        assert errors
        # Those stalls count against main's breaker. Where they end before the last clients arrive (a slow
        # machine spreads the 300 out), it opens and turns the late ones to the spare before any attempt:
        # every answer from the spare is such a skip, never a switch after a failed attempt at main.
        assert answered["spare"] == m.value("nanoroute_fallbacks_total", from_model="main", to_model="spare",
                                            reason="circuit_open")
        # The idle limit (1 s) ends a stalled stream; on a loaded machine the event loop may wake up for it
        # only after the attempt's total limit (2.5 s) passed, which then ends it instead. Either way the
        # stall was bounded and the client got a clean error event.
        assert set(errors) <= {"stream: the upstream stalled in the middle of the stream",
                               "stream: the upstream did not answer in time"}
    else:
        assert answered["spare"] > 0
        assert not errors, errors  # before the first byte, every failure falls back invisibly
        # Failing every time, the breaker took it out: once the gateway's own check of main failed too (for a
        # hang, that check ends by its timeout, after the clients are done).
        wait_until(lambda: Scrape(base).value("nanoroute_circuit_open", model="main") == 1, timeout=10)
    assert answered.total() + errors.total() == total

    # The counts add up: each upstream saw exactly the attempts the gateway made (and main, besides, the
    # gateway's own checks before its breaker opened).
    failed_at_main = m.value("nanoroute_upstream_errors_total", model="main")
    mid_stream = sum(1 for o in outcomes if o.error and o.error.startswith("stream:"))
    assert len(spare.seen) == answered["spare"]
    assert len(main.served) == answered["main"] + failed_at_main + mid_stream
    assert failed_at_main + mid_stream > 0
    assert m.value("nanoroute_requests_total") == total
    assert m.value("nanoroute_requests_total", outcome="success") == answered.total()
    assert m.value("nanoroute_requests_total", outcome="stream_error") == mid_stream
    assert m.value("nanoroute_fallbacks_total", from_model="main", to_model="spare") == answered["spare"]
    assert_nothing_left(servers, [main, spare], baseline)
    checks = Scrape(base).value("nanoroute_breaker_checks_total", model="main")  # each counted once it ended
    assert len(main.seen) - len(main.served) == checks
