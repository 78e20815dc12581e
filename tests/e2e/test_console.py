"""The console in a real browser: Debian's headless Chromium, driven by Playwright, against a running gateway
in front of fake upstreams (a hosted model, a vLLM replica with an adapter).

An operator logs in, every page shows live figures from the traffic sent first, the explain playground
answers, and promote moves the rollout, which the page and the admin API then show. On every page axe-core
(tests/e2e/vendor/, scripts/console-assets.sh) finds no serious or critical accessibility violation, and
Chromium reports no Content-Security-Policy violation (nothing inline is needed). Each page's screenshot is
written under the test's folder, and, with NANOROUTE_SCREENSHOTS=DIR, to DIR (docs/console/ is made so).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.api.console_stack import ADMIN_KEY, CLIENT_KEY, Stack, start
from tests.fakes.debian import program
from tests.fakes.servers import Servers

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
PAGES = {"overview": "/ui", "policies": "/ui/policies", "rollouts": "/ui/rollouts", "replicas": "/ui/replicas",
         "health": "/ui/health"}
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    binary = program("chromium", "chromium")
    with sync_playwright() as p:
        # --no-sandbox: the sandbox needs user namespaces, which containers (and root) often lack.
        b = p.chromium.launch(executable_path=binary, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


class Shots:
    """Screenshots: under the test's folder always, and in NANOROUTE_SCREENSHOTS when it is set."""

    def __init__(self, tmp_path: Path) -> None:
        self.dirs = [tmp_path / "screenshots"]
        if os.environ.get("NANOROUTE_SCREENSHOTS"):
            self.dirs.append(Path(os.environ["NANOROUTE_SCREENSHOTS"]))
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)

    def take(self, page: Page, name: str) -> None:
        shot = page.screenshot(full_page=True, animations="disabled")
        for d in self.dirs:
            (d / f"console-{name}.png").write_bytes(shot)


def accessibility_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now. Injected through the DevTools
    protocol (page.evaluate), which the page's Content-Security-Policy does not apply to."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    found: list[dict[str, Any]] = page.evaluate("""async () => {
        const result = await axe.run(document, {resultTypes: ["violations"]});
        return result.violations.filter(v => v.impact === "serious" || v.impact === "critical")
            .map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(" "))}));
    }""")
    return found


def traffic(stack: Stack, seconds: float) -> None:
    """Requests of every task for `seconds`, a few a step, with some the gateway refuses (a body without
    messages: a client error), so that every chart has a line."""
    deadline = time.monotonic() + seconds
    with openai.OpenAI(base_url=stack.base, api_key=CLIENT_KEY, max_retries=0, timeout=10) as client, \
            httpx.Client(timeout=10) as http:
        i = 0
        while time.monotonic() < deadline:
            for task in ("triage", "support", "support", None):
                client.chat.completions.create(
                    model="small", messages=[{"role": "user", "content": f"ticket {i}"}],
                    extra_headers={"X-Nanoroute-Task": task} if task else None)
            if i % 3 == 0:
                http.post(f"{stack.base}/chat/completions", json={"model": "small"},
                          headers={"Authorization": f"Bearer {CLIENT_KEY}"})
            i += 1
            time.sleep(0.05)


def test_an_operator_sees_every_page_live_and_promotes_a_rollout(browser: Browser, servers: Servers,
                                                                  tmp_path: Path) -> None:
    stack = start(servers, tmp_path)
    stack.hosted.delay_s = 0.03  # the hosted model is the slower one, as it is in life
    # The adapter serves a quarter of its task already (so the split has two lines); the operator promotes it on.
    pinned = httpx.post(f"{stack.root}/admin/rollouts/triage", json={"action": "pin", "stage": "canary", "step": 0},
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert pinned.status_code == 200
    traffic(stack, 4.0)
    more = threading.Thread(target=traffic, args=(stack, 8.0), daemon=True)  # figures that move while we look
    more.start()
    shots = Shots(tmp_path)
    context = browser.new_context(viewport={"width": 1360, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    try:
        page.goto(stack.root + "/ui")  # not logged in: the login form
        page.wait_for_url("**/ui/login")
        shots.take(page, "login")
        assert accessibility_violations(page) == []
        page.fill("#key", ADMIN_KEY)
        page.click("form.login button[type=submit]")
        page.wait_for_url(stack.root + "/ui")

        # Overview: the charts are drawn from /ui/data/overview, the tables from the same series.
        # (Waits use locators: a predicate of wait_for_function is evaluated as a string, which the page's
        # Content-Security-Policy refuses.)
        page.locator("#charts figure canvas").nth(5).wait_for()
        expect(page.locator("#live table").first).to_contain_text("small")
        captions = page.locator("#charts figcaption").all_text_contents()
        assert {"Requests per second, by model", "Traffic split of policy support (%)"} <= set(captions)
        assert "support-team" in page.locator("#live").text_content()  # spend today, by team
        page.wait_for_timeout(1500)  # a few more points, and htmx's poll of the tables
        shots.take(page, "overview")
        assert accessibility_violations(page) == []

        # Policies: the explain playground, answered in place by htmx.
        page.click("nav >> text=Policies")
        page.fill("#task", "support")
        page.click("form.explain button[type=submit]")
        page.wait_for_selector("#explained .decision")
        assert "chooses small" in page.locator("#explained .decision").text_content()
        assert page.url.endswith("/ui/policies")  # no navigation: htmx swapped the answer in
        shots.take(page, "policies")
        assert accessibility_violations(page) == []

        # Rollouts: the adapter's live score in its canary step, then promoted to the next step.
        page.click("nav >> text=Rollouts")
        expect(page.locator("[data-stage]")).to_have_text("canary step 1 of 2")
        expect(page.locator(".facts")).to_contain_text("95%")  # the live score and its confidence bounds
        shots.take(page, "rollouts")
        assert accessibility_violations(page) == []
        page.click("button[value=promote]")
        expect(page.locator("[data-stage]")).to_have_text("canary step 2 of 2")
        expect(page.locator("section.rollout table tbody tr")).to_have_count(2)  # two moves, newest first
        [found] = httpx.get(f"{stack.root}/admin/rollouts", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
                            ).json()["rollouts"]
        assert (found["stage"], found["canary_step"], found["share"]) == ("canary", 1, 0.5)

        # Adapters and replicas: the adapter the gateway loaded, the replica's load as vLLM reports it.
        stack.vllm.running, stack.vllm.waiting, stack.vllm.kv_cache = 3, 1, 0.37
        page.click("nav >> text=Adapters and replicas")
        expect(page.locator("#live")).to_contain_text("37.0%")
        assert "loaded" in page.locator("#live").text_content()
        shots.take(page, "replicas")
        assert accessibility_violations(page) == []

        page.click("nav >> text=Health")
        page.wait_for_selector("text=The last reload succeeded.")
        shots.take(page, "health")
        assert accessibility_violations(page) == []

        page.click("text=Log out")
        page.wait_for_url("**/ui/login")
        page.goto(stack.root + "/ui/rollouts")
        page.wait_for_url("**/ui/login")  # the session is over
    finally:
        more.join(15)
        context.close()
    assert problems == [], problems  # a blocked inline script or style would show here
