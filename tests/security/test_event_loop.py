"""Attack: stall the whole server with one request, so that every client waits and liveness probes fail.

Counting the tokens of an 8 MiB prompt exactly took seconds on the event loop (and a long run of one
character far longer); a body nested thousands deep parsed, then broke the gateway's own encoder.
"""

from __future__ import annotations

import random
import string
import threading
import time

import httpx
import pytest

from gateway.routing.request import MAX_DEPTH
from tests.fakes.servers import Servers


def prose(size: int) -> str:
    """Words of random letters: counting `size` characters of them exactly takes tiktoken seconds."""
    rng = random.Random(7)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 12))) for _ in range(5000)]
    return " ".join(rng.choice(words) for _ in range(size // 7))[:size]


def counting_config(up_url: str) -> str:
    """A policy that needs the prompt's tokens (cheapest); a window so small that no upstream is called."""
    return f"""
backends:
  b: {{type: openai, url: {up_url}}}
models:
  m: {{backend: b, context_window: 1000, price: {{input: 1, output: 1}}}}
policies:
  - {{name: p, strategy: cheapest, candidates: [m]}}
"""


@pytest.mark.parametrize("text", [prose(7_000_000), "a" * 7_000_000], ids=["prose", "one-character"])
def test_healthz_answers_promptly_while_a_huge_prompt_is_routed(servers: Servers, text: str) -> None:
    up = servers.upstream()
    base = servers.gateway(counting_config(up.url), max_body_bytes=16 << 20)
    root = base.removesuffix("/v1")
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    answered: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: answered.append(
        httpx.post(f"{base}/chat/completions", json=body, timeout=60)))
    with httpx.Client(timeout=10) as probe:
        probe.get(f"{root}/healthz")  # a warm connection: the probe times the server, not a handshake
        worker.start()
        waits = []
        while worker.is_alive():
            started = time.monotonic()
            assert probe.get(f"{root}/healthz").status_code == 200
            waits.append(time.monotonic() - started)
            time.sleep(0.01)
    worker.join()
    assert answered[0].status_code == 400  # routed (and refused: it cannot fit the window), not stuck
    assert answered[0].json()["error"]["code"] == "context_length_exceeded"
    assert max(waits) < 0.5, f"the event loop stalled for {max(waits):.2f} s"
    assert up.seen == []


def test_json_nested_deeper_than_the_limit_is_refused(servers: Servers) -> None:
    up = servers.upstream()
    base = servers.gateway(f"backends: {{b: {{type: openai, url: {up.url}}}}}\nmodels: {{m: {{backend: b}}}}\n")

    def nested(depth: int) -> bytes:
        return (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "deep": '
                + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}")

    resp = httpx.post(f"{base}/chat/completions", content=nested(MAX_DEPTH + 1))
    assert resp.status_code == 400
    assert f"more than {MAX_DEPTH} deep" in resp.json()["error"]["message"]
    resp = httpx.post(f"{base}/chat/completions", content=nested(1000))  # orjson parses this; it is refused too
    assert resp.status_code == 400
    assert up.seen == []
    assert httpx.post(f"{base}/chat/completions", content=nested(MAX_DEPTH)).status_code == 200
