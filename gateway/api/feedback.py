"""`POST /v1/feedback {request_id, score and/or label[, comment]}`: feedback on an answer the gateway gave.

Appended to the feedback file set beside the captures (redacted like them), with the request id (the
`x-request-id` of the answer) and the id of the client key that sent it; `nanoroute distill export` joins
it to the request that key made with that id, and to no other: a key cannot score another key's answers,
nor reach them by sending its own X-Request-Id. Feedback on a request that was not captured is kept all
the same: it costs a line and may be joined later.
"""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.requests import ClientDisconnect

from gateway.api.deps import client_key, gateway
from gateway.errors import InvalidRequest, PayloadTooLarge
from gateway.routing.request import json_object

router = APIRouter(prefix="/v1")

MAX_BODY_BYTES = 64 * 1024
MAX_LABEL = 128
MAX_COMMENT = 4096


@router.post("/feedback")
async def post_feedback(request: Request, key_id: str | None = Depends(client_key)) -> dict[str, Any]:
    entry = {"ts": round(time.time(), 3), **parse(await _body(request)), "client": key_id}
    gw = gateway(request)
    await gw.capture.feedback(entry, gw.state.table.redactor)
    if "score" in entry:  # met with the router's prediction, when a `learned` policy routed that request
        gw.predictions.feedback(entry["request_id"], key_id, float(entry["score"]))
    return {"object": "feedback", "request_id": entry["request_id"], "recorded": True}


async def _body(request: Request) -> bytes:
    parts, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise PayloadTooLarge(f"A feedback body is at most {MAX_BODY_BYTES} bytes")
            parts.append(chunk)
    except ClientDisconnect:
        # Gone, or cut off by the server's body deadline: a client error like any other, not a traceback per client.
        raise InvalidRequest("The client went away before sending the whole body") from None
    return b"".join(parts)


def parse(raw: bytes) -> dict[str, Any]:
    """The fields kept, checked; raises InvalidRequest naming the field at fault."""
    body = json_object(raw)
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id or len(request_id) > 128:
        raise InvalidRequest("'request_id' is required: the x-request-id of the answer (1-128 characters)",
                             param="request_id")
    score, label, comment = body.get("score"), body.get("label"), body.get("comment")
    if score is None and label is None:
        raise InvalidRequest("Give a 'score' (a number) or a 'label' (a string), or both", param="score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)
                              or not math.isfinite(score)):
        raise InvalidRequest("'score' must be a finite number", param="score")
    if label is not None and (not isinstance(label, str) or not 0 < len(label) <= MAX_LABEL):
        raise InvalidRequest(f"'label' must be a string of 1-{MAX_LABEL} characters", param="label")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise InvalidRequest(f"'comment' must be a string of at most {MAX_COMMENT} characters", param="comment")
    out: dict[str, Any] = {"request_id": request_id}
    for name, value in (("score", score), ("label", label), ("comment", comment)):
        if value is not None:
            out[name] = value
    return out
