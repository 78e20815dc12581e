"""`create_app(settings)`: builds the whole gateway; nothing lives in module globals.

The app is a thin ASGI front: the proxied endpoints go straight to the request pipeline
(`gateway/pipeline`: no framework machinery on the hot path); everything else (models, health, admin,
feedback, metrics, the OpenAPI document) is a FastAPI app, whose every answer gets an `x-request-id` on
the way out as the pipeline's do. With `NANOROUTE_CORS_ORIGINS` set, CORS wraps both (`CorsGateway`,
`api/cors.py`); unset, nothing does. The lifespan opens one connection pool per backend and closes them
on shutdown; a reload installs a new table the same way the start does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client.multiprocess import mark_process_dead
from starlette.exceptions import HTTPException

from gateway import __version__, pipeline, tracing
from gateway.api import admin, feedback, health, keys, metrics, models, openapi, responses
from gateway.api.cors import Cors
from gateway.backends import Backend, VllmHooks, build_backend
from gateway.capture.capture import Capture
from gateway.capture.sink import build_sink
from gateway.config.loader import load_file
from gateway.config.table import RoutingTable
from gateway.config.watcher import Reloader
from gateway.console import routes as console
from gateway.errors import InvalidRequest, NanorouteError, StorageUnavailable, UnknownPath, error_body
from gateway.governance.counters import build_counters
from gateway.governance.governor import Governor
from gateway.governance.registry import Registry
from gateway.metrics import Metrics, multiprocess
from gateway.pipeline.admission.keys import KeyCheck, parse_entries
from gateway.pipeline.context import Message, Receive, Scope, Send, Snapshot
from gateway.pipeline.ingress import request_id
from gateway.predictions import Predictions
from gateway.reliability.health import Health
from gateway.rollout import Rollouts
from gateway.routing.signals import Signals
from gateway.settings import Settings
from gateway.store import build_store
from gateway.store.turns import Turns
from gateway.tasks import Background

log = logging.getLogger("nanoroute")


class Gateway:
    """The ASGI application: the process's parts, the current snapshot, and the request pipeline."""

    def __init__(self, settings: Settings, table: RoutingTable) -> None:
        self.settings = settings
        self.metrics = Metrics()
        m = self.metrics
        self.store = build_store(settings)
        env_keys = parse_entries(k.get_secret_value() for k in settings.api_keys)
        self.registry = Registry(((key.id, secret) for key, secret in env_keys), self.store,
                                 admin_api=settings.admin_key is not None)
        self.auth = KeyCheck(self.registry, settings.admin_key.get_secret_value() if settings.admin_key else None)
        self.governor = Governor(build_counters(self.store), m if settings.metrics else None)
        self.health = Health(m.circuit_open, m.replica_up, m.breaker_checks, m.in_flight)
        self.signals = Signals(exact_tokens=settings.exact_tokens)
        self.capture = Capture(build_sink(settings), m, settings.capture_queue, settings.capture_queue_bytes)
        self.predictions = Predictions(m if settings.metrics else None)
        self.rollouts = Rollouts(self.signals, m if settings.metrics else None, store=self.store,
                                 compared=self._compared)
        self.turns = Turns(self.store, settings.responses_ttl_s) if settings.responses_store else None
        self.tracing = tracing.build()
        """OpenTelemetry's tracer when the `OTEL_EXPORTER_OTLP_*` variables ask for traces, else None."""
        self.pipeline = pipeline.build(keys=self.auth, governor=self.governor, capture=self.capture,
                                       rollouts=self.rollouts, turns=self.turns, predictions=self.predictions,
                                       metrics=m if settings.metrics else None, access_log=settings.access_log,
                                       tracing=self.tracing)
        self._vllm_hooks = VllmHooks(queue_wait=self._queue_wait, adapter_load=self._adapter_load)
        self._first = table
        self._state: Snapshot | None = None
        self._background = Background("gateway")
        self.reloader = Reloader(settings.config_path, table, self.apply, m.reloads_result,
                                 interval_s=settings.reload_interval_s)
        self.openapi = b""
        """`/openapi.json`, built once with the API (`api/openapi.py`)."""
        self.api = _build_api(self)

    def _compared(self, comparison: dict[str, Any]) -> None:
        """A rollout's scored comparison: written for `nanoroute router dataset`, and met with the router's
        prediction when a `learned` policy routed the request."""
        self.capture.compared(comparison)
        self.predictions.compared(comparison["request_id"], comparison["client"], comparison["model"],
                                  comparison["score"])

    def _queue_wait(self, backend: str, seconds: float) -> None:
        self.signals.set_queue_wait(backend, seconds)
        if self.settings.metrics:
            self.metrics.queue_wait.labels(backend).set(seconds)

    def _adapter_load(self, backend: str, adapter: str, outcome: str) -> None:
        if self.settings.metrics:
            self.metrics.adapter_loads.labels(backend, adapter, outcome).inc()

    async def apply(self, table: RoutingTable) -> None:
        """Build the snapshot for a new, valid `table` and make it the current one: at start, and at each
        reload. Backends whose settings did not change keep their pools; the others are built anew, and the
        replaced ones closed once requests still using them are done."""
        old = self._state
        kept = old.backends if old is not None else {}
        kept_specs = old.table.config.backends if old is not None else {}
        backends: dict[str, Backend] = {}
        for name, spec in table.config.backends.items():
            backend = kept.get(name)
            if backend is not None and kept_specs[name] == spec:
                backend.configure(table)
            else:
                backend = build_backend(name, spec, self._vllm_hooks)
                backend.configure(table)
                await backend.start()
            backends[name] = backend
        for warning in table.warnings:
            log.warning("config %s: %s", table.source, warning)
        self.registry.configure(table)
        self._warn_keys(table)
        self._state = Snapshot(table, backends, self.health, self.signals, self.settings.max_body_bytes)
        self.metrics.config_loaded(table.version, list(table.models))
        await self.health.start(table, backends)
        self.rollouts.configure(table, backends)
        retired = [b for name, b in kept.items() if backends.get(name) is not b]
        if retired:
            self._background.start(_close_later(retired), f"close {len(retired)} replaced backend(s)")

    def _warn_keys(self, table: RoutingTable) -> None:
        unknown = sorted(set(table.access) - self.registry.ids)
        if unknown:
            log.warning("config %s: keys %s name no client key (of NANOROUTE_API_KEYS, or with a digest or "
                        "secret_file): they limit no one", table.source, ", ".join(unknown))

    @property
    def ready(self) -> bool:
        return self._state is not None

    @property
    def state(self) -> Snapshot:
        if self._state is None:
            raise RuntimeError("the gateway's lifespan has not started")
        return self._state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The proxied endpoints to the pipeline (which sets its own x-request-id), the rest to FastAPI."""
        if scope["type"] == "http":
            found = self.pipeline.routes.get(scope["path"])
            if found is not None:
                await self.pipeline.handle(self.state, found[0], found[1], scope, receive, send)
                return
            send = _with_request_id(scope, send)
        await self.api(scope, receive, send)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        s = self.settings
        if not s.metrics_on_api and s.metrics_port is None:
            log.warning("NANOROUTE_METRICS_ON_API is false and NANOROUTE_METRICS_PORT is unset: /metrics is served "
                        "nowhere")
        try:
            await self.store.start()
        except StorageUnavailable as exc:  # e.g. NANOROUTE_DATA_DIR not writable: serve the rest all the same
            log.error("%s; serving all the same: requests that need the store (the Responses API's "
                      "previous_response_id) get 503, and answers are not stored, while it is unavailable", exc)
        await self.apply(self._first)
        await self.rollouts.start()
        await self.registry.start()
        self.governor.start()
        if self.auth.open:
            log.warning("no client key is set (NANOROUTE_API_KEYS, the config's keys, the admin API): the API is "
                        "open to anyone who can reach it")
        table = self.state.table
        log.info("nanoroute %s serving config %s (version %s)", __version__, table.source, table.version)
        self.reloader.start()
        self.capture.start()
        stop_metrics = None
        if s.metrics_port is not None:
            stop_metrics = await self.metrics.serve(s.host, s.metrics_port)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # only in the main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reloader.reload_soon, "SIGHUP")
        try:
            yield
        finally:
            if stop_metrics is not None:
                await stop_metrics()
            await self.reloader.stop()
            await self.health.stop()
            await self.rollouts.stop()
            await self.capture.stop()
            if self.turns is not None:
                await self.turns.drain()
            await self.registry.stop()
            await self.governor.stop()
            await self.store.close()
            await self._background.stop()  # replaced backends waiting to be closed are closed now
            for backend in self.state.backends.values():
                await backend.close()
            if self.tracing is not None:  # the last spans sent, from a thread: it waits on the collector
                await asyncio.to_thread(self.tracing.shutdown)
            if multiprocess():
                mark_process_dead(os.getpid())


class CorsGateway(Gateway):
    """The gateway behind CORS (`NANOROUTE_CORS_ORIGINS`): a class of its own, so that a gateway without
    CORS runs no check for it at all."""

    def __init__(self, settings: Settings, table: RoutingTable) -> None:
        super().__init__(settings, table)
        self._cors = Cors(functools.partial(Gateway.__call__, self), settings.cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._cors(scope, receive, send)


def _with_request_id(scope: Scope, send: Send) -> Send:
    """`send`, adding the request's id (the client's X-Request-Id when valid, else a new one) to the answer."""
    given = next((value for name, value in scope["headers"] if name == b"x-request-id"), None)
    header = (b"x-request-id", request_id(given).encode())

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), header]
        await send(message)

    return sending


async def _close_later(backends: list[Backend], grace_s: float = 600.0) -> None:
    """Close replaced backends once requests that started before the reload are surely finished
    (no attempt outlives its backend's total timeout, 600 s by default)."""
    try:
        await asyncio.sleep(grace_s)
    finally:
        for backend in backends:
            await backend.close()


async def _openapi(request: Request) -> Response:
    """`/openapi.json`. A module-level function, not a closure over the gateway: FastAPI caches what it learns
    of each endpoint function, keyed by the function, for the life of the process (4,096 of them), and a
    closure would keep its whole gateway alive with it (each app a test builds, 30 MB apiece)."""
    gw: Gateway = request.app.state.gateway
    return Response(gw.openapi, media_type="application/json")


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
    api.include_router(keys.router)
    api.include_router(feedback.router)
    api.include_router(responses.router)
    if gw.settings.admin_key is not None and gw.settings.console:
        api.include_router(console.router)
    gw.openapi = openapi.document(api, gw.pipeline.routes)

    api.add_api_route("/openapi.json", _openapi, methods=["GET"], include_in_schema=False)

    @api.exception_handler(NanorouteError)
    async def _nanoroute_error(_: Request, exc: NanorouteError) -> Response:
        return Response(exc.envelope(), exc.status, headers=dict(_str_headers(exc)), media_type="application/json")

    @api.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:  # FastAPI's router found no route: OpenAI's answer to an unknown URL
            err = UnknownPath(request.method, request.url.path)
            return Response(err.envelope(), 404, media_type="application/json")
        body = error_body(str(exc.detail), "invalid_request_error")
        return Response(body, exc.status_code, headers=exc.headers, media_type="application/json")

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
    return (CorsGateway if settings.cors_origins else Gateway)(settings, load_file(settings.config_path))
