"""The console (`/ui`) through a running gateway, over plain HTTP: who may see it, its session cookie,
CSRF-safe actions that call the admin API's code, escaping, and figures from real traffic."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.api.console_stack import ADMIN_KEY, AS_ADMIN, PAGES, Operator, Stack, rollout, start
from tests.api.support import MESSAGES, wait_until
from tests.fakes.servers import Servers, free_port


def test_the_console_is_off_without_an_admin_key(servers: Servers, tmp_path: Path) -> None:
    off = start(servers, tmp_path, admin_key=None)
    for path in (*PAGES, "/ui/login", "/ui/static/console.js"):
        assert httpx.get(off.root + path).status_code == 404, path
    assert httpx.post(off.root + "/ui/login", data={"key": ADMIN_KEY}).status_code == 404
    quiet = start(servers, tmp_path, console=False)  # the admin API without its console
    assert httpx.get(quiet.root + "/ui/login").status_code == 404
    assert httpx.get(quiet.root + "/admin/rollouts", headers=AS_ADMIN).status_code == 200


def test_every_page_needs_a_session(stack: Stack) -> None:
    with httpx.Client(base_url=stack.root) as http:
        for path in PAGES:
            answer = http.get(path)
            assert (answer.status_code, answer.headers["location"]) == (303, "/ui/login"), path
        polled = http.get("/ui/rollouts", headers={"HX-Request": "true"})
        assert (polled.status_code, polled.headers["hx-redirect"]) == (401, "/ui/login")
        assert http.get("/ui/data/overview").status_code == 401
        assert "form" in http.get("/ui/login").text
    with httpx.Client(base_url=stack.root, cookies={"nanoroute_console": "1999999999.abc.def"}) as forged:
        assert forged.get("/ui").status_code == 303


def test_promote_hold_roll_back_stop_and_resume_move_the_rollout(stack: Stack, operator: Operator) -> None:
    def act(action: str) -> dict[str, object]:
        answer = operator.post("/ui/rollouts", {"policy": "triage", "action": action})
        assert (answer.status_code, answer.headers["location"]) == (303, "/ui/rollouts"), answer.text
        return rollout(stack)

    assert {"stage": "canary", "canary_step": 0, "share": 0.25, "auto": False}.items() <= act("promote").items()
    assert act("promote")["canary_step"] == 1
    assert {"stage": "canary", "canary_step": 1}.items() <= act("hold").items()
    assert act("promote")["stage"] == "primary"
    page = operator.http.get("/ui/rollouts").text
    assert 'data-stage="primary"' in page and "pinned by an operator" in page
    assert 'value="promote"' not in page  # nothing above primary
    assert {"stage": "shadow", "share": 0.0}.items() <= act("rollback").items()
    assert act("stop")["stage"] == "stopped"
    refused = operator.post("/ui/rollouts", {"policy": "triage", "action": "promote"})
    assert refused.status_code == 400 and "resume it first" in refused.text
    assert {"stage": "shadow", "auto": True}.items() <= act("resume").items()
    assert operator.post("/ui/rollouts", {"policy": "nope", "action": "stop"}).status_code == 404
    assert operator.post("/ui/rollouts", {"policy": "triage", "action": "explode"}).status_code == 400
    moves = [m["why"] for m in rollout(stack)["history"]]  # type: ignore[union-attr]
    assert moves.count("pinned by an operator") == 5


def test_the_explain_playground_answers_as_the_admin_api_does(stack: Stack, operator: Operator) -> None:
    body = json.dumps({"model": "small", "messages": [{"role": "user", "content": "I was charged twice"}]})
    page = operator.post("/ui/policies/explain", {"body": body, "task": "support", "key": "", "pin": ""})
    assert page.status_code == 200
    admin = httpx.post(f"{stack.root}/admin/explain", content=body,
                       headers={**AS_ADMIN, "X-Nanoroute-Task": "support"}).json()
    assert (admin["policy"], admin["choice"]) == ("support", "small")
    assert "Policy <strong>support</strong> chooses <strong>small</strong> (cheapest)" in page.text, page.text
    assert "<th scope=\"row\">large</th>" in page.text  # the candidates, with their expected cost
    fragment = operator.post("/ui/policies/explain", {"body": "{not json", "task": ""})
    assert fragment.status_code == 400 and 'role="alert"' in fragment.text


def test_the_overview_shows_the_traffic_sent(stack: Stack, operator: Operator) -> None:
    stack.traffic(6)

    def counted() -> bool:
        live = operator.http.get("/ui", headers={"HX-Request": "true"}).text
        rows = re.findall(r'<th scope="row">(\w[\w-]*)</th><td class="n">[\d.,]+</td><td class="n">(\d+)</td>', live)
        # the ledger, by team and by key, is written off the request path
        return {model: int(n) for model, n in rows} == {"large": 6, "small": 12} and "support-team" in live

    wait_until(counted, timeout=10)
    live = operator.http.get("/ui", headers={"HX-Request": "true"}).text
    assert live.startswith('<div id="live"') and "<html" not in live  # htmx's poll gets the live block only
    assert "console-client" in live
    data = operator.http.get("/ui/data/overview").json()
    charts = {c["id"]: {s["label"]: s["values"] for s in c["series"]} for c in data["charts"]}
    assert data["scope"] == "pod" and len(data["t"]) >= 1
    assert sum(v or 0 for v in charts["rps"]["small"]) * data["step_s"] == pytest.approx(12)
    assert {"split-triage", "split-support", "split-default"} <= set(charts)
    assert "this pod" in operator.http.get("/ui").text


def test_replicas_and_health_show_what_the_gateway_sees(stack: Stack, operator: Operator) -> None:
    wait_until(lambda: "triage-lora" in stack.vllm.adapters, timeout=10)  # loaded by the poll
    stack.vllm.running, stack.vllm.kv_cache, stack.vllm.waiting = 3, 0.42, 2
    wait_until(lambda: "42.0%" in operator.http.get("/ui/replicas").text, timeout=10)
    page = operator.http.get("/ui/replicas").text
    assert re.search(r"<th scope=\"row\">triage-lora</th><td>triage-lora</td><td>loaded</td>", page), page
    health = operator.http.get("/ui/health").text
    assert "The last reload succeeded." in health
    assert re.search(r'<th scope="row">large</th>\s*<td><span class="badge good">closed</span>', health)


def test_a_failed_reload_shows_on_the_health_page(stack: Stack, operator: Operator, tmp_path: Path) -> None:
    [config] = tmp_path.glob("config-*.yaml")
    config.write_text(config.read_text().replace("candidates: [small]}", "candidates: [missing-model]}"))
    answer = operator.post("/ui/reload", {})
    assert answer.status_code == 422 and "The config was not reloaded" in answer.text
    assert "The last reload failed" in answer.text and "missing-model" in answer.text


def test_with_two_workers_every_worker_shows_the_whole_pod(servers: Servers, tmp_path: Path) -> None:
    """`nanoroute serve --workers 2`: a session made by one worker holds on the other, and each worker's
    overview counts both workers' requests (its series read the multiprocess metrics)."""
    up = servers.upstream()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"backends:\n  b: {{type: openai, url: {up.url}}}\nmodels:\n  small: {{backend: b}}\n")
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "NANOROUTE_ACCESS_LOG": "false",
           "NANOROUTE_ADMIN_KEY": ADMIN_KEY, "NANOROUTE_CONSOLE_STEP_S": "0.25",
           "NANOROUTE_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(cfg), "--port", str(port),
                             "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(root, proc), timeout=30)
        time.sleep(1.0)  # both workers up, or one may take every connection
        for _ in range(40):  # a connection each, so the kernel spreads them over both workers
            with httpx.Client() as c:
                assert c.post(f"{root}/v1/chat/completions", json={"model": "small", "messages": MESSAGES}
                              ).status_code == 200
        with Operator(root).logged_in() as op:
            cookie = op.http.cookies["nanoroute_console"]

        def every_answer_counts_40() -> bool:
            for _ in range(6):
                with httpx.Client(base_url=root, cookies={"nanoroute_console": cookie}) as c:
                    live = c.get("/ui", headers={"HX-Request": "true"})
                    assert live.status_code == 200  # whichever worker answered knows the session
                    if not re.search(r'<th scope="row">small</th><td class="n">[\d.]+</td><td class="n">40</td>',
                                     live.text):
                        return False
            return True

        wait_until(every_answer_counts_40, timeout=10)
        assert len(list((tmp_path / "metrics").glob("counter_*.db"))) == 2  # two workers did count
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]


def _ready(root: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    try:
        return httpx.get(f"{root}/readyz").status_code == 200
    except httpx.TransportError:
        return False
