"""`/ui`: the console's pages and actions, one router, mounted only when NANOROUTE_ADMIN_KEY is set.

Every page but the login form needs a session (`session.py`); every POST needs its CSRF token and a
same-origin `Origin`. A page asked by htmx (`HX-Request`) is answered with its `live` block only, which the
page polls every step; the overview's charts read `/ui/data/overview`. Each answer carries a strict
Content-Security-Policy (scripts and styles from /ui/static only: no inline script, no CDN), refuses to be
framed and is not cached, but for the static files, whose URLs carry their hash.

Actions call what the admin API calls: `Rollouts.act` (POST /admin/rollouts/{policy}), `explanation`
(POST /admin/explain), `Reloader.reload` (POST /admin/reload).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.api.admin import explanation
from gateway.console import figures
from gateway.console.session import COOKIE, PATH, Session, same_origin
from gateway.console.state import Console, ConsoleView, context
from gateway.errors import (
    AuthenticationFailed,
    ConfigError,
    InvalidRequest,
    NanorouteError,
    NotFound,
    StorageUnavailable,
)

log = logging.getLogger("nanoroute")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"content-security-policy": CSP, "x-frame-options": "DENY", "x-content-type-options": "nosniff",
           "referrer-policy": "same-origin", "cache-control": "no-store", "vary": "HX-Request, Cookie"}
MAX_FORM_BYTES = 1 << 20
ACTIONS = ("promote", "hold", "rollback", "stop", "resume")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """After the gateway's own start (FastAPI nests an included router's lifespan inside the app's)."""
    console = Console(app.state.gateway)
    app.state.console = console
    console.start()
    try:
        yield
    finally:
        await console.stop()


router = APIRouter(prefix=PATH, include_in_schema=False, lifespan=lifespan)


def _console(request: Request) -> Console:
    c: Console = request.app.state.console
    return c


def _secured(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def _https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


def _render(request: Request, name: str, status: int = 200, **values: Any) -> Response:
    """The page `name`, or only its `live` block for htmx's polls."""
    c = _console(request)
    template = c.templates.get_template(name)
    values = context(c, page=name.removesuffix(".html"), **values)
    if request.headers.get("hx-request") == "true" and "live" in template.blocks:
        html = "".join(template.blocks["live"](template.new_context(values)))
    else:
        html = template.render(values)
    return _secured(HTMLResponse(html, status))


def _to_login(request: Request) -> Response:
    if request.headers.get("hx-request") == "true":  # htmx follows this header rather than swapping a login form
        return _secured(Response(status_code=401, headers={"hx-redirect": f"{PATH}/login"}))
    return _secured(RedirectResponse(f"{PATH}/login", 303))


async def _session(request: Request) -> Session | None:
    return await _console(request).sessions.check(request.cookies.get(COOKIE))


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form (what browsers and htmx send), its first value per name; {} for anything else."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


Page = Callable[[Request, Session], Awaitable[Response]]
Action = Callable[[Request, Session, dict[str, str]], Awaitable[Response]]


def _page(handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """A page: to the login form without a session (FastAPI sees only `request`: the wrapper's own signature)."""

    async def page(request: Request) -> Response:
        session = await _session(request)
        if session is None:
            return _to_login(request)
        return await handler(request, session)

    page.__name__ = page.__qualname__ = handler.__name__
    return page


def _acting(handler: Action) -> Callable[[Request], Awaitable[Response]]:
    """An action: a POST from a session, of the console's own origin, with the session's CSRF token; the
    handler gets its form."""

    async def act(request: Request) -> Response:
        session = await _session(request)
        if session is None:
            return _to_login(request)
        h = request.headers
        form = await _form(request)
        if not same_origin(h.get("origin"), h.get("referer"), h.get("host")) or \
                not _console(request).sessions.csrf_ok(session, h.get("x-csrf-token") or form.get("csrf")):
            return _secured(HTMLResponse("Forbidden: this action did not come from the console's own page.", 403))
        return await handler(request, session, form)

    act.__name__ = act.__qualname__ = handler.__name__
    return act


# -- login ---------------------------------------------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request) -> Response:
    if await _session(request) is not None:
        return _secured(RedirectResponse(PATH, 303))
    return _render(request, "login.html", session=None, error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    c = _console(request)
    h = request.headers
    if not same_origin(h.get("origin"), h.get("referer"), h.get("host")):
        return _render(request, "login.html", 403, session=None, error="This form must be sent from its own page.")
    address = request.client.host if request.client is not None else "-"
    now = time.monotonic()
    wait = c.throttle.wait_s(address, now)
    if wait > 0:
        answer = _render(request, "login.html", 429, session=None,
                         error=f"Too many failed attempts: try again in {int(wait) + 1} s.")
        answer.headers["retry-after"] = str(int(wait) + 1)
        return answer
    key = (await _form(request)).get("key", "")
    try:
        c.gw.auth.check_admin(key.encode() if key else None)
    except AuthenticationFailed:
        c.throttle.failed(address, now)
        log.warning("console: failed login from %s", address)
        return _render(request, "login.html", 401, session=None, error="That is not the admin key.")
    _, cookie = c.sessions.issue()
    answer = _secured(RedirectResponse(PATH, 303))
    answer.set_cookie(COOKIE, cookie, max_age=c.sessions.session_s, path=PATH, secure=_https(request),
                      httponly=True, samesite="strict")
    return answer


@router.post("/logout")
@_acting
async def logout(request: Request, session: Session, _: dict[str, str]) -> Response:
    await _console(request).sessions.end(session)
    answer = _secured(RedirectResponse(f"{PATH}/login", 303))
    answer.delete_cookie(COOKIE, path=PATH, secure=_https(request), httponly=True, samesite="strict")
    return answer


# -- pages ---------------------------------------------------------------------------------------------------


@router.get("")
@_page
async def overview(request: Request, session: Session) -> Response:
    c = _console(request)
    try:
        spend = await figures.spend_today(c.gw)
    except StorageUnavailable:
        spend = None
    return _render(request, "overview.html", session=session, overview=await c.overview(), spend=spend,
                   metrics_on=c.metrics_on)


@router.get("/data/overview")
async def overview_data(request: Request) -> Response:
    """The overview's charts, as JSON, for console.js."""
    if await _session(request) is None:
        return _secured(Response(status_code=401))
    data = (await _console(request).overview()).data()
    return _secured(Response(orjson.dumps(data), media_type="application/json"))


@router.get("/policies")
@_page
async def policies(request: Request, session: Session) -> Response:
    return _policies_page(request, session)


def _policies_page(request: Request, session: Session, status: int = 200, **values: Any) -> Response:
    table = _console(request).gw.state.table
    example = {"model": table.client_models[0] if table.client_models else "gpt-4o-mini",
               "messages": [{"role": "user", "content": "Where is my order?"}]}
    values.setdefault("form", {"body": orjson.dumps(example, option=orjson.OPT_INDENT_2).decode(), "task": "",
                               "key": "", "pin": ""})
    return _render(request, "policies.html", status, session=session, policies=figures.policies(table),
                   explained=values.pop("explained", None), error=values.pop("error", None), **values)


@router.post("/policies/explain")
@_acting
async def explain(request: Request, session: Session, form: dict[str, str]) -> Response:
    gw: ConsoleView = _console(request).gw
    fields = {name: form.get(name, "").strip() for name in ("body", "task", "key", "pin")}
    try:
        explained = explanation(gw, fields["body"].encode(), task=fields["task"] or None,
                                key_id=fields["key"] or None, pin=fields["pin"] or None)
    except NanorouteError as exc:
        return _policies_page(request, session, 400, form=fields, error=exc.message)
    return _policies_page(request, session, form=fields, explained=explained)


@router.get("/rollouts")
@_page
async def rollouts(request: Request, session: Session) -> Response:
    return _render(request, "rollouts.html", session=session, rollouts=figures.rollouts(_console(request).gw),
                   error=None)


@router.post("/rollouts")
@_acting
async def rollout_action(request: Request, session: Session, form: dict[str, str]) -> Response:
    """Promote, hold, roll back, stop or resume the form's `policy`: `Rollouts.act`, as
    `POST /admin/rollouts/{policy}` calls it."""
    gw = _console(request).gw
    policy = form.get("policy", "")
    try:
        _act(gw, policy, form.get("action", ""))
    except NanorouteError as exc:
        return _render(request, "rollouts.html", exc.status, session=session, rollouts=figures.rollouts(gw),
                       error=exc.message)
    log.info("console: rollout of policy '%s': %s", policy, form.get("action"))
    return _secured(RedirectResponse(f"{PATH}/rollouts", 303))


def _act(gw: ConsoleView, policy: str, action: str) -> None:
    if action not in ACTIONS:
        raise InvalidRequest(f"The action must be one of {', '.join(ACTIONS)}")
    found = next((r for r in figures.rollouts(gw) if r["policy"] == policy), None)
    if found is None:
        raise NotFound(f"Policy '{policy[:128]}' has no rollout")
    if action == "promote":
        target = found["promote"]
        if target is None:
            raise InvalidRequest(f"A rollout in {found['stage']} has no next stage" +
                                 (": resume it first" if found["stage"] == "stopped" else ""))
        gw.rollouts.act(policy, "pin", target["stage"], target["step"])
    elif action == "hold":
        if found["stage"] == "stopped":
            raise InvalidRequest("A stopped rollout holds already: resume it to move it again")
        gw.rollouts.act(policy, "pin", found["stage"], found["canary_step"] or 0)
    elif action == "rollback":
        gw.rollouts.act(policy, "pin", "shadow", 0)
    else:
        gw.rollouts.act(policy, action)


@router.get("/replicas")
@_page
async def replicas(request: Request, session: Session) -> Response:
    state = _console(request).gw.state
    models = [{"model": m.name, "backend": m.backend, "adapter": m.upstream_name, "path": m.adapter_path,
               "base": m.adapter_base} for m in state.table.models.values() if m.adapter_path is not None]
    return _render(request, "replicas.html", session=session, backends=figures.replicas(state), adapters=models)


@router.get("/health")
@_page
async def health(request: Request, session: Session) -> Response:
    return _health_page(request, session)


def _health_page(request: Request, session: Session, status: int = 200, **values: Any) -> Response:
    gw = _console(request).gw
    table = gw.state.table
    err = gw.reloader.last_error
    config = {"source": table.source, "version": table.version, "loaded_at": table.loaded_at,
              "warnings": list(table.warnings)}
    last_error = None if err is None else {"source": err.source, "version": err.version, "at": err.at,
                                           "problems": list(err.problems)}
    return _render(request, "health.html", status, session=session, health=figures.health(gw.state), config=config,
                   last_error=last_error, reloaded=values.pop("reloaded", None), **values)


@router.post("/reload")
@_acting
async def reload(request: Request, session: Session, _: dict[str, str]) -> Response:
    """Read the config file again now: `Reloader.reload`, as `POST /admin/reload` calls it."""
    try:
        table = await _console(request).gw.reloader.reload("the console")
    except ConfigError as exc:
        return _health_page(request, session, 422, reloaded=f"The config was not reloaded: {exc.message}")
    return _health_page(request, session, reloaded="Reloaded." if table is not None else "The config is unchanged.")


# -- static files --------------------------------------------------------------------------------------------


@router.get("/static/{name:path}")
async def static(name: str, request: Request) -> Response:
    asset = _console(request).static.get(name)
    if asset is None:
        return _secured(Response("Not found", 404, media_type="text/plain"))
    answer = _secured(Response(asset.body, media_type=asset.media_type))
    answer.headers["cache-control"] = "public, max-age=31536000, immutable"
    return answer
