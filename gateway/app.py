"""`create_app(settings)`: builds the whole gateway; nothing lives in module globals.

The app is a thin ASGI front: the three proxied OpenAI endpoints go straight to `api.proxy.handle`
(no framework machinery on the hot path); everything else (models, health, admin) is a FastAPI app.
The lifespan opens one connection pool per backend and closes them on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client.multiprocess import mark_process_dead
from starlette.exceptions import HTTPException

from gateway import __version__, accesslog
from gateway.api import admin, feedback, health, metrics, models
from gateway.api.proxy import ROUTES, Receive, Scope, Send, handle
from gateway.backends import Backend, VllmBackend, VllmHooks, build_backend
from gateway.capture.capture import Capture
from gateway.capture.sink import build_sink
from gateway.config.loader import load_file
from gateway.config.table import RoutingTable
from gateway.config.watcher import Reloader
from gateway.errors import InvalidRequest, NanorouteError, NotFound, error_body
from gateway.keys import KeyCheck
from gateway.metrics import Metrics, multiprocess
from gateway.record import RequestRecord
from gateway.reliability.health import Health
from gateway.reliability.inflight import InFlight
from gateway.rollout import Rollouts
from gateway.routing.signals import Signals
from gateway.settings import Settings

log = logging.getLogger("nanoroute")


@dataclass(frozen=True, slots=True)
class State:
    """Everything a request reads, swapped as a whole; a request keeps the one it started with."""

    table: RoutingTable
    backends: Mapping[str, Backend]
    auth: KeyCheck
    max_body_bytes: int


class Gateway:
    """The ASGI application."""

    def __init__(self, settings: Settings, table: RoutingTable) -> None:
        self.settings = settings
        self.table = table
        self.auth = KeyCheck.from_settings((k.get_secret_value() for k in settings.api_keys),
                                           settings.admin_key.get_secret_value() if settings.admin_key else None)
        self.metrics = Metrics()
        self.inflight = InFlight(self.metrics.in_flight)
        self.health = Health(self.metrics.circuit_open, self.metrics.replica_up, self.metrics.breaker_checks)
        self.signals = Signals(exact_tokens=settings.exact_tokens)
        self.capture = Capture(build_sink(settings), self.metrics, settings.capture_queue, settings.capture_queue_bytes)
        self.rollouts = Rollouts(self.signals, self.metrics if settings.metrics else None)
        self._vllm_hooks = VllmHooks(queue_wait=self._queue_wait, adapter_load=self._adapter_load)
        self._access_log = settings.access_log
        self._metrics = settings.metrics
        self._state: State | None = None
        self._retired: list[asyncio.Task[None]] = []
        self.reloader = Reloader(settings.config_path, table, self.apply, self.metrics.reloads_result,
                                 interval_s=settings.reload_interval_s)
        self.api = _build_api(self)

    def _queue_wait(self, backend: str, seconds: float) -> None:
        self.signals.set_queue_wait(backend, seconds)
        if self._metrics:
            self.metrics.queue_wait.labels(backend).set(seconds)

    def _adapter_load(self, backend: str, adapter: str, outcome: str) -> None:
        if self._metrics:
            self.metrics.adapter_loads.labels(backend, adapter, outcome).inc()

    def observe(self, rec: RequestRecord) -> None:
        """Called once when a request ends, whatever its outcome."""
        if self._metrics:
            self.metrics.observe(rec)
        self.signals.observe(rec, self.state.table.tasks)
        if self._access_log:
            accesslog.write(rec)
        if rec.capture is not None:
            self.capture.offer(rec)
        if rec.rollout is not None:
            self.rollouts.finish(rec, rec.rollout)

    async def apply(self, table: RoutingTable) -> None:
        """Swap in a new, valid table. Backends whose settings did not change keep their pools; the
        others are built anew, and the replaced ones closed once requests still using them are done."""
        old = self.state
        backends: dict[str, Backend] = {}
        for name, spec in table.config.backends.items():
            current = old.backends.get(name)
            if current is not None and old.table.config.backends[name] == spec:
                backends[name] = current
            else:
                backends[name] = build_backend(name, spec, self._vllm_hooks)
                await backends[name].start()
            _route(backends[name], table)
        for warning in table.warnings:
            log.warning("config %s: %s", table.source, warning)
        self._warn_keys(table)
        self._state = State(table, backends, old.auth, old.max_body_bytes)
        self.table = table
        self.metrics.config_loaded(table.version, list(table.models))
        await self.health.start(table, backends)
        self.rollouts.configure(table, backends)
        retired = [b for name, b in old.backends.items() if backends.get(name) is not b]
        if retired:
            self._retired.append(asyncio.get_running_loop().create_task(_close_later(retired)))

    def _warn_keys(self, table: RoutingTable) -> None:
        unknown = sorted(set(table.access) - self.auth.ids)
        if unknown:
            log.warning("config %s: keys %s name no client key of NANOROUTE_API_KEYS: they limit no one",
                        table.source, ", ".join(unknown))

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reloader.reload("SIGHUP"))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # errors are logged by the reloader
        self._retired.append(task)

    @property
    def ready(self) -> bool:
        return self._state is not None

    @property
    def state(self) -> State:
        if self._state is None:
            raise RuntimeError("the gateway's lifespan has not started")
        return self._state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            op = ROUTES.get(scope["path"])
            if op is not None:
                await handle(self, op, scope, receive, send)
                return
        await self.api(scope, receive, send)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        s = self.settings
        auth = self.auth
        if auth.open:
            log.warning("NANOROUTE_API_KEYS is not set: the API is open to anyone who can reach it")
        if not s.metrics_on_api and s.metrics_port is None:
            log.warning("NANOROUTE_METRICS_ON_API is false and NANOROUTE_METRICS_PORT is unset: /metrics is served "
                        "nowhere")
        for warning in self.table.warnings:
            log.warning("config %s: %s", self.table.source, warning)
        self._warn_keys(self.table)
        specs = self.table.config.backends
        backends = {name: build_backend(name, spec, self._vllm_hooks) for name, spec in specs.items()}
        for backend in backends.values():
            _route(backend, self.table)
            await backend.start()
        self._state = State(self.table, backends, auth, s.max_body_bytes)
        self.metrics.config_loaded(self.table.version, list(self.table.models))
        await self.health.start(self.table, backends)
        self.rollouts.configure(self.table, backends)
        log.info("nanoroute %s serving config %s (version %s)", __version__, self.table.source, self.table.version)
        self.reloader.start()
        self.capture.start()
        stop_metrics = None
        if s.metrics_port is not None:
            stop_metrics = await self.metrics.serve(s.host, s.metrics_port)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # only in the main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        try:
            yield
        finally:
            if stop_metrics is not None:
                await stop_metrics()
            await self.reloader.stop()
            await self.health.stop(checks=True)
            await self.rollouts.stop()
            await self.capture.stop()
            for task in self._retired:
                task.cancel()
            for backend in self.state.backends.values():
                await backend.close()
            if multiprocess():
                mark_process_dead(os.getpid())


def _route(backend: Backend, table: RoutingTable) -> None:
    if isinstance(backend, VllmBackend):
        backend.route(table)


async def _close_later(backends: list[Backend], grace_s: float = 600.0) -> None:
    """Close replaced backends once requests that started before the reload are surely finished
    (no attempt outlives its backend's total timeout, 600 s by default)."""
    try:
        await asyncio.sleep(grace_s)
    finally:
        for backend in backends:
            await backend.close()


def _build_api(gw: Gateway) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with gw.lifespan():
            yield

    api = FastAPI(title="Nanoroute", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    api.state.gateway = gw
    api.include_router(models.router)
    api.include_router(health.router)
    if gw.settings.metrics_on_api:
        api.include_router(metrics.router)
    api.include_router(admin.router)
    api.include_router(feedback.router)

    @api.exception_handler(NanorouteError)
    async def _nanoroute_error(_: Request, exc: NanorouteError) -> Response:
        return Response(exc.envelope(), exc.status, headers=dict(_str_headers(exc)), media_type="application/json")

    @api.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> Response:
        err = NotFound(f"No route for this path: {exc.detail}") if exc.status_code == 404 else None
        if err is not None:
            return Response(err.envelope(), 404, media_type="application/json")
        body = error_body(str(exc.detail), "invalid_request_error")
        return Response(body, exc.status_code, media_type="application/json")

    @api.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        err = InvalidRequest(f"Invalid request: {exc.errors()[0]['msg']}")
        return Response(err.envelope(), 400, media_type="application/json")

    return api


def _str_headers(exc: NanorouteError) -> list[tuple[str, str]]:
    return [(k.decode(), v.decode()) for k, v in exc.headers()]


def create_app(settings: Settings | None = None) -> Gateway:
    """Build the gateway from settings (environment when None). Raises ConfigError on a bad config."""
    settings = settings or Settings()
    return Gateway(settings, load_file(settings.config_path))
