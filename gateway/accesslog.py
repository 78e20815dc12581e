"""The access log: one JSON line per request, written by the `nanoroute.access` logger.

It says where the request went and why, what it cost and how long it took. It never holds a key
(only its id) and never a prompt or a completion.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from gateway.record import RequestRecord

logger = logging.getLogger("nanoroute.access")


def line(rec: RequestRecord) -> bytes:
    entry: dict[str, Any] = {
        "request_id": rec.request_id,
        "key_id": rec.key_id,
        "op": rec.op,
        "task": rec.task,
        "stream": rec.stream,
        "policy": rec.policy,
        "reason": rec.reason,
        "model": rec.model.name if rec.model is not None else None,
        "fallbacks": [{"model": e.model, "backend": e.backend, "kind": e.kind} for e in rec.failures],
        "status": rec.status,
        "outcome": rec.outcome,
        "prompt_tokens": rec.prompt_tokens,
        "completion_tokens": rec.completion_tokens,
        "cost_usd": rec.cost_usd,
        "latency_ms": round(rec.duration_s * 1000, 3),
        "ttft_ms": round(rec.first_byte_s * 1000, 3) if rec.stream and rec.first_byte_s is not None else None,
    }
    if rec.usage_estimated:
        entry["tokens_estimated"] = True  # the stream ended before the upstream's usage
    if rec.error:
        entry["error"] = rec.error
    return orjson.dumps(entry)


def write(rec: RequestRecord) -> None:
    if logger.isEnabledFor(logging.INFO):
        # Not logger.info(): it walks the stack for the caller's file and line, the same for every line
        # (a sixth of what a line costs).
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, line(rec).decode(), (), None, "write")
        logger.handle(record)


def configure(level: str) -> None:
    """Access lines go to stderr as bare JSON, apart from the human-readable process log."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(level.upper())
