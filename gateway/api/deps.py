"""FastAPI dependencies shared by the non-hot routers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from gateway.app import Gateway


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def client_key(request: Request) -> str | None:
    """The calling client's key id; raises AuthenticationFailed when keys are required."""
    auth = request.headers.get("authorization")
    return gateway(request).state.auth.check(auth.encode("latin-1") if auth is not None else None)


def admin(request: Request) -> None:
    auth = request.headers.get("authorization")
    gateway(request).state.auth.check_admin(auth.encode("latin-1") if auth is not None else None)
