"""A real Prometheus server on loopback (Debian's `prometheus`), scraping gateways every second.

Skipped locally, failed under CI, when prometheus is not installed (scripts/test.sh installs it)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fakes.debian import program
from tests.fakes.servers import free_port

DEADLINE_S = 30.0


def prometheus_binary() -> str:
    return program("prometheus", "prometheus")


class Prometheus:
    """A Prometheus server on loopback, scraping its target (or targets, as one job) every second; on `port`
    when given (a gateway that reads from it must know its address before it starts)."""

    def __init__(self, binary: str, tmp: Path, target: str | list[str], port: int | None = None) -> None:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "nanoroute", "metrics_path": "/metrics",
                                "static_configs": [{"targets": [target] if isinstance(target, str) else target}]}],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{port or free_port()}"
        self._log_path = tmp / "prometheus.log"
        self._log = self._log_path.open("wb")
        self._proc = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        self._until(lambda: httpx.get(f"{self.url}/-/ready").status_code == 200, "to be ready")

    def wait_scraped_after(self, moment: float) -> None:
        """Until a scrape that started after `moment` (time.time()) is stored."""
        def scraped() -> bool:
            result = self.query('timestamp(up{job="nanoroute"} == 1)')
            return bool(result) and float(result[0]["value"][1]) > moment

        self._until(scraped, "to scrape the gateway")

    def query(self, promql: str) -> list[dict[str, Any]]:
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}).json()
        assert reply["status"] == "success", reply
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def value(self, promql: str) -> float:
        result = self.query(promql)
        assert len(result) == 1, (promql, result)
        return float(result[0]["value"][1])

    def values(self, promql: str, label: str) -> dict[str, float]:
        return {r["metric"][label]: float(r["value"][1]) for r in self.query(promql)}

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._log.close()

    def _until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                pytest.fail(f"prometheus exited ({self._proc.returncode}):\n{self._log_tail()}")
            try:
                if done():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"prometheus took over {DEADLINE_S}s {what}:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        self._log.flush()
        return self._log_path.read_text(errors="replace")[-4000:]
