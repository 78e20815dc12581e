"""Attack: switch a model off for everyone by sending it payloads that make it fail.

A model's circuit breaker used to open on five failures in a row, whoever caused them: five requests
whose payload made the upstream answer 500 took the model away from every other client (503). Now a
breaker about to open on failures that one client could cause first asks the model a small question of
its own, and opens only if that fails too; a real outage still opens it at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx
from aiohttp import web

from tests.api.observe import Scrape
from tests.api.support import wait_until
from tests.fakes.servers import Servers

KEYS = "attacker=attacker-key-0123456789,victim=victim-key-01234567"


@dataclass
class Picky:
    """An upstream that fails (500) on any request whose text holds `poison`, or on all while `down`."""

    down: bool = False
    bodies: list[dict[str, object]] = field(default_factory=list)

    def app(self) -> web.Application:
        async def chat(request: web.Request) -> web.Response:
            body = await request.json()
            self.bodies.append(body)
            if self.down or "poison" in json.dumps(body):
                return web.json_response({"error": {"message": "engine crashed", "type": "server_error"}}, status=500)
            return web.json_response({"id": "c", "object": "chat.completion", "model": body["model"], "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        return app


def gateway(servers: Servers, picky: Picky) -> str:
    port = servers.serve(picky.app())
    return servers.gateway(f"""
backends:
  b: {{type: openai, url: "http://127.0.0.1:{port}/v1", breaker: {{consecutive_failures: 5, cooldown_s: 30}}}}
models:
  m: {{backend: b}}
""", api_keys=KEYS)


def ask(base: str, key: str, content: str) -> httpx.Response:
    return httpx.post(f"{base}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": "m", "messages": [{"role": "user", "content": content}]})


def test_one_clients_poisoned_payloads_do_not_open_the_breaker(servers: Servers) -> None:
    picky = Picky()
    base = gateway(servers, picky)
    for i in range(12):
        assert ask(base, "attacker-key-0123456789", f"poison {i}").status_code == 502
    wait_until(lambda: Scrape(base).value("nanoroute_breaker_checks_total", model="m") >= 2)
    m = Scrape(base)
    assert m.value("nanoroute_breaker_checks_total", model="m", result="answered") >= 2
    assert m.value("nanoroute_breaker_checks_total", model="m", result="failing") == 0
    assert m.value("nanoroute_circuit_open", model="m") == 0
    resp = ask(base, "victim-key-01234567", "hello")
    assert (resp.status_code, resp.json()["choices"][0]["message"]["content"]) == (200, "fine")


def test_a_real_outage_still_opens_it_fast(servers: Servers) -> None:
    picky = Picky(down=True)
    base = gateway(servers, picky)
    for _ in range(5):
        assert ask(base, "victim-key-01234567", "hello").status_code == 502
    wait_until(lambda: Scrape(base).value("nanoroute_circuit_open", model="m") == 1, timeout=2)
    assert Scrape(base).value("nanoroute_breaker_checks_total", model="m", result="failing") == 1
    seen = len(picky.bodies)
    resp = ask(base, "victim-key-01234567", "hello")
    assert (resp.status_code, resp.json()["error"]["code"]) == (503, "models_unavailable")
    assert len(picky.bodies) == seen  # open: no call reached the upstream
    assert "retry-after" in resp.headers


def test_a_refused_connection_opens_it_without_a_check(servers: Servers) -> None:
    from tests.fakes.servers import free_port

    base = servers.gateway(f"""
backends:
  b: {{type: openai, url: "http://127.0.0.1:{free_port()}/v1", breaker: {{consecutive_failures: 2, cooldown_s: 30}}}}
models:
  m: {{backend: b}}
""")
    for _ in range(2):
        assert httpx.post(f"{base}/chat/completions", json={"model": "m", "messages": []}).status_code == 503
    m = Scrape(base)
    assert m.value("nanoroute_circuit_open", model="m") == 1
    assert m.value("nanoroute_breaker_checks_total", model="m") == 0


def test_a_model_that_hangs_fails_its_check_and_opens(servers: Servers) -> None:
    from tests.fakes.upstream import FakeUpstream

    main: FakeUpstream = servers.upstream("main", behaviour="hang")
    base = servers.gateway(f"""
backends:
  b: {{type: openai, url: "{main.url}", timeouts: {{total_s: 0.5, ttft_s: 0.5}},
      breaker: {{consecutive_failures: 2, cooldown_s: 30}}}}
models:
  m: {{backend: b}}
""")
    for _ in range(2):
        assert httpx.post(f"{base}/chat/completions", json={"model": "m", "messages": []}).status_code == 504
    wait_until(lambda: Scrape(base).value("nanoroute_circuit_open", model="m") == 1)  # the check timed out too
    assert Scrape(base).value("nanoroute_breaker_checks_total", model="m", result="failing") == 1
