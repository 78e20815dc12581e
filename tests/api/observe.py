"""Looking at a running gateway from outside: its /metrics, and what it may have left behind."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.api.support import wait_until
from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream

# Idle keep-alive connections of the fake upstreams' aiohttp servers each hold one of these tasks; a
# request still open upstream shows in `FakeUpstream.open_requests` instead.
_IDLE_CONNECTION_TASKS = ("RequestHandler.start",)


class Scrape:
    """One read of /metrics; `value(name, **labels)` sums the samples whose labels include those given."""

    def __init__(self, base: str) -> None:
        text = httpx.get(base.removesuffix("/v1") + "/metrics").text
        self.samples = [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        return sum(v for n, lab, v in self.samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def tasks(servers: Servers) -> int:
    """Tasks on the servers' event loop, leaving out idle upstream connections and this count itself."""

    async def count() -> int:
        me = asyncio.current_task()
        return sum(1 for t in asyncio.all_tasks() if t is not me
                   and t.get_coro().__qualname__ not in _IDLE_CONNECTION_TASKS)  # type: ignore[union-attr]

    return servers.loop.run(count())


def assert_nothing_left(servers: Servers, upstreams: list[FakeUpstream], baseline_tasks: int) -> None:
    """No request open at any upstream, nothing in flight in the gateway, no task beyond the baseline."""
    gw = servers.app_of()
    wait_until(lambda: all(u.open_requests == 0 for u in upstreams))
    health = gw.state.health
    wait_until(lambda: all(h.in_flight == 0 for m in gw.state.table.models if (h := health.model(m)) is not None))
    wait_until(lambda: tasks(servers) <= baseline_tasks)
