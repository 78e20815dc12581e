"""The console's overview, cluster-wide: with NANOROUTE_PROMETHEUS_URL, its figures are what a real Prometheus
scraped from every replica (two gateways here), not the pod's own; when Prometheus stops answering, the page
says so and shows the pod's own figures."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from tests.api.console_stack import CLIENT_KEY, Operator, start
from tests.api.support import wait_until
from tests.fakes.prometheus import Prometheus, prometheus_binary
from tests.fakes.servers import Servers, free_port

pytestmark = pytest.mark.e2e

ON_A, ON_B = 2, 8
"""Requests of the default policy (model `small`) sent to each gateway, after one each to warm up."""


def send(base: str, n: int) -> None:
    with openai.OpenAI(base_url=base, api_key=CLIENT_KEY, max_retries=0, timeout=10) as client:
        for i in range(n):
            client.chat.completions.create(model="small", messages=[{"role": "user", "content": f"hi {i}"}])


def scraped_after(prom: Prometheus, moment: float) -> bool:
    """Whether both gateways have been scraped since `moment` (time.time())."""
    # timestamp() of `up` itself: the scrape's time (of `up == 1`, a comparison's result, it is the query's own)
    found = prom.query('timestamp(up{job="nanoroute"})')
    return len(found) == 2 and min(float(r["value"][1]) for r in found) > moment and \
        all(v == 1 for v in prom.values('up{job="nanoroute"}', "instance").values())


def test_the_overview_is_cluster_wide_with_prometheus(servers: Servers, tmp_path: Path) -> None:
    binary = prometheus_binary()
    port = free_port()
    a = start(servers, tmp_path / "a", prometheus_url=f"http://127.0.0.1:{port}", console_step_s=1.0)
    b = start(servers, tmp_path / "b")
    prom = Prometheus(binary, tmp_path, [a.root.removeprefix("http://"), b.root.removeprefix("http://")], port=port)
    try:
        prom.wait_ready()
        send(a.base, 1)  # Prometheus counts increases from a series' first scrape: let it see each one first
        send(b.base, 1)
        warm = time.time()
        prom._until(lambda: scraped_after(prom, warm), "to scrape both gateways")
        send(a.base, ON_A)
        send(b.base, ON_B)
        moment = time.time()
        prom._until(lambda: scraped_after(prom, moment), "to scrape both gateways")

        with Operator(a.root) as op:
            assert op.login().status_code == 303
            page = op.http.get("/ui").text
            assert f"Cluster-wide figures, from Prometheus at http://127.0.0.1:{port}" in page

            def charted() -> dict[str, dict[str, list[float | None]]]:
                data = op.http.get("/ui/data/overview").json()
                assert data["scope"] == "cluster" and data["step_s"] == 1.0 and len(data["t"]) == 360
                return {c["id"]: {s["label"]: s["values"] for s in c["series"]} for c in data["charts"]}

            # The charts' points are rates over a minute, at whole steps: the first needs two scrapes before it.
            wait_until(lambda: any(v for v in charted()["rps"].get("small", [])), timeout=10)
            assert "split-default" in charted()

            def last_hour() -> float:
                live = op.http.get("/ui", headers={"HX-Request": "true"}).text
                row = live.split('<th scope="row">small</th>')[1].split("</tr>")[0]
                return float(row.split('<td class="n">')[2].split("<")[0].replace(",", ""))

            # Both gateways' requests, not A's own. increase() extrapolates past the first and last samples by
            # up to an interval's worth of the rate, which weighs less as the series gets longer.
            wait_until(lambda: last_hour() == pytest.approx(ON_A + ON_B, rel=0.2), timeout=20)

            prom.stop()
            time.sleep(0.6)  # past the half step a result is kept for
            page = op.http.get("/ui").text
            assert "did not answer" in page and "this pod&#39;s own figures" in page
            assert op.http.get("/ui/data/overview").json()["scope"] == "pod"
    finally:
        prom.stop()
