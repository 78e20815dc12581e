"""Which model replicas may take a request now: circuit breakers, passive outlier detection, active checks.

State is per app instance (`Gateway.health`), built from the routing table and the backends' replicas
(`backends.replica.Replica`, the one model of a replica), and kept across reloads for what did not
change. Beside each replica (one base URL), a `ReplicaHealth` keeps:

- a **replica breaker** that counts only connection failures (refused, reset, connect timeout): passive
  outlier detection, which takes a dead server out for all its models after a few failures in all;
- an **active health check** (`health:` on the backend): GET `path` every `interval_s`; `failures`
  failed checks in a row take the replica out until one passes. For vLLM with `max_waiting`, each check
  also reads the replica's queue (`vllm:num_requests_waiting` on /metrics): while it is over that, the
  replica is *saturated* and new requests spill over rather than queue.

And for each model on each replica, a **slot** with its own breaker counting every error that says the
model is unwell (`UpstreamError.unhealthy`). Before failures that one client's requests may have caused
open it (`breaker.confirm`), the slot's model is asked a one-token question of the same kind on that
replica (`check_model`): one client's poisoned payloads cannot switch a model off for everyone, while a
real outage fails the check too and opens the breaker. `ModelHealth.pick()` takes the model's slots in turn and
returns the first whose replica is in and whose two breakers let a request through; None when every
one is out, which the chain reports as `CircuitOpen`. `nanoroute_circuit_open{model}` is 1 while no
slot of the model is fully closed; `nanoroute_replica_up{backend,replica}` is 0 while a replica is out.

A slot also counts the requests in flight (`enter`/`leave`): on its model, for `max_in_flight` and
`nanoroute_in_flight_requests{model}`, and on its replica, which the vLLM backend ranks replicas by.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from functools import partial
from typing import Any

import orjson
from prometheus_client import Counter, Gauge

from gateway.backends.base import Attempt, Backend, Operation
from gateway.backends.replica import Replica
from gateway.config import schema
from gateway.config.table import ModelRoute, RoutingTable
from gateway.errors import UpstreamConnectError, UpstreamError, UpstreamTimeout
from gateway.reliability.breaker import CLOSED, OPEN, Breaker, clock
from gateway.tasks import Background

log = logging.getLogger("nanoroute")

CHECK_TIMEOUT_S = 30.0
"""The longest a breaker's check of a model may take (less when the backend's first-token limit is shorter)."""
CHECK_BODIES: dict[Operation, dict[str, Any]] = {
    Operation.CHAT: {"messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1},
    Operation.COMPLETIONS: {"prompt": "OK", "max_tokens": 1},
    Operation.EMBEDDINGS: {"input": "OK"},
    Operation.RESPONSES: {"input": "Say OK.", "max_output_tokens": 16, "store": False},  # OpenAI's least is 16
    Operation.MESSAGES: {"messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1},
}


def health_check(spec: schema.Backend) -> schema.HealthCheck | None:
    """The backend's active health check with its defaults resolved; None when off."""
    if isinstance(spec, schema.LitellmBackend):
        return None
    vllm = isinstance(spec, schema.VllmBackend)
    check = spec.health if spec.health is not None else (schema.HealthCheck() if vllm else None)
    if check is None or not check.enabled:
        return None
    return check if check.path is not None else check.model_copy(update={"path": "/health" if vllm else "models"})


def _host_failure(err: UpstreamError) -> bool:
    """The server itself did not take the connection: counts against the replica, for every model."""
    return isinstance(err, UpstreamConnectError) or (isinstance(err, UpstreamTimeout) and err.phase == "connect")


class ReplicaHealth:
    """What the health state holds beside one replica: its connection-failure breaker and its checks."""

    __slots__ = ("breaker", "check_failures", "down", "gauge", "models", "replica", "saturated")

    def __init__(self, replica: Replica, cfg: schema.Breaker) -> None:
        self.replica = replica
        self.breaker = Breaker(cfg, self.changed)
        self.down = False
        """Taken out by the active health check."""
        self.saturated = False
        """Its queue is over `health.max_waiting` (vLLM)."""
        self.check_failures = 0
        self.models: list[ModelHealth] = []
        self.gauge: Gauge | None = None

    def changed(self) -> None:
        for model in self.models:
            model.refresh()
        if self.gauge is not None:
            self.gauge.labels(self.replica.backend, str(self.replica.index)).set(0 if self.out else 1)

    @property
    def out(self) -> bool:
        return self.down or self.breaker.state != CLOSED


class Slot:
    """One model on one replica. Attempts report back: `succeeded`, `failed`, or `release(probes)`."""

    __slots__ = ("breaker", "index", "limited", "model", "op", "replica")

    def __init__(self, model: ModelHealth, replica: ReplicaHealth, cfg: schema.Breaker) -> None:
        self.model, self.replica, self.index = model, replica, replica.replica.index
        self.breaker = Breaker(cfg, model.refresh)
        self.op = Operation.CHAT
        """The kind of the last failed request: what a check of the model asks."""
        self.limited = False
        """What last counted against the breaker (so what opened it, when open) was the upstream's rate limit."""

    def enter(self) -> Replica:
        """A request to this model on this replica starts; hand what this returns to `leave` when it ends."""
        model, replica = self.model, self.replica.replica
        model.in_flight += 1
        replica.in_flight += 1
        if model.flight is not None:
            model.flight.inc()
        return replica

    def leave(self, replica: Replica) -> None:
        model = self.model
        model.in_flight -= 1
        replica.in_flight -= 1
        if model.flight is not None:
            model.flight.dec()

    def ready(self, now: float) -> bool:
        r = self.replica
        return not r.down and not r.saturated and r.breaker.ready(now) and self.breaker.ready(now)

    def healthy(self, now: float) -> bool:
        """Ready but for a full queue."""
        r = self.replica
        return not r.down and r.breaker.ready(now) and self.breaker.ready(now)

    def acquire(self, now: float) -> int:
        """Take the request through; the returned probe marks are handed back to `release` if it ends
        without a verdict."""
        return int(self.replica.breaker.acquire(now)) | (int(self.breaker.acquire(now)) << 1)

    def release(self, probes: int) -> None:
        if probes & 1:
            self.replica.breaker.release()
        if probes & 2:
            self.breaker.release()

    def succeeded(self, now: float) -> None:
        self.replica.breaker.success(now)
        self.breaker.success(now)

    def failed(self, err: UpstreamError, now: float, probes: int, op: Operation | None = None) -> None:
        if isinstance(err, UpstreamTimeout) and err.phase == "deadline":
            self.release(probes)  # the request ran out of time: says nothing about the model
            return
        if _host_failure(err):
            self.replica.breaker.failure(now)
        else:
            self.replica.breaker.success(now)
        if err.unhealthy:
            if op is not None:
                self.op = op
            if self.breaker.state != OPEN:  # an open breaker ignores failures: keep what opened it
                self.limited = err.rate_limited
            self.breaker.failure(now, systemic=err.systemic)
            self.model.last_failure = now
        else:
            self.breaker.success(now)

    def hold(self, now: float, seconds: float) -> None:
        """Skip this slot for `seconds`: the upstream's Retry-After asked for that long."""
        self.limited = True
        self.breaker.hold(now, seconds)


class ModelHealth:
    __slots__ = ("_gauge", "_turn", "flight", "in_flight", "interval_s", "last_failure", "name", "open", "slots")

    def __init__(self, name: str, gauge: Gauge | None, flight: Gauge | None = None) -> None:
        self.name = name
        self.slots: tuple[Slot, ...] = ()
        self.last_failure = float("-inf")
        self.open = False
        self.interval_s = 0.0
        """The backend's health-check interval: when a checked-out replica may be back."""
        self.in_flight = 0
        """Requests to it in flight now (this process), on every replica: what `max_in_flight` caps."""
        self.flight: Any = flight.labels(name) if flight is not None else None
        """Its `nanoroute_in_flight_requests` child."""
        self._turn = 0
        self._gauge = gauge

    def pick(self, now: float, avoid: Slot | None = None, order: list[int] | None = None) -> tuple[Slot, int] | None:
        """The next slot (in turn, or the first in `order`, replica indexes best first) that may take a
        request now, other than `avoid`, with its probe marks; None if none may."""
        slots = self.slots
        n = len(slots)
        if order is not None and len(order) == n:
            for i in order:
                slot = slots[i]
                if slot is not avoid and slot.ready(now):
                    return slot, slot.acquire(now)
            return None
        start = self._turn
        for k in range(n):
            slot = slots[(start + k) % n]
            if slot is not avoid and slot.ready(now):
                self._turn = (start + k + 1) % n
                return slot, slot.acquire(now)
        return None

    def saturated(self, now: float) -> bool:
        """Whether some replica would take the request but for its queue: the model is busy, not broken."""
        return any(s.replica.saturated and s.healthy(now) for s in self.slots)

    def has_other(self, now: float, slot: Slot) -> bool:
        """Whether another replica could take a retry right away."""
        return any(s is not slot and s.ready(now) for s in self.slots)

    def force(self, now: float) -> tuple[Slot, int]:
        """A slot even though none is ready (`on_all_open: least_recently_failed`): the one whose model
        breaker failed longest ago, on a replica the health check has not taken out if there is one."""
        slot = min(self.slots, key=lambda s: (s.replica.down, s.breaker.last_failure))
        return slot, slot.acquire(now)

    def rate_limited(self, now: float) -> bool:
        """Whether every replica is out only because the upstream limits the rate: each slot's breaker was
        opened by 429s (or a long Retry-After) and nothing else (health checks, connections) took it out."""
        return bool(self.slots) and all(
            s.limited and not s.breaker.ready(now) and not s.replica.down and s.replica.breaker.ready(now)
            for s in self.slots)

    def retry_after(self, now: float) -> float:
        """Seconds until some slot may take a request again."""
        waits = []
        for s in self.slots:
            if s.replica.down:
                waits.append(self.interval_s)
            else:
                waits.append(max(s.replica.breaker.wait(now), s.breaker.wait(now)))
        return min(waits, default=1.0)

    def refresh(self) -> None:
        self.open = all(s.replica.out or s.breaker.state != CLOSED for s in self.slots)
        if self._gauge is not None:
            self._gauge.labels(self.name).set(1 if self.open else 0)


class Health:
    """Breakers and health checks for one app instance. `start(table, backends)` again after a reload."""

    def __init__(self, circuit_gauge: Gauge | None = None, replica_gauge: Gauge | None = None,
                 checks: Counter | None = None, in_flight_gauge: Gauge | None = None) -> None:
        self._circuit_gauge = circuit_gauge
        self._replica_gauge = replica_gauge
        self._checks = checks
        self._flight_gauge = in_flight_gauge
        self._models: dict[str, ModelHealth] = {}
        self._replicas: dict[tuple[str, str, schema.Breaker], ReplicaHealth] = {}
        self._slots: dict[tuple[str, str, str, schema.Breaker], Slot] = {}
        self._loops = Background("health checks")
        self._checking = Background("breaker checks")
        """Checks of models before their breakers open: they outlive a reload (each ends within its timeout)."""

    def model(self, name: str) -> ModelHealth | None:
        return self._models.get(name)

    def replicas(self, backend: str) -> list[ReplicaHealth]:
        return sorted((r for r in self._replicas.values() if r.replica.backend == backend),
                      key=lambda r: r.replica.index)

    async def start(self, table: RoutingTable, backends: Mapping[str, Backend]) -> None:
        """Build the state for `table` and its backends (keeping what did not change) and start the checks."""
        await self._loops.stop()
        self._configure(table, backends)
        for name, spec in table.config.backends.items():
            check = health_check(spec)
            if check is not None:
                self._loops.start(self._check_loop(backends[name], self.replicas(name), check), name)
        for model in table.models.values():
            spec = table.config.backends[model.backend]
            backend = backends[model.backend]
            for slot in self._models[model.name].slots:
                slot.breaker.confirm = partial(self._confirm, slot, model, backend, spec) if spec.breaker.confirm \
                    else None

    async def stop(self) -> None:
        """Stop the health checks and the breakers' checks of models under way (at shutdown)."""
        await self._loops.stop()
        await self._checking.stop()

    def _confirm(self, slot: Slot, model: ModelRoute, backend: Backend, spec: schema.Backend) -> None:
        self._checking.start(self._check_model(slot, model, backend, spec), f"check of {model.name}")

    async def _check_model(self, slot: Slot, model: ModelRoute, backend: Backend, spec: schema.Backend) -> None:
        """Whether the model fails a small request of its own on the slot's replica; tells the breaker."""
        failing, why = False, ""
        loop = asyncio.get_running_loop()
        body = orjson.dumps({"model": model.upstream_name, **CHECK_BODIES[slot.op]})
        attempt = Attempt(slot.op, model, body, f"breaker-check-{os.urandom(6).hex()}", slot.index,
                          loop.time() + min(CHECK_TIMEOUT_S, spec.timeouts.ttft_s))
        try:
            await backend.call(attempt)
        except UpstreamTimeout as exc:  # no answer within the check's own time (its deadline), whatever the phase
            failing, why = True, exc.message
        except UpstreamError as exc:  # a rejection of the check's request (a 4xx) means the model answered
            failing, why = exc.unhealthy, exc.message
        except Exception:  # a bug: do not open on it
            log.exception("breaker check of model '%s' failed", model.name)
        finally:
            slot.breaker.confirmed(clock(), failing)
        if self._checks is not None:
            self._checks.labels(model.name, "failing" if failing else "answered").inc()
        if failing:
            log.warning("model '%s' on replica %d fails a check request too (%s): its breaker opens", model.name,
                        slot.index, why)
        else:
            log.info("model '%s' on replica %d answers a check request: the failures were the requests' own, "
                     "its breaker stays closed", model.name, slot.index)

    def _configure(self, table: RoutingTable, backends: Mapping[str, Backend]) -> None:
        replicas: dict[tuple[str, str, schema.Breaker], ReplicaHealth] = {}
        by_backend: dict[str, list[ReplicaHealth]] = {}
        for name, spec in table.config.backends.items():
            for replica in backends[name].replicas:
                key = (name, replica.url, spec.breaker)
                health = self._replicas.get(key) or ReplicaHealth(replica, spec.breaker)
                # A backend built anew by a reload has replicas of its own: its verdicts carry over to them.
                health.replica, health.models, health.gauge = replica, [], self._replica_gauge
                replicas[key] = health
                by_backend.setdefault(name, []).append(health)
        slots: dict[tuple[str, str, str, schema.Breaker], Slot] = {}
        models: dict[str, ModelHealth] = {}
        for model in table.models.values():
            spec = table.config.backends[model.backend]
            mh = self._models.get(model.name) or ModelHealth(model.name, self._circuit_gauge, self._flight_gauge)
            check = health_check(spec)
            mh.interval_s = check.interval_s if check is not None else 0.0
            own: list[Slot] = []
            for health in by_backend[model.backend]:
                slot_key = (model.name, model.backend, health.replica.url, spec.breaker)
                slot = self._slots.get(slot_key)
                if slot is None or slot.model is not mh:
                    slot = Slot(mh, health, spec.breaker)
                slot.replica, slot.index = health, health.replica.index
                health.models.append(mh)
                slots[slot_key] = slot
                own.append(slot)
            mh.slots = tuple(own)
            mh._turn %= len(own)
            mh.refresh()
            models[model.name] = mh
        for health in replicas.values():
            health.changed()
        self._replicas, self._slots, self._models = replicas, slots, models

    async def _check_loop(self, backend: Backend, replicas: list[ReplicaHealth], check: schema.HealthCheck) -> None:
        assert check.path is not None
        while True:
            await asyncio.gather(*(self._check(backend, r, check) for r in replicas))
            await asyncio.sleep(check.interval_s)

    async def _check(self, backend: Backend, health: ReplicaHealth, check: schema.HealthCheck) -> None:
        assert check.path is not None
        r = health.replica
        try:
            await backend.probe(r.index, check.path, check.timeout_s)
        except UpstreamError as exc:
            health.check_failures += 1
            if health.check_failures >= check.failures and not health.down:
                log.warning("backend '%s' replica %d (%s) is out: %s", r.backend, r.index, r.url, exc.message)
                health.down = True
                health.changed()
            return
        except Exception:  # a bug must not end the checks
            log.exception("health check of backend '%s' replica %d failed", r.backend, r.index)
            return
        health.check_failures = 0
        if health.down:
            log.info("backend '%s' replica %d (%s) is back", r.backend, r.index, r.url)
            health.down = False
            health.changed()
        if check.max_waiting is not None:  # the replica's own queue (vLLM's), read now
            waiting = await backend.queue_length(r.index, check.timeout_s)
            health.saturated = waiting is not None and waiting > check.max_waiting
