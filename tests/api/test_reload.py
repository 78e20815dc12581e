"""Live config edits through a running gateway: the file watcher, `POST /admin/reload`, and requests in flight."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.support import CHAT, wait_until
from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream

ADMIN_KEY = "adm-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
UNKNOWN_KEY = "unknown key; check its spelling against docs/configuration.md"


def config(a: FakeUpstream, b: FakeUpstream, candidates: str, policy_extra: str = "") -> str:
    """Backends a and b serving models ma and mb; one policy `p` (on line 8) over `candidates`."""
    return f"""\
backends:
  a: {{type: openai, url: {a.url}}}
  b: {{type: openai, url: {b.url}}}
models:
  ma: {{backend: a}}
  mb: {{backend: b}}
policies:
  - {{name: p, candidates: [{candidates}]{policy_extra}}}
"""


def replace(path: Path, text: str) -> None:
    """Rewrite a config file the way editors and ConfigMap updates do: a new file moved into place."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def model_of(http: httpx.Client, base: str) -> str:
    resp = http.post(f"{base}/chat/completions", json=CHAT)
    assert resp.status_code == 200
    return resp.headers["x-nanoroute-model"]


def admin_config(http: httpx.Client, base: str) -> dict[str, Any]:
    resp = http.get(f"{base.removesuffix('/v1')}/admin/config", headers=ADMIN)
    assert resp.status_code == 200
    data: dict[str, Any] = resp.json()
    return data


def metric(http: httpx.Client, base: str, name: str, labels: str) -> float:
    text = http.get(f"{base.removesuffix('/v1')}/metrics").text
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_the_watcher_applies_good_edits_and_keeps_serving_through_bad_ones(
    servers: Servers, http: httpx.Client
) -> None:
    a, b = servers.upstream("a"), servers.upstream("b")
    base = servers.gateway(config(a, b, "ma, mb"), reload_interval_s=0.2, admin_key=ADMIN_KEY)
    path = servers.app_of().settings.config_path
    first = admin_config(http, base)["version"]
    assert [model_of(http, base) for _ in range(3)] == ["ma"] * 3
    assert (len(a.seen), len(b.seen)) == (3, 0)

    replace(path, config(a, b, "mb, ma"))
    wait_until(lambda: model_of(http, base) == "mb", timeout=5)
    moved = len(a.seen)
    assert [model_of(http, base) for _ in range(3)] == ["mb"] * 3
    assert len(a.seen) == moved
    assert len(b.seen) >= 4
    second = admin_config(http, base)
    assert second["version"] != first
    assert second["last_error"] is None
    assert metric(http, base, "nanoroute_config_reloads_total", 'result="success"') == 1
    assert metric(http, base, "nanoroute_config_info", f'version="{first}"') == 0
    assert metric(http, base, "nanoroute_config_info", f'version="{second["version"]}"') == 1

    replace(path, config(a, b, "ma", ", colour: red"))
    wait_until(lambda: admin_config(http, base)["last_error"] is not None, timeout=5)
    shown = admin_config(http, base)
    assert shown["version"] == second["version"]
    err = shown["last_error"]
    assert err["source"] == str(path)
    assert err["problems"] == [{"path": "policies[0].colour (line 8)", "problem": UNKNOWN_KEY}]
    assert len(err["version"]) == 12 and err["version"] != second["version"]
    assert [model_of(http, base) for _ in range(3)] == ["mb"] * 3
    assert len(a.seen) == moved
    assert metric(http, base, "nanoroute_config_reloads_total", 'result="error"') == 1

    replace(path, config(a, b, "ma"))  # fixed: the watcher applies it and clears the error
    wait_until(lambda: model_of(http, base) == "ma", timeout=5)
    assert admin_config(http, base)["last_error"] is None
    assert metric(http, base, "nanoroute_config_reloads_total", 'result="success"') == 2
    assert metric(http, base, "nanoroute_config_reloads_total", 'result="error"') == 1


def test_admin_reload_refuses_a_bad_file_and_applies_a_good_one(servers: Servers, http: httpx.Client) -> None:
    a, b = servers.upstream("a"), servers.upstream("b")
    base = servers.gateway(config(a, b, "ma, mb"), reload_interval_s=0, admin_key=ADMIN_KEY)  # no watcher: no race
    app = servers.app_of()
    path = app.settings.config_path
    reload_url = f"{base.removesuffix('/v1')}/admin/reload"
    shown = admin_config(http, base)
    first = shown["version"]
    backend_b = app.state.backends["b"]

    replace(path, config(a, b, "ma, mb", ", colour: red"))
    resp = http.post(reload_url, headers=ADMIN)
    assert resp.status_code == 422
    data = resp.json()
    assert data["problems"] == [{"path": "policies[0].colour (line 8)", "problem": UNKNOWN_KEY}]
    assert data["version"] == first
    assert data["error"] == {"message": data["error"]["message"], "type": "invalid_request_error", "param": None,
                             "code": "invalid_config"}
    assert str(path) in data["error"]["message"]
    assert admin_config(http, base)["last_error"]["problems"] == data["problems"]
    assert model_of(http, base) == "ma"

    replace(path, config(a, b, "mc, mb"))  # a bad reference fails too, at the resolve phase
    resp = http.post(reload_url, headers=ADMIN)
    assert resp.status_code == 422
    assert resp.json()["problems"][0]["path"] == "policies[0].candidates[0] (line 8)"
    assert resp.json()["problems"][0]["problem"].startswith("unknown model 'mc'")
    assert metric(http, base, "nanoroute_config_reloads_total", 'result="error"') == 2

    replace(path, config(a, b, "mb, ma").replace(f"url: {a.url}}}", f"url: {a.url}, max_connections: 8}}"))
    resp = http.post(reload_url, headers=ADMIN)
    assert resp.status_code == 200
    second = resp.json()
    assert second["reloaded"] is True
    assert second["version"] != first
    now = admin_config(http, base)
    assert (now["version"], now["last_error"]) == (second["version"], None)
    assert now["loaded_at"] > shown["loaded_at"]
    assert model_of(http, base) == "mb"
    assert app.state.backends["b"] is backend_b  # unchanged settings keep their connection pool
    assert metric(http, base, "nanoroute_config_reloads_total", 'result="success"') == 1

    resp = http.post(reload_url, headers=ADMIN)  # the same bytes again: nothing to do
    assert (resp.status_code, resp.json()) == (200, {"reloaded": False, "version": second["version"]})
    assert metric(http, base, "nanoroute_config_reloads_total", 'result="success"') == 1


def test_an_unreadable_file_is_an_error_that_changes_nothing(servers: Servers, http: httpx.Client) -> None:
    a, b = servers.upstream("a"), servers.upstream("b")
    base = servers.gateway(config(a, b, "ma, mb"), reload_interval_s=0, admin_key=ADMIN_KEY)
    path = servers.app_of().settings.config_path
    first = admin_config(http, base)["version"]
    path.unlink()
    resp = http.post(f"{base.removesuffix('/v1')}/admin/reload", headers=ADMIN)
    assert resp.status_code == 422
    assert resp.json()["problems"][0]["problem"].startswith("cannot read the file")
    assert resp.json()["version"] == first
    assert model_of(http, base) == "ma"


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_in_flight_finishes_on_the_version_it_started_with(
    servers: Servers, http: httpx.Client, stream: bool
) -> None:
    a, b = servers.upstream("a", delay_s=1.0), servers.upstream("b")
    base = servers.gateway(config(a, b, "ma, mb"), reload_interval_s=0, admin_key=ADMIN_KEY)
    path = servers.app_of().settings.config_path

    def slow_request() -> httpx.Response:
        with httpx.Client(timeout=10) as own:
            resp = own.post(f"{base}/chat/completions", json={**CHAT, "stream": stream})
            resp.read()
            return resp

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(slow_request)
        wait_until(lambda: a.open_requests == 1, timeout=5)
        # The new version has no backend `a` and no model `ma` at all.
        replace(path, config(a, b, "mb").replace(f"  a: {{type: openai, url: {a.url}}}\n", "")
                .replace("  ma: {backend: a}\n", ""))
        resp = http.post(f"{base.removesuffix('/v1')}/admin/reload", headers=ADMIN)
        assert (resp.status_code, resp.json()["reloaded"]) == (200, True)
        assert model_of(http, base) == "mb"
        assert a.open_requests == 1  # the reload and the new request did not wait for it
        slow = pending.result(timeout=10)
    assert slow.status_code == 200
    assert slow.headers["x-nanoroute-model"] == "ma"
    assert slow.headers["x-nanoroute-policy"] == "p"
    if stream:
        assert slow.text.rstrip().endswith("data: [DONE]")
    else:
        assert slow.json()["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    assert (len(a.seen), a.cancelled) == (1, 0)
