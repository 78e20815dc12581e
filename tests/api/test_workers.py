"""`nanoroute serve --workers 2`: metrics from both worker processes add up on every scrape."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.fakes.servers import Servers, free_port

REQUESTS = 60


def test_two_workers_count_every_request_once(servers: Servers, tmp_path: Path) -> None:
    up = servers.upstream()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
backends:
  b: {{type: openai, url: {up.url}}}
models:
  small: {{backend: b, price: {{input: 1.0, output: 1.0}}}}
""")
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "NANOROUTE_ACCESS_LOG": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(cfg), "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc)
        body = {"model": "small", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(REQUESTS):
            # A new connection each time, so the kernel spreads them over both workers' accept queues.
            with httpx.Client() as c:
                assert c.post(f"{base}/v1/chat/completions", json=body).status_code == 200
        totals = set()
        for _ in range(6):
            with httpx.Client() as c:
                text = c.get(f"{base}/metrics").text
            series = 'nanoroute_requests_total{api="chat",model="small",outcome="success",policy="direct"}'
            totals.add(_sample(text, series))
            assert _sample(text, 'nanoroute_tokens_total{kind="prompt",model="small"}') == 7 * REQUESTS
        assert totals == {float(REQUESTS)}
        # Both workers wrote their own counter file: the totals above really are sums over processes.
        assert len(list(metrics_dir.glob("counter_*.db"))) == 2
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]


def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                # Both workers must be up before load is sent, or one may serve everything.
                time.sleep(1.0)
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("gateway did not become ready")


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")
