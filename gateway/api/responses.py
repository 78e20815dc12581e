"""The Responses API's stored responses, read back: `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}` and
`GET /v1/responses/{id}/input_items`, as OpenAI's API has them.

A response the gateway answered with `store` (the default) is kept in its store (`gateway.store.turns`) for
the client key that made it: another key, like an unknown, expired or deleted id, gets OpenAI's 404. With the
store off (`NANOROUTE_RESPONSES_STORE=false`) nothing is kept, and every id is unknown.

Input items are listed as OpenAI lists them, newest first unless `order=asc`, `limit` (1-100, 20) at a time
after the item `after`: each with a `type` and, where the client sent none, an `id` made from the response's
(so that it is the same on every read). The input is the whole context the response was given: the earlier
turns of its `previous_response_id` included.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from gateway.api.deps import client_key, gateway
from gateway.errors import ResponseNotFound
from gateway.store.turns import StoredResponse

router = APIRouter(prefix="/v1")

MAX_ID = 128
"""Longer ids are no response's: answered as unknown without asking the store."""

_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


@router.get("/responses/{response_id}")
async def get_response(response_id: str, request: Request,
                       key_id: Annotated[str | None, Depends(client_key)]) -> Response:
    stored = await _stored(request, key_id, response_id)
    return Response(orjson.dumps(stored.response), media_type="application/json")


@router.delete("/responses/{response_id}")
async def delete_response(response_id: str, request: Request,
                          key_id: Annotated[str | None, Depends(client_key)]) -> dict[str, Any]:
    turns = gateway(request).turns
    if len(response_id) > MAX_ID or turns is None or not await turns.delete(key_id, response_id):
        raise ResponseNotFound(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/responses/{response_id}/input_items")
async def list_input_items(response_id: str, request: Request, key_id: Annotated[str | None, Depends(client_key)],
                           limit: Annotated[int, Query(ge=1, le=100)] = 20,
                           order: Literal["asc", "desc"] = "desc",
                           after: Annotated[str | None, Query(max_length=MAX_ID)] = None) -> dict[str, Any]:
    stored = await _stored(request, key_id, response_id)
    items = listed(stored.input, response_id)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}


async def _stored(request: Request, key_id: str | None, response_id: str) -> StoredResponse:
    turns = gateway(request).turns
    stored = None
    if len(response_id) <= MAX_ID and turns is not None:
        stored = await turns.get(key_id, response_id)
    if stored is None or stored.response is None:
        raise ResponseNotFound(response_id)
    return stored


def listed(items: list[Any], response_id: str) -> list[dict[str, Any]]:
    """Input items as OpenAI lists them: a `type` on each (a bare `{role, content}` is a message, its text
    content in parts) and an `id` (the client's, else one made from the response's id and the item's place)."""
    out = []
    suffix = response_id.removeprefix("resp_")
    for i, given in enumerate(items):
        if not isinstance(given, dict):
            continue
        item = dict(given)
        kind = item.setdefault("type", "message")
        if kind == "message" and isinstance(content := item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": content}]
        if not isinstance(item.get("id"), str):
            item["id"] = f"{_ID_PREFIX.get(str(kind), 'item')}_{suffix}_{i}"
        out.append(item)
    return out
