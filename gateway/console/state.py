"""The console's parts, one set per gateway: sessions, the login brake, the series and the task that feeds
them, Prometheus when configured, the templates and the static files. Built when the app starts
(`routes.lifespan`), kept on the FastAPI app's state."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jinja2

from gateway.api.deps import GatewayView
from gateway.console.figures import Overview, local_overview
from gateway.console.prometheus import Prometheus, PrometheusError
from gateway.console.series import POINTS, Series, read_metrics
from gateway.console.session import Sessions, Throttle, session_key
from gateway.settings import Settings
from gateway.store.base import Store
from gateway.tasks import Background

log = logging.getLogger("nanoroute")

HERE = Path(__file__).parent
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".LICENSE": "text/plain; charset=utf-8"}


class ConsoleView(GatewayView, Protocol):
    """What the console reads of the gateway: what the admin API reads, its settings and its store."""

    settings: Settings
    store: Store


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    version: str
    """The first 12 hex digits of its SHA-256: in its URL, so that it may be cached for good."""


def assets() -> dict[str, Asset]:
    """Every file under static/, by its path there."""
    root = HERE / "static"
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in TYPES:
            body = path.read_bytes()
            out[path.relative_to(root).as_posix()] = Asset(body, TYPES[path.suffix],
                                                            hashlib.sha256(body).hexdigest()[:12])
    return out


def templates(static: dict[str, Asset]) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["asset"] = lambda name: f"/ui/static/{name}?v={static[name].version}"
    env.filters.update(usd=_usd, pct=_pct, ms=_ms, num=_num, when=_when)
    return env


class Console:
    def __init__(self, gw: ConsoleView) -> None:
        s = gw.settings
        assert s.admin_key is not None, "the console is mounted only with an admin key"
        self.gw = gw
        self.sessions = Sessions(session_key(s.admin_key.get_secret_value()), gw.store)
        self.throttle = Throttle()
        self.series = Series(functools.partial(read_metrics, gw.metrics), s.console_step_s)
        self.metrics_on = s.metrics
        self.prometheus = Prometheus(s.prometheus_url.get_secret_value()) if s.prometheus_url is not None else None
        self.static = assets()
        self.templates = templates(self.static)
        self.instance = f"{socket.gethostname()} (process {os.getpid()})"
        self._tasks = Background("console")
        self._built: tuple[tuple[int, float | None], Overview] | None = None

    def start(self) -> None:
        if self.metrics_on:
            self._tasks.start(self.series.run(), "series")

    async def stop(self) -> None:
        await self._tasks.stop()
        if self.prometheus is not None:
            await self.prometheus.close()

    async def overview(self) -> Overview:
        """Cluster-wide from Prometheus when configured (this pod's own when it does not answer), else this
        pod's."""
        if self.prometheus is not None:
            try:
                return await self.prometheus.overview(self.series.step_s, POINTS)
            except PrometheusError as exc:
                note = f"{self.prometheus.shown} did not answer ({exc}): these are this pod's own figures"
                return dataclasses.replace(self._local(), note=note)
        return self._local()

    def _local(self) -> Overview:
        """This pod's overview, built once a step however many consoles ask (tens of ms for a large config)."""
        latest = (len(self.series.times), self.series.times[-1] if self.series.times else None)
        if self._built is None or self._built[0] != latest:
            self._built = (latest, local_overview(self.series))
        return self._built[1]


def _usd(value: float | None) -> str:
    """Dollars to the cent from $1, else to three significant digits ($0.000123)."""
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 1:
        return f"${value:,.2f}"
    digits = max(2, 2 - math.floor(math.log10(abs(value))))
    return f"${value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:,.1f} s"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _when(value: float | None) -> str:
    return "-" if value is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value))


def context(console: Console, **extra: Any) -> dict[str, Any]:
    """What every page shows: where its figures come from, and the config it serves."""
    table = console.gw.state.table
    return {"instance": console.instance, "config_version": table.version,
            "prometheus": console.prometheus.shown if console.prometheus is not None else None, **extra}
