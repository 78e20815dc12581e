"""`GET /v1/models`: the model names the calling key may send, in OpenAI's list shape."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from gateway.api.deps import client, gateway
from gateway.errors import ModelNotFound
from gateway.governance.principal import Principal
from gateway.routing.decide import client_models

router = APIRouter(prefix="/v1")


def _entry(name: str, loaded_at: float) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(loaded_at), "owned_by": "nanoroute"}


@router.get("/models")
async def list_models(request: Request, key: Annotated[Principal | None, Depends(client)]) -> dict[str, Any]:
    table = gateway(request).state.table
    names = client_models(table, key.access if key is not None else None)
    return {"object": "list", "data": [_entry(n, table.loaded_at) for n in names]}


@router.get("/models/{name:path}")
async def get_model(name: str, request: Request, key: Annotated[Principal | None, Depends(client)]) -> dict[str, Any]:
    table = gateway(request).state.table
    if name not in client_models(table, key.access if key is not None else None):
        raise ModelNotFound(name)
    return _entry(name, table.loaded_at)
