"""Liveness and readiness probes."""

from __future__ import annotations

from pathlib import Path

import httpx

from gateway.app import create_app
from gateway.settings import Settings
from tests.api.support import single_model
from tests.fakes.servers import Servers


def test_healthz(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream()
    root = servers.gateway(single_model(up)).removesuffix("/v1")
    resp = http.get(f"{root}/healthz")
    assert (resp.status_code, resp.json()) == (200, {"status": "ok"})


def test_readyz_once_started(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream()
    root = servers.gateway(single_model(up)).removesuffix("/v1")
    resp = http.get(f"{root}/readyz")
    assert resp.status_code == 200
    table = servers.app_of().state.table
    assert resp.json() == {"status": "ready", "config_version": table.version, "policies": 0, "models": 1}
    assert up.seen == [], "probes do not touch the upstreams"


def test_readyz_before_the_lifespan_has_run(servers: Servers, tmp_path: Path) -> None:
    # The app called in-process without its lifespan: the state it serves from does not exist yet.
    up = servers.upstream()
    path = tmp_path / "c.yaml"
    path.write_text(single_model(up))
    app = create_app(Settings(config=path))

    async def probe() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            return await c.get("/readyz"), await c.get("/healthz")

    ready, alive = servers.loop.run(probe())
    assert (ready.status_code, ready.json()) == (503, {"status": "starting"})
    assert alive.status_code == 200
