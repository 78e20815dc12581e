"""`GET /v1/models`: the model names a client may send, in OpenAI's list shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from gateway.api.deps import client_key, gateway
from gateway.errors import ModelNotFound

router = APIRouter(prefix="/v1", dependencies=[Depends(client_key)])


def _entry(name: str, loaded_at: float) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(loaded_at), "owned_by": "nanoroute"}


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    table = gateway(request).state.table
    return {"object": "list", "data": [_entry(n, table.loaded_at) for n in table.client_models]}


@router.get("/models/{name:path}")
async def get_model(name: str, request: Request) -> dict[str, Any]:
    table = gateway(request).state.table
    if name not in table.client_models:
        raise ModelNotFound(name)
    return _entry(name, table.loaded_at)
