"""FastAPI dependencies shared by the routers beside the pipeline (models, health, admin, feedback, metrics,
stored responses).

Routers see the gateway through `GatewayView`, the few parts they read, rather than the app itself.
"""

from __future__ import annotations

from typing import Protocol

from fastapi import Request

from gateway.capture.capture import Capture
from gateway.config.watcher import Reloader
from gateway.governance.governor import Governor
from gateway.governance.principal import Principal
from gateway.governance.registry import Registry
from gateway.metrics import Metrics
from gateway.pipeline.admission.keys import KeyCheck, presented
from gateway.pipeline.context import Snapshot
from gateway.predictions import Predictions
from gateway.rollout import Rollouts
from gateway.store.turns import Turns


class GatewayView(Protocol):
    auth: KeyCheck
    metrics: Metrics
    capture: Capture
    rollouts: Rollouts
    reloader: Reloader
    registry: Registry
    governor: Governor
    predictions: Predictions
    turns: Turns | None

    @property
    def ready(self) -> bool: ...

    @property
    def state(self) -> Snapshot: ...


def gateway(request: Request) -> GatewayView:
    gw: GatewayView = request.app.state.gateway
    return gw


def _presented(request: Request) -> bytes | None:
    h = request.headers
    return presented(*(v.encode("latin-1") if (v := h.get(name)) is not None else None
                       for name in ("authorization", "x-api-key", "api-key")))


def client(request: Request) -> Principal | None:
    """The calling client's key; None when the API is open. Raises AuthenticationFailed when keys are required."""
    return gateway(request).auth.check(_presented(request))


def client_key(request: Request) -> str | None:
    """The calling client's key id; raises AuthenticationFailed when keys are required."""
    key = client(request)
    return key.id if key is not None else None


def presented_key(request: Request) -> Principal | None:
    """The client key the request carries, if it is one of ours (never raises)."""
    return gateway(request).auth.identify(_presented(request))


def admin(request: Request) -> None:
    auth = request.headers.get("authorization")
    gateway(request).auth.check_admin(presented(auth.encode("latin-1") if auth is not None else None, None, None))
