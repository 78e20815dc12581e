"""`GET /metrics`: Prometheus text format (summed across workers when there are several)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.api.deps import gateway
from gateway.metrics import CONTENT_TYPE

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(gateway(request).metrics.exposition(), media_type=CONTENT_TYPE)
