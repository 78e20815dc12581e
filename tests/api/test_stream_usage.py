"""Streams are counted whatever API they came in by and however they ended: the upstream's usage when it
sent one, the gateway's estimate when the stream was cut or the client went away before it."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import pytest

from tests.api.support import single_model, wait_until
from tests.fakes.servers import Servers

PRICED = ", price: {input: 1.0, output: 2.0}"
BODIES: dict[str, dict[str, Any]] = {
    "/chat/completions": {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi there"}]},
    "/responses": {"model": "m", "stream": True, "input": "hi there"},
    "/messages": {"model": "m", "stream": True, "max_tokens": 20,
                  "messages": [{"role": "user", "content": "hi there"}]},
}


def priced(up: Any) -> str:
    return single_model(up).replace("{backend: b}", "{backend: b" + PRICED + "}")


def access(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "nanoroute.access"]


@pytest.mark.parametrize("path", list(BODIES))
def test_a_whole_stream_is_counted_from_the_upstreams_usage(servers: Servers, caplog: pytest.LogCaptureFixture,
                                                            path: str) -> None:
    up = servers.upstream("m")
    base = servers.gateway(priced(up))
    with caplog.at_level(logging.INFO, logger="nanoroute.access"):
        resp = httpx.post(base + path, json=BODIES[path], timeout=10)
        assert resp.status_code == 200
        wait_until(lambda: bool(access(caplog)))
    [line] = access(caplog)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (7, 3)
    assert line["cost_usd"] == pytest.approx((7 * 1.0 + 3 * 2.0) / 1e6)
    assert "tokens_estimated" not in line


@pytest.mark.parametrize("path", list(BODIES))
def test_a_cut_stream_is_counted_by_estimate(servers: Servers, caplog: pytest.LogCaptureFixture, path: str) -> None:
    up = servers.upstream("m", behaviour="cut", chunks=5)
    base = servers.gateway(priced(up))
    with caplog.at_level(logging.INFO, logger="nanoroute.access"):
        resp = httpx.post(base + path, json=BODIES[path], timeout=10)
        assert resp.status_code == 200  # the stream had started: it ends with an error event
        wait_until(lambda: bool(access(caplog)))
    [line] = access(caplog)
    assert line["outcome"] == "stream_error" and line["tokens_estimated"] is True
    assert line["prompt_tokens"] > 0 and line["completion_tokens"] >= 0
    assert line["cost_usd"] > 0


@pytest.mark.parametrize("path", list(BODIES))
def test_a_stream_the_client_left_is_counted_by_estimate(servers: Servers, caplog: pytest.LogCaptureFixture,
                                                         path: str) -> None:
    up = servers.upstream("m", behaviour="slow_chunks", chunks=20, chunk_delay_s=0.2)
    base = servers.gateway(priced(up))
    with caplog.at_level(logging.INFO, logger="nanoroute.access"):
        with httpx.stream("POST", base + path, json=BODIES[path], timeout=10) as resp:
            got = b""
            for chunk in resp.iter_bytes():
                got += chunk
                if b"tok3" in got:  # the fifth upstream event
                    break
            time.sleep(0.3)  # the gateway may relay another event before it sees the client gone
        wait_until(lambda: bool(access(caplog)))
    [line] = access(caplog)
    assert line["outcome"] == "cancelled" and line["tokens_estimated"] is True
    assert line["prompt_tokens"] > 0 and 3 <= line["completion_tokens"] < 20
    assert line["cost_usd"] > 0
