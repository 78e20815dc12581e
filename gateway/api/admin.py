"""`/admin/...`: the active config, reloads, and route explanations. Needs NANOROUTE_ADMIN_KEY."""

from __future__ import annotations

import math
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from gateway.api.deps import GatewayView, admin, gateway, presented_key
from gateway.backends.base import Operation
from gateway.config.table import LearnedRoute, ModelRoute
from gateway.errors import ConfigError, InvalidRequest
from gateway.governance.principal import Principal
from gateway.routing.decide import Candidate, explain
from gateway.routing.request import parse_request

router = APIRouter(prefix="/admin", dependencies=[Depends(admin)])


@router.get("/config")
async def config(request: Request) -> dict[str, Any]:
    gw = gateway(request)
    table = gw.state.table
    err = gw.reloader.last_error
    return {
        "source": table.source,
        "version": table.version,
        "loaded_at": table.loaded_at,
        "warnings": list(table.warnings),
        "backends": sorted(table.config.backends),
        "models": {name: _model(m) for name, m in table.models.items()},
        "policies": [{"name": p.name, "strategy": p.strategy, "candidates": [m.name for m in p.candidates],
                      "fallback": [m.name for m in p.fallback]} for p in table.policies],
        "last_error": None if err is None else {
            "source": err.source, "version": err.version, "at": err.at,
            "problems": [{"path": path, "problem": why} for path, why in err.problems],
        },
    }


@router.get("/backends")
async def backends(request: Request) -> dict[str, Any]:
    """What each vLLM backend's replicas serve (adapters included), and how busy each is."""
    state = gateway(request).state
    out: dict[str, Any] = {}
    for name, backend in state.backends.items():
        replicas = backend.describe()
        if replicas is not None:  # a backend that knows its replicas' models (vLLM)
            out[name] = {"type": state.table.config.backends[name].type,
                         "queue_wait_s": state.signals.queue_wait(name), "replicas": replicas}
    return {"backends": out}


@router.get("/rollouts")
async def rollouts(request: Request) -> dict[str, Any]:
    """Every policy's rollout: stage, share of traffic, live score, and the moves so far."""
    return {"rollouts": gateway(request).rollouts.describe()}


@router.post("/rollouts/{policy}")
async def rollout_action(policy: str, request: Request) -> dict[str, Any]:
    """`{"action": "pin", "stage": "canary", "step": 1}`, `{"action": "stop"}` or `{"action": "resume"}`."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body must be a JSON object with an action") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object with an action")
    step = body.get("step", 0)
    if not isinstance(step, int):
        raise InvalidRequest("step must be an integer", param="step")
    return gateway(request).rollouts.act(policy, str(body.get("action")), body.get("stage"), step)


@router.post("/reload", response_model=None)
async def reload(request: Request) -> dict[str, Any] | JSONResponse:
    gw = gateway(request)
    try:
        table = await gw.reloader.reload("POST /admin/reload")
    except ConfigError as exc:
        problems = [{"path": path, "problem": why} for path, why in exc.problems]
        body = {"error": {"message": exc.message, "type": "invalid_request_error", "param": None,
                          "code": "invalid_config"}, "problems": problems, "version": gw.state.table.version}
        return JSONResponse(body, status_code=422)
    return {"reloaded": table is not None, "version": gw.state.table.version}


@router.post("/explain")
async def explain_route(request: Request) -> dict[str, Any]:
    """Where a chat request would go and why, without calling any upstream."""
    h = request.headers
    return explanation(gateway(request), await request.body(), task=h.get("x-nanoroute-task"),
                       key_id=h.get("x-nanoroute-key"), presented=presented_key(request),
                       pin=h.get("x-nanoroute-model"))


def explanation(gw: GatewayView, body: bytes, *, task: str | None = None, key_id: str | None = None,
                presented: Principal | None = None, pin: str | None = None) -> dict[str, Any]:
    """Where the chat request `body` would go and why: as if sent with X-Nanoroute-Task `task` and
    X-Nanoroute-Model `pin`, by the client key `key_id` (else the key `presented`). Raises InvalidRequest
    for a body that is not a chat request."""
    key = gw.auth.registry.by_id(key_id) if key_id else presented
    req = parse_request(
        Operation.CHAT, body, task_header=task, key_id=key_id or (key.id if key is not None else None),
        request_id="explain", pin=pin,
    )
    req.access = key.access if key is not None else None
    out = explain(gw.state.table, req, gw.state.signals)
    d = out.decision
    return {
        "policy": d.policy,
        "reason": d.reason,
        "strategy": d.route.strategy if d.route else None,
        "task": req.task,
        "prompt_tokens": out.prompt_tokens,
        "require": d.route.require.model_dump(exclude_none=True) if d.route else {},
        "candidates": [_candidate(c) for c in out.candidates],
        "choice": d.chain[0].name,
        "chain": [m.name for m in d.chain],
        **({"learned": _learned(d.route.learned)} if d.route is not None and d.route.learned is not None else {}),
    }


def _learned(learned: LearnedRoute) -> dict[str, Any]:
    """A `learned` policy's router and the threshold calibrated for it, with what it gave on held-out rows."""
    t = learned.threshold
    return {
        "router": str(learned.router.path),
        "version": learned.router.version,
        "threshold": None if math.isinf(t.value) else round(t.value, 6),
        "rule": "the cheapest candidate whose predicted quality reaches the threshold, else the dearest",
        "heldout": {"rows": t.rows, "quality": round(t.quality, 4),
                    "shares": {m: round(s, 4) for m, s in zip(learned.order, t.shares, strict=True)}},
    }


def _candidate(c: Candidate) -> dict[str, Any]:
    e = c.estimate
    return {
        "model": e.model.name,
        "eligible": not c.failed,
        "failed": list(c.failed),
        "quality": c.quality,
        **({"predicted_quality": round(c.predicted, 6)} if c.predicted is not None else {}),
        "expected_cost_usd": e.cost_usd,
        "expected_latency_ms": e.latency_ms,
        "expected_latency_p95_ms": e.latency_p95_ms,
        "expected_output_tokens": e.output_tokens,
        "context_window": e.model.context_window,
    }


def _model(m: ModelRoute) -> dict[str, Any]:
    per_m = 1e6
    return {
        "backend": m.backend,
        "upstream_name": m.upstream_name,
        "context_window": m.context_window,
        "price_per_1m": None if m.input_usd_per_token is None or m.output_usd_per_token is None else {
            "input": m.input_usd_per_token * per_m, "output": m.output_usd_per_token * per_m},
        "price_source": m.price_source,
        "quality": dict(m.quality),
        "adapter": None if m.adapter_path is None else {"path": m.adapter_path, "base_model": m.adapter_base},
    }
