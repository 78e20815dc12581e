"""Attack: make the gateway hold more than it can, or keep state per string a client makes up.

Every buffer has a byte limit (an upstream's JSON answer, a cascade's held stream, the capture queue);
task names from headers and metadata are checked; state per task exists only for the config's tasks;
the access log never writes an unbounded client string.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.capture.capture import Capture, Sample
from gateway.capture.sink import LocalSink
from gateway.config.loader import load_text
from gateway.config.redact import Redactor
from gateway.metrics import Metrics
from gateway.record import RequestRecord
from gateway.rollout import Rollouts
from gateway.routing.cascade import MAX_BUFFER
from gateway.routing.signals import Signals
from tests.api.observe import Scrape
from tests.api.support import CHAT, single_model, wait_until
from tests.fakes.servers import Servers
from tests.unit.test_rollout import CONFIG as ROLLOUT_CONFIG


def test_an_upstream_answer_over_max_response_bytes_fails_the_attempt(servers: Servers) -> None:
    up = servers.upstream(answer="x" * 20_000)
    base = servers.gateway(single_model(up, backend_extra=", max_response_bytes: 4096"))
    resp = httpx.post(f"{base}/chat/completions", json=CHAT)
    assert (resp.status_code, resp.json()["error"]["code"]) == (502, "upstream_malformed_response")


def test_a_cascading_stream_too_long_to_hold_escalates(servers: Servers) -> None:
    piece = "y" * 100_000

    async def flood(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(MAX_BUFFER // len(piece) + 5):  # past the limit, then more
            chunk = {"id": "c", "object": "chat.completion.chunk", "model": "cheap",
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", flood)
    port = servers.serve(app)
    good = servers.upstream("good")
    base = servers.gateway(f"""
backends:
  cheap: {{type: openai, url: "http://127.0.0.1:{port}/v1"}}
  good: {{type: openai, url: {good.url}}}
models:
  cheap: {{backend: cheap, price: {{input: 0.1, output: 0.1}}}}
  good: {{backend: good, price: {{input: 5, output: 15}}}}
policies:
  - {{name: c, strategy: cascade, candidates: [cheap, good]}}
""")
    with httpx.stream("POST", f"{base}/chat/completions", json={**CHAT, "stream": True}) as resp:
        body = resp.read()
        assert resp.headers["x-nanoroute-model"] == "good"
    assert b"Hello" in body or b"tok0" in body
    assert Scrape(base).value("nanoroute_fallbacks_total", from_model="cheap", reason="cascade_size") == 1


def test_the_capture_queue_is_bounded_in_bytes(tmp_path: Path) -> None:
    metrics = Metrics(CollectorRegistry())
    capture = Capture(LocalSink(tmp_path, 1 << 20, 1 << 30), metrics, queue_size=1000, queue_bytes=10_000)

    def offer(size: int) -> None:
        rec = RequestRecord("r", 0.0, model=object())  # type: ignore[arg-type]
        capture.offer(Sample("t", Redactor(), {}, request_bytes=size), rec)

    offer(6_000)
    offer(6_000)  # would hold 12,000 bytes: dropped, though the queue has room for 998 more records
    offer(3_000)
    dropped = metrics.registry.get_sample_value("nanoroute_capture_dropped_total", {"reason": "queue_full"})
    assert dropped == 1


def test_rollout_scores_are_kept_per_configured_task_only() -> None:
    signals = Signals(exact_tokens=False)
    rollouts = Rollouts(signals)
    rollouts.configure(load_text(ROLLOUT_CONFIG % ""), {})
    state = next(iter(rollouts._states.values()))
    for i in range(50):
        rollouts.record(state, 1.0, f"made-up-task-{i}")
    assert signals.quality("small", "made-up-task-3") is None
    assert signals.quality("small", None) == 1.0
    assert len(signals._quality) == 1


@pytest.mark.parametrize(("header", "body_meta"), [
    ("x" * 129, None), ("has space", None), ("../etc/passwd", None), ("line\tbreak", None),
    (None, "x" * 129), (None, "-leading-dash"),
])
def test_task_names_are_checked(servers: Servers, header: str | None, body_meta: str | None) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up))
    body = dict(CHAT) if body_meta is None else {**CHAT, "metadata": {"task": body_meta}}
    headers = {} if header is None else {"X-Nanoroute-Task": header}
    resp = httpx.post(f"{base}/chat/completions", json=body, headers=headers)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == ("X-Nanoroute-Task" if header is not None else "metadata.task")
    assert up.seen == []
    ok = httpx.post(f"{base}/chat/completions", json=CHAT, headers={"X-Nanoroute-Task": "support/billing:v2"})
    assert ok.status_code == 200


def test_the_access_log_holds_no_unbounded_client_string(servers: Servers, caplog: pytest.LogCaptureFixture) -> None:
    up = servers.upstream(behaviour="status:500")
    base = servers.gateway(single_model(up), access_log=True)
    huge = "z" * 100_000
    long = "z" * 50_000  # a header under the server's 64 KiB limit for a request's head, so the app sees it
    with caplog.at_level(logging.INFO, logger="nanoroute.access"):
        for body, headers in (({**CHAT, "model": huge}, {"X-Request-Id": long}),
                              ({**CHAT, "user": huge, "metadata": {"note": huge}}, {"X-Request-Id": "q" * 129}),
                              (CHAT, {"X-Nanoroute-Task": long})):
            httpx.post(f"{base}/chat/completions", json=body, headers=headers)
        wait_until(lambda: sum(r.name == "nanoroute.access" for r in caplog.records) == 3)
    lines = [r.getMessage() for r in caplog.records if r.name == "nanoroute.access"]
    assert all(len(line) < 2000 and "zzzz" not in line and "qqqq" not in line for line in lines)
    assert [json.loads(line)["status"] for line in lines] == [404, 502, 400]
