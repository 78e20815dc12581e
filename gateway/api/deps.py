"""FastAPI dependencies shared by the non-hot routers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from gateway.keys import presented

if TYPE_CHECKING:
    from gateway.app import Gateway


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def _presented(request: Request) -> bytes | None:
    h = request.headers
    return presented(*(v.encode("latin-1") if (v := h.get(name)) is not None else None
                       for name in ("authorization", "x-api-key", "api-key")))


def client_key(request: Request) -> str | None:
    """The calling client's key id; raises AuthenticationFailed when keys are required."""
    key = gateway(request).state.auth.check(_presented(request))
    return key.id if key is not None else None


def presented_key_id(request: Request) -> str | None:
    """The id of the client key the request carries, if it is one of ours (never raises)."""
    key = gateway(request).state.auth.identify(_presented(request))
    return key.id if key is not None else None


def admin(request: Request) -> None:
    auth = request.headers.get("authorization")
    gateway(request).state.auth.check_admin(presented(auth.encode("latin-1") if auth is not None else None,
                                                      None, None))
