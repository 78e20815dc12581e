"""vLLM replicas: what each one serves, the LoRA adapters the config routes to, and how busy each is.

Requests go out exactly as for any OpenAI-compatible server (through the same `Transport` as
`OpenAIBackend`); on top of that, for each replica (one base URL, a `Replica`), this backend keeps:

- **What it serves**, read from its `/v1/models` every `poll_interval_s`: base models, and adapters
  (entries with a `parent`). An adapter that the gateway loaded and that the list no longer shows, or a
  changed `process_start_time_seconds`, means the replica restarted (or someone unloaded it): it is
  loaded again.
- **Adapters**: every adapter the config routes to is loaded on each replica with room (under
  `max_loras`; all replicas when unset) by the poll, and, on demand, on the replica a request goes to,
  before the request is sent (`POST /v1/load_lora_adapter`). One lock per replica and adapter: a burst of
  requests triggers one load. A replica that answers 404 for an adapter lost it: it is loaded again and
  the request is sent once more. A load that fails raises `AdapterLoadFailed`, naming the adapter, its
  path and vLLM's reason; another replica or the next model answers.
- **Load**: `vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:kv_cache_usage_perc` and the
  rate of finished requests (`vllm:request_success_total`), from its `/metrics`, plus the gateway's own
  requests in flight to it. From these, the expected queueing delay (Little's law: waiting requests
  over the rate at which they finish), published through `VllmHooks.queue_wait` to the routing signals,
  where it adds to the model's latency estimate (a latency SLO then spills to another model).

`prefer(model)` orders the replicas for a request: first those that have the adapter loaded, then those
with room for it, each by load. The health state (breakers, checks) still decides which may be called.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from gateway.backends.base import Attempt, Reply, ReplyStream
from gateway.backends.openai import Transport, native_apis
from gateway.backends.replica import Replica
from gateway.config import schema
from gateway.config.table import ModelRoute, RoutingTable
from gateway.errors import AdapterLoadFailed, UpstreamError
from gateway.tasks import Background

log = logging.getLogger("nanoroute")

T = TypeVar("T")

MAX_QUEUE_WAIT_S = 60.0
"""The queueing delay assumed while requests wait and none has finished lately."""
RATE_ALPHA = 0.3
"""Weight of the newest reading in the finish rate's moving average."""
LOAD_RETRY_S = 30.0
"""After a failed load, the poll leaves the adapter alone on that replica this long (requests still try)."""


def _ignore(*_: object) -> None:
    pass


@dataclass(frozen=True, slots=True)
class VllmHooks:
    """Where the backend reports what it learns (the app wires these to the signals and metrics)."""

    queue_wait: Callable[[str, float], None] = _ignore
    """(backend, seconds): the expected queueing delay on the backend's least-loaded replica."""
    adapter_load: Callable[[str, str, str], None] = _ignore
    """(backend, adapter, outcome): a load was tried; outcome `loaded` or `failed`."""


def read_metrics(r: Replica, text: str, now: float) -> None:
    """Take a replica's queue, running requests, KV-cache use and finish rate from its /metrics."""
    waiting = running = kv = finished = 0.0
    started = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name == "vllm:num_requests_waiting":
                waiting += sample.value
            elif name == "vllm:num_requests_running":
                running += sample.value
            elif name == "vllm:kv_cache_usage_perc":
                kv = max(kv, sample.value)
            elif name == "vllm:request_success_total":
                finished += sample.value
            elif name == "process_start_time_seconds":
                started = sample.value
    if r.finished is not None and finished >= r.finished and now > r.read_at:
        rate = (finished - r.finished) / (now - r.read_at)
        r.rate = rate if r.rate is None else r.rate + RATE_ALPHA * (rate - r.rate)
    r.finished, r.read_at = finished, now
    r.waiting, r.running, r.kv_cache = waiting, running, kv
    if waiting <= 0:
        r.queue_wait_s = 0.0
    elif r.rate:
        r.queue_wait_s = min(MAX_QUEUE_WAIT_S, waiting / r.rate)
    else:
        r.queue_wait_s = MAX_QUEUE_WAIT_S
    if started is not None and r.started_at is not None and started != r.started_at:
        restarted(r, "its process start time changed")
    r.started_at = started


def read_models(r: Replica, body: bytes) -> None:
    """Take what a replica serves (base models and adapters) from its /v1/models."""
    data = orjson.loads(body).get("data") or []
    served = {m["id"]: m.get("parent") for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)}
    lost = {a for a in r.loaded if a not in served}
    if lost:
        log.warning("vLLM replica %s no longer serves adapter(s) %s: it restarted or they were unloaded",
                    r.url, ", ".join(sorted(lost)))
        r.loaded -= lost
    r.loaded |= {name for name, parent in served.items() if parent}
    r.served = served


def restarted(r: Replica, why: str) -> None:
    log.warning("vLLM replica %s restarted (%s): its adapters will be loaded again", r.url, why)
    r.loaded.clear()
    r.rate, r.finished = None, None


class _NotServed(AdapterLoadFailed):
    """The replica answered 404 for an adapter: it lost it (restart, unload)."""


class VllmBackend:
    """One or more vLLM servers (replicas) serving the same models, LoRA adapters among them. It speaks to
    them through the same `Transport` as `OpenAIBackend`, and keeps each replica's adapters and load."""

    def __init__(self, name: str, spec: schema.VllmBackend, hooks: VllmHooks | None = None) -> None:
        self.name = name
        self.transport = Transport(name, spec, not_found=self._not_served)
        self.replicas = tuple(Replica(name, i, url) for i, url in enumerate(spec.urls))
        self.stream_usage = spec.stream_usage
        self.native = native_apis(spec.native)
        self.hooks = hooks or VllmHooks()
        self._poll_s = spec.poll_interval_s
        self._max_loras = spec.max_loras
        self._load_timeout_s = spec.adapter_load_timeout_s
        self._wanted: dict[str, str] = {}
        """Adapters the config routes to: name -> where vLLM loads it from."""
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}
        self._background = Background(f"backend '{name}'")

    # -- lifecycle --------------------------------------------------------------------------------------

    def configure(self, table: RoutingTable) -> None:
        """Take the adapters that `table` routes to on this backend (at start and after each reload)."""
        self._wanted = {m.upstream_name: m.adapter_path for m in table.models.values()
                        if m.backend == self.name and m.adapter_path is not None}

    async def start(self, *, poll: bool = True) -> None:
        """Open the pool and, unless `poll` is False (one-off commands), start polling the replicas."""
        await self.transport.start()
        if poll:
            self._background.start(self._poll_loop(), "poll")

    async def close(self) -> None:
        await self._background.stop()
        await self.transport.close()

    # -- the request path -------------------------------------------------------------------------------

    def prefer(self, model: ModelRoute) -> list[int] | None:
        """Replica indexes, best first, for a request to `model`; None when there is only one."""
        if len(self.replicas) == 1:
            return None
        adapter = model.upstream_name if model.adapter_path is not None else None
        ranked = sorted(self.replicas, key=lambda r: (self._affinity(r, adapter), r.load))
        return [r.index for r in ranked]

    def _affinity(self, r: Replica, adapter: str | None) -> int:
        if adapter is None or adapter in r.loaded:
            return 0
        return 1 if self._room(r) else 2

    def _room(self, r: Replica) -> bool:
        return self._max_loras is None or len(r.loaded) < self._max_loras

    def _place(self, attempt: Attempt) -> tuple[Attempt, Replica]:
        if attempt.replica is None:
            order = self.prefer(attempt.model)
            attempt = dataclasses.replace(attempt, replica=order[0] if order else 0)
        assert attempt.replica is not None
        # A request that started before a reload may carry an index from the previous replica list.
        return attempt, self.replicas[attempt.replica % len(self.replicas)]

    async def call(self, attempt: Attempt) -> Reply:
        return await self._send(attempt, self.transport.call)

    async def stream(self, attempt: Attempt) -> ReplyStream:
        return await self._send(attempt, self.transport.stream)

    async def _send(self, attempt: Attempt, send: Callable[[str, Attempt], Awaitable[T]]) -> T:
        """Send the attempt to its replica, its adapter loaded there first; once more if the replica lost it."""
        attempt, r = self._place(attempt)
        await self._ensure(r, attempt)
        try:
            return await send(r.url + attempt.op.value, attempt)
        except _NotServed:
            await self._reload(r, attempt)
            return await send(r.url + attempt.op.value, attempt)

    def _not_served(self, attempt: Attempt) -> UpstreamError | None:
        """A 404 for an adapter: the replica lost it (a restart, an unload); it is loaded again."""
        model = attempt.model
        if model.adapter_path is None:
            return None
        return _NotServed(f"vLLM replica {attempt.replica} answered 404 for adapter '{model.upstream_name}'",
                          model=model.name, backend=self.name)

    async def _ensure(self, r: Replica, attempt: Attempt) -> None:
        """Load the attempt's adapter on its replica, unless it is there already."""
        model = attempt.model
        if model.adapter_path is None or model.upstream_name in r.loaded:
            return
        limit = asyncio.get_running_loop().time() + self._load_timeout_s
        if attempt.deadline is not None:
            limit = min(limit, attempt.deadline)
        try:
            async with asyncio.timeout_at(limit):
                await self.load_adapter(r.index, model.upstream_name, model.adapter_path, model=model.name)
        except TimeoutError:
            raise AdapterLoadFailed(f"loading adapter '{model.upstream_name}' on vLLM replica {r.url} took too long",
                                    model=model.name, backend=self.name) from None

    async def _reload(self, r: Replica, attempt: Attempt) -> None:
        r.loaded.discard(attempt.model.upstream_name)
        await self._ensure(r, attempt)

    # -- adapters ---------------------------------------------------------------------------------------

    async def load_adapter(self, replica: int, name: str, path: str, *, model: str = "") -> None:
        """Load adapter `name` from `path` on one replica (once, whoever else asks meanwhile)."""
        r = self.replicas[replica]
        lock = self._locks.setdefault((replica, name), asyncio.Lock())
        async with lock:
            if name in r.loaded:
                return
            status, detail = await self._post(r, "load_lora_adapter", {"lora_name": name, "lora_path": path})
            if status != 200 and "already been loaded" not in detail:
                self.hooks.adapter_load(self.name, name, "failed")
                r.failed_loads[name] = time.monotonic()
                msg = f"vLLM replica {r.url} could not load adapter '{name}' from {path}: {detail}"
                log.error("backend '%s': %s", self.name, msg)
                raise AdapterLoadFailed(msg, model=model, backend=self.name)
            r.loaded.add(name)
            r.failed_loads.pop(name, None)
            self.hooks.adapter_load(self.name, name, "loaded")
            log.info("backend '%s': adapter '%s' loaded on vLLM replica %s", self.name, name, r.url)

    async def unload_adapter(self, replica: int, name: str) -> bool:
        """Unload adapter `name` from one replica; False when it was not loaded there."""
        r = self.replicas[replica]
        async with self._locks.setdefault((replica, name), asyncio.Lock()):
            status, detail = await self._post(r, "unload_lora_adapter", {"lora_name": name})
            r.loaded.discard(name)
            if status == 404:
                return False
            if status != 200:
                raise AdapterLoadFailed(f"vLLM replica {r.url} could not unload adapter '{name}': {detail}",
                                        backend=self.name)
            return True

    async def _post(self, r: Replica, path: str, payload: dict[str, str]) -> tuple[int, str]:
        try:
            status, body = await self.transport.post_json(f"{r.url}/{path}", payload)
        except (aiohttp.ClientError, OSError) as exc:
            raise AdapterLoadFailed(f"vLLM replica {r.url} did not answer {path}: {exc}", backend=self.name) from None
        return status, _message(body)

    # -- polling ----------------------------------------------------------------------------------------

    async def probe(self, replica: int, path: str, timeout_s: float) -> bytes:
        return await self.transport.get(urljoin(self.replicas[replica].url + "/", path), timeout_s)

    async def queue_length(self, replica: int, timeout_s: float) -> float | None:
        return (await self.refresh(replica, timeout_s)).waiting

    async def refresh(self, replica: int, timeout_s: float = 5.0) -> Replica:
        """Read one replica's /v1/models and /metrics now; the replica, updated (as far as it answered)."""
        r = self.replicas[replica]
        try:
            read_models(r, await self.probe(replica, "models", timeout_s))
            r.reachable = True
        except (UpstreamError, orjson.JSONDecodeError, AttributeError) as exc:
            r.reachable = False
            log.debug("backend '%s': %s/models: %s", self.name, r.url, exc)
            return r
        try:
            read_metrics(r, (await self.probe(replica, "/metrics", timeout_s)).decode("utf-8", "replace"),
                         time.monotonic())
        except (UpstreamError, ValueError) as exc:
            log.debug("backend '%s': %s metrics: %s", self.name, r.url, exc)
        return r

    async def _poll_loop(self) -> None:
        while True:
            try:
                await asyncio.gather(*(self._poll(r) for r in self.replicas))
                self.hooks.queue_wait(self.name, self.queue_wait_s())
            except Exception:  # a bug must not end the polling
                log.exception("backend '%s': polling vLLM failed", self.name)
            await asyncio.sleep(self._poll_s)

    async def _poll(self, r: Replica) -> None:
        await self.refresh(r.index, timeout_s=max(1.0, min(5.0, self._poll_s)))
        if not r.reachable:
            return
        now = time.monotonic()
        for name, path in self._wanted.items():
            if name in r.loaded or not self._room(r) or now - r.failed_loads.get(name, -LOAD_RETRY_S) < LOAD_RETRY_S:
                continue
            with contextlib.suppress(AdapterLoadFailed):  # logged and counted by load_adapter
                await asyncio.wait_for(self.load_adapter(r.index, name, path), self._load_timeout_s)

    def queue_wait_s(self) -> float:
        """The expected queueing delay on the least-loaded reachable replica (0 when none is known)."""
        waits = [r.queue_wait_s for r in self.replicas if r.reachable]
        return min(waits, default=0.0)

    def describe(self) -> list[dict[str, Any]]:
        """What the gateway knows of each replica, for /admin and the CLI."""
        return [{"replica": r.index, "url": r.url, "reachable": r.reachable, "served": r.served,
                 "adapters": sorted(r.loaded), "waiting": r.waiting, "running": r.running,
                 "kv_cache_usage": r.kv_cache, "finished_per_s": r.rate, "queue_wait_s": r.queue_wait_s,
                 "in_flight": r.in_flight} for r in self.replicas]


def _message(body: bytes) -> str:
    """vLLM's own message in an error answer (`{"error": {"message"}}`, or the older `{"message"}`)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        err = parsed.get("error", parsed)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
    return body[:500].decode("utf-8", "replace")
