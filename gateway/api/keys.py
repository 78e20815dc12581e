"""`/admin/keys`, `/admin/teams`, `/admin/spend`: client keys, teams and spend. Needs NANOROUTE_ADMIN_KEY.

Keys come from three sources (gateway/governance/principal.py). Those the admin API makes (`source: admin`)
are made, changed and revoked here; those of NANOROUTE_API_KEYS (`env`) and of the config file (`config`) are
listed and shown, read-only: they are changed where they are declared (403 here). A new key's secret is in
the answer to its `POST` only; the gateway keeps its digest, which no answer shows.

Bodies are read and validated here rather than by FastAPI, so that a bad one is a 400 that names the field
(as every other error of the gateway, in OpenAI's envelope), never FastAPI's 422.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ValidationError

from gateway.api.deps import GatewayView, admin, gateway
from gateway.config import schema
from gateway.errors import InvalidRequest, PermissionDenied
from gateway.governance.counters import NANO, LedgerEntry, Scope, ScopeUsage, period_id
from gateway.governance.principal import Principal, scope
from gateway.governance.records import KeyCreate, KeyRecord, KeyUpdate

router = APIRouter(prefix="/admin", dependencies=[Depends(admin)])

M = TypeVar("M", bound=BaseModel)

DIMENSIONS = ("key", "team", "model", "day")
SPEND_DAYS = 30
"""`GET /admin/spend` without `since`: this many days, through `until`."""
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

_WHY = {
    400: "The body or a query parameter is invalid (`param` names it); or it names a team, model or policy "
         "the config does not have",
    403: "The key is declared in NANOROUTE_API_KEYS or the config file, and is changed there",
    404: "No key with that id (PATCH, DELETE: no live key made by the admin API)",
    503: "The store cannot be read or written now",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The errors a route may answer, for the OpenAPI document."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {status: {"description": _WHY[status], "content": error} for status in statuses}


# -- keys ----------------------------------------------------------------------------------------------------


@router.post("/keys", status_code=201, responses=_errors(400, 503))
async def create_key(request: Request) -> dict[str, Any]:
    """A new key (`KeyCreate`): its record, and `key`, its secret, shown in this answer only."""
    spec = _body(KeyCreate, await request.body())
    record, secret = await gateway(request).registry.create(spec)
    return {"key": secret, **_admin_view(record)}


@router.get("/keys", responses=_errors(400, 503))
async def list_keys(request: Request, revoked: bool = False) -> dict[str, Any]:
    """Every key: those declared in NANOROUTE_API_KEYS and the config (read-only), then those the admin API
    made, oldest first; `revoked=true` adds the revoked ones."""
    gw = gateway(request)
    records = await gw.registry.records()  # read from the store first, so that every key below is current
    declared = [_declared_view(gw, p) for p in _principals(gw) if p.source != "admin"]
    made = [_admin_view(r) for r in records if revoked or r.revoked_at is None]
    return {"object": "list", "data": [*declared, *made]}


@router.get("/keys/{key_id}", responses=_errors(404, 503))
async def show_key(key_id: str, request: Request) -> dict[str, Any]:
    """One key, with its `usage` now: per scope (its own limits and budget, then its team's)."""
    gw = gateway(request)
    found = gw.registry.by_id(key_id)
    if found is not None and found.source != "admin":
        view = _declared_view(gw, found)
    else:
        view = _admin_view(await gw.registry.record(key_id))
        found = gw.registry.by_id(key_id)  # None once revoked: nothing limits it any more
    scopes = found.scopes if found is not None else ()
    return {**view, "usage": await _usage(gw, scopes)}


@router.patch("/keys/{key_id}", responses=_errors(400, 403, 404, 503))
async def update_key(key_id: str, request: Request) -> dict[str, Any]:
    """Change a key the admin API made (`KeyUpdate`): the fields sent replace its own; null clears one."""
    gw = gateway(request)
    _check_writable(gw, key_id)
    change = _body(KeyUpdate, await request.body())
    return _admin_view(await gw.registry.update(key_id, change))


@router.delete("/keys/{key_id}", responses=_errors(403, 404, 503))
async def revoke_key(key_id: str, request: Request) -> dict[str, Any]:
    """Revoke a key the admin API made: refused by every process within a second; its record stays."""
    gw = gateway(request)
    _check_writable(gw, key_id)
    return _admin_view(await gw.registry.revoke(key_id))


# -- teams and spend -----------------------------------------------------------------------------------------


@router.get("/teams", responses=_errors(503))
async def teams(request: Request) -> dict[str, Any]:
    """The config's teams: their limits, budget and metadata, their keys, and their usage now."""
    gw = gateway(request)
    await gw.registry.sync()
    declared = gw.state.table.config.teams
    principals = _principals(gw)
    scopes = {name: scope("team", name, t.limits, t.budget) for name, t in declared.items()}
    usage = await _usage(gw, tuple(s for s in scopes.values() if s is not None))
    by_scope = {u["scope"]: u for u in usage}
    data = [{"name": name, **team.model_dump(mode="json"),
             "keys": [p.id for p in principals if p.team == name],
             "usage": by_scope.get(s.id) if (s := scopes[name]) is not None else None}
            for name, team in declared.items()]
    return {"object": "list", "data": data}


@router.get("/spend", responses=_errors(400, 503))
async def spend(request: Request, group_by: str | None = None, since: str | None = None,
                until: str | None = None) -> dict[str, Any]:
    """The ledger from day `since` to day `until` (UTC, both included; default: the last 30 days), summed by
    `group_by` (any of key, team, model, day; default all), dearest first."""
    dims = _dimensions(group_by)
    last = _date("until", until) if until is not None else dt.datetime.now(dt.UTC).date()
    first = _date("since", since) if since is not None else last - dt.timedelta(days=SPEND_DAYS - 1)
    if first > last:
        raise InvalidRequest(f"since ({first}) is after until ({last})", param="since")
    gw = gateway(request)
    entries = await gw.governor.counters.spend(first.isoformat(), last.isoformat())
    names = {r.id: r.name for r in await gw.registry.records()} | {p.id: p.name for p in _principals(gw)}
    rows = ledger_sums(entries, dims)
    data = [{**row, "name": names.get(str(row["key"]))} if "key" in dims else row for row in rows]
    return {"object": "list", "since": first.isoformat(), "until": last.isoformat(), "group_by": list(dims),
            "data": data, "total": ledger_sums(entries, ())[0]}


def _dimensions(group_by: str | None) -> tuple[str, ...]:
    if group_by is None:
        return DIMENSIONS
    dims = tuple(d.strip() for d in group_by.split(",") if d.strip())
    bad = [d for d in dims if d not in DIMENSIONS]
    if bad or len(set(dims)) != len(dims):
        raise InvalidRequest(f"group_by takes distinct dimensions among {', '.join(DIMENSIONS)}, comma-separated; "
                             f"not '{group_by[:64]}'", param="group_by")
    return dims


def _date(param: str, text: str) -> dt.date:
    try:
        if DATE.fullmatch(text):
            return dt.date.fromisoformat(text)
    except ValueError:
        pass
    raise InvalidRequest(f"{param} must be a date, YYYY-MM-DD; not '{text[:64]}'", param=param)


def ledger_sums(entries: Sequence[LedgerEntry], dims: Sequence[str]) -> list[dict[str, Any]]:
    """The entries summed per value of `dims`, dearest first (then by the dimensions); no `dims`: one row,
    the total."""
    sums: dict[tuple[str, ...], list[int]] = {} if dims else {(): [0, 0, 0, 0]}
    for e in entries:
        acc = sums.setdefault(tuple(getattr(e, d) for d in dims), [0, 0, 0, 0])
        acc[0] += e.requests
        acc[1] += e.prompt_tokens
        acc[2] += e.completion_tokens
        acc[3] += e.cost_nusd
    ordered = sorted(sums.items(), key=lambda item: (-item[1][3], item[0]))
    return [{**dict(zip(dims, values, strict=True)), "requests": n, "prompt_tokens": prompt,
             "completion_tokens": completion, "cost_usd": cost / NANO}
            for values, (n, prompt, completion, cost) in ordered]


# -- helpers -------------------------------------------------------------------------------------------------


def _body(model: type[M], raw: bytes) -> M:
    """The body as `model`; InvalidRequest naming the first field that is wrong."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        if first["type"] == "missing":
            message = f"Missing field '{field}'"
        elif first["type"] == "extra_forbidden":
            message = f"Unknown field '{field}'"
        else:
            message = f"Invalid '{field}': {first['msg']}"
        raise InvalidRequest(message, param=field) from None


def _check_writable(gw: GatewayView, key_id: str) -> None:
    found = gw.registry.by_id(key_id)
    if found is None or found.source == "admin":
        return
    where = ("NANOROUTE_API_KEYS" if found.source == "env"
             else f"the config file ({gw.state.table.source}), under keys:")
    raise PermissionDenied(f"The key '{key_id}' is declared in {where}: change it there, not through the admin API",
                           param="id", code="key_read_only")


def _principals(gw: GatewayView) -> list[Principal]:
    """Every live key, by id."""
    registry = gw.registry
    return [p for key_id in sorted(registry.ids) if (p := registry.by_id(key_id)) is not None]


def _admin_view(record: KeyRecord) -> dict[str, Any]:
    return {**record.public(), "source": "admin", "read_only": False}


def _declared_view(gw: GatewayView, p: Principal) -> dict[str, Any]:
    """A key of NANOROUTE_API_KEYS or the config, in the shape of an admin key's record."""
    spec = gw.state.table.config.keys.get(p.id) or schema.Key()
    access = p.access
    return {
        "id": p.id, "name": p.name, "team": p.team,
        "models": None if access is None or access.models is None else sorted(access.models),
        "policies": None if access is None or access.policies is None else sorted(access.policies),
        **spec.model_dump(mode="json", include={"limits", "budget", "expires_at", "metadata"}),
        "created_at": None, "revoked_at": None, "source": p.source, "read_only": True,
    }


async def _usage(gw: GatewayView, scopes: Sequence[Scope]) -> list[dict[str, Any]]:
    """Each scope's counts now, in one round trip to the store."""
    if not scopes:
        return []
    now = time.time()
    found = await gw.governor.counters.usage(scopes, now)
    return [_scope_usage(s, u, now) for s, u in zip(scopes, found, strict=True)]


def _scope_usage(s: Scope, u: ScopeUsage, now: float) -> dict[str, Any]:
    budget = s.budget_nusd
    return {
        "scope": s.id,
        "limits": {"rpm": s.rpm, "tpm": s.tpm, "max_in_flight": s.max_in_flight},
        "requests_per_minute": round(u.requests, 3),
        "tokens_per_minute": round(u.tokens, 3),
        "in_flight": u.in_flight,
        "period": s.period,
        "period_id": period_id(s.period, now),
        "spent_usd": u.spent_nusd / NANO,
        "reserved_usd": u.reserved_nusd / NANO,
        "budget_usd": None if budget is None else budget / NANO,
        "remaining_usd": None if budget is None else max(0, budget - u.spent_nusd - u.reserved_nusd) / NANO,
    }
