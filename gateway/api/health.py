"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.api.deps import gateway

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and its event loop answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(request: Request) -> dict[str, Any] | JSONResponse:
    """Ready once the lifespan has built the routing table and opened the backends' pools."""
    gw = gateway(request)
    if not gw.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    table = gw.state.table
    return {"status": "ready", "config_version": table.version, "policies": len(table.policies),
            "models": len(table.models)}
