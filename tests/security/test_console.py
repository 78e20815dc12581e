"""Attack: use the operators' console without the admin key, from another site, or through what it shows.

The console (`/ui`, docs/console.md) logs in with the admin key and keeps a session cookie: guessing the key
is slowed, the cookie is strict and holds no secret, forged and logged-out cookies are refused, every action
needs the session's CSRF token and the console's own origin, pages load nothing inline and refuse framing,
and what clients and the config say is shown as text.
"""

from __future__ import annotations

import json
import re

import httpx

from tests.api.console_stack import ADMIN_KEY, AS_ADMIN, PAGES, Operator, Stack, rollout


def stage(stack: Stack) -> str:
    return str(rollout(stack)["stage"])


def test_login_sets_a_strict_cookie_that_holds_no_secret(stack: Stack) -> None:
    with Operator(stack.root) as op:
        refused = op.login("not-the-admin-key-0000")
        assert refused.status_code == 401 and "not the admin key" in refused.text
        assert "set-cookie" not in refused.headers
        answer = op.login()
        assert (answer.status_code, answer.headers["location"]) == (303, "/ui")
        cookie = answer.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "path", "max-age", "samesite"} <= attributes and "secure" not in attributes
        assert "samesite=strict" in cookie.lower()
        assert "Path=/ui" in cookie and ADMIN_KEY not in cookie
        for path in PAGES:
            page = op.http.get(path)
            assert page.status_code == 200, path
            assert ADMIN_KEY not in page.text
        # Behind a proxy that ends TLS, the cookie is only ever sent back over https.
        behind_tls = httpx.post(f"{stack.root}/ui/login", data={"key": ADMIN_KEY},
                                headers={"X-Forwarded-Proto": "https", "Origin": stack.root})
        assert "secure" in {p.strip().lower() for p in behind_tls.headers["set-cookie"].split(";")}


def test_the_login_page_tells_a_stranger_nothing_of_the_deployment(stack: Stack) -> None:
    version = httpx.get(f"{stack.root}/admin/config", headers=AS_ADMIN).json()["version"]
    page = httpx.get(f"{stack.root}/ui/login").text
    assert version not in page and "(process " not in page  # the config's version, the host and process
    with Operator(stack.root).logged_in() as op:
        assert version in op.http.get("/ui/health").text


def test_failed_logins_from_an_address_are_slowed(stack: Stack) -> None:
    with Operator(stack.root) as op:
        for _ in range(10):
            assert op.login("guess-0123456789abcdef").status_code == 401
        held = op.login()  # even the right key waits now: guessing is not rewarded
        assert held.status_code == 429 and int(held.headers["retry-after"]) > 0


def test_a_login_from_another_site_is_refused(stack: Stack) -> None:
    answer = httpx.post(f"{stack.root}/ui/login", data={"key": ADMIN_KEY}, headers={"Origin": "https://evil.example"})
    assert answer.status_code == 403 and "set-cookie" not in answer.headers


def test_every_answer_forbids_inline_scripts_and_framing(operator: Operator) -> None:
    for path in (*PAGES, "/ui/login", "/ui/data/overview"):
        h = operator.http.get(path).headers
        csp = h["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe" not in csp and "frame-ancestors 'none'" in csp, path
        assert (h["x-frame-options"], h["x-content-type-options"], h["cache-control"]) == ("DENY", "nosniff",
                                                                                          "no-store"), path
    js = operator.http.get("/ui/static/console.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert "immutable" in js.headers["cache-control"]
    page = operator.http.get("/ui").text
    assert re.search(r'src="/ui/static/vendor/htmx\.min\.js\?v=[0-9a-f]{12}"', page)
    for name in ("../routes.py", "..%2Froutes.py", "templates/base.html", "vendor/../../session.py"):
        assert operator.http.get(f"/ui/static/{name}").status_code == 404, name


def test_actions_need_the_sessions_token_and_the_consoles_origin(stack: Stack, operator: Operator) -> None:
    before = stage(stack)
    form = {"policy": "triage", "action": "promote"}
    assert operator.post("/ui/rollouts", form, csrf=None).status_code == 403
    assert operator.post("/ui/rollouts", form, csrf="0" * 64).status_code == 403
    assert operator.post("/ui/rollouts", form, origin="https://evil.example").status_code == 403
    with Operator(stack.root) as other:
        other.login()
        assert operator.post("/ui/rollouts", form, csrf=other.csrf()).status_code == 403  # another session's
    assert stage(stack) == before == "shadow"
    with httpx.Client(base_url=stack.root) as stranger:  # no session at all
        assert stranger.post("/ui/rollouts", data=form).status_code == 303
    assert stage(stack) == "shadow"


def test_what_clients_and_the_config_say_is_escaped(operator: Operator) -> None:
    script = "<script>alert(1)</script>"
    body = json.dumps({"model": script, "messages": [{"role": "user", "content": script}]})
    page = operator.post("/ui/policies/explain", {"body": body, "task": script, "key": script, "pin": script})
    assert script not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_logout_ends_the_session(stack: Stack, operator: Operator) -> None:
    cookie = operator.http.cookies["nanoroute_console"]
    assert operator.post("/ui/logout", {}).headers["location"] == "/ui/login"
    with httpx.Client(base_url=stack.root, cookies={"nanoroute_console": cookie}) as replay:  # kept by someone
        assert replay.get("/ui").status_code == 303
