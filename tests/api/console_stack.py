"""A gateway for the console's tests, and an operator who uses the console over plain HTTP.

The stack: a hosted model (`large`, a fake OpenAI upstream) and a fake vLLM serving a base model (`small`)
and an adapter (`triage-lora`, its manifest under the test's folder). Policy `triage` sends the task to
`large` and rolls the adapter out (it stays in shadow until an operator moves it: `min_samples` is high);
policy `support` prefers the cheapest of `small` and `large`; `default` takes the rest to `small`. A team
and a governed key spend, so the overview's ledger has rows. The console's step is short, so a test sees
its figures within a second. The fixtures `stack` and `operator` (tests/conftest.py) start it and log in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream
from tests.fakes.vllm import FakeVllm

ADMIN_KEY = "console-admin-key-0123456789"
CLIENT_KEY = "sk-console-client-0123456789"
STEP_S = 0.25
PAGES = ("/ui", "/ui/policies", "/ui/rollouts", "/ui/replicas", "/ui/health")
"""The console's pages, each behind a session."""
AS_ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def config(tmp_path: Path, hosted: FakeUpstream, vllm: FakeVllm) -> str:
    weights = tmp_path / "weights" / "triage-lora"
    weights.mkdir(parents=True, exist_ok=True)
    (tmp_path / "adapters").mkdir(exist_ok=True)
    (tmp_path / "adapters" / "triage-lora.yaml").write_text(
        f"name: triage-lora\nbase_model: base-model\ntasks: [triage]\npath: {weights}\n"
        "eval: {metric: exact_match, examples: 20, adapter: 0.95, base: 0.2}\n")
    return f"""\
adapters_dir: {tmp_path / "adapters"}
backends:
  hosted: {{type: openai, url: {hosted.url}}}
  local: {{type: vllm, urls: [{vllm.url}], poll_interval_s: 0.1}}
models:
  large: {{backend: hosted, price: {{input: 2.5, output: 10}}, quality: {{triage: 0.97, support: 0.95}}}}
  small: {{backend: local, name: base-model, price: {{input: 0.02, output: 0.02}}, quality: {{support: 0.9}}}}
  triage-lora: {{backend: local, adapter: triage-lora, price: {{input: 0.02, output: 0.02}}}}
teams:
  support-team: {{budget: {{usd: 100, period: day}}}}
keys:
  console-client: {{team: support-team}}
policies:
  - name: triage
    match: {{task: triage}}
    candidates: [large]
    require: {{min_quality: 0.9}}
    rollout: {{model: triage-lora, shadow_sample: 1.0, audit_sample: 0.5, min_samples: 1000, window: 1000,
              canary_steps: [0.25, 0.5]}}
  - {{name: support, match: {{task: support}}, strategy: cheapest, candidates: [small, large],
     require: {{min_quality: 0.85}}}}
  - {{name: default, candidates: [small]}}
"""


@dataclass
class Stack:
    base: str
    """The API's base URL, with /v1."""
    hosted: FakeUpstream
    vllm: FakeVllm

    @property
    def root(self) -> str:
        return self.base.removesuffix("/v1")

    def traffic(self, n: int = 6) -> None:
        """n requests of each task through the official SDK, with the governed key."""
        with openai.OpenAI(base_url=self.base, api_key=CLIENT_KEY, max_retries=0, timeout=10) as client:
            for i in range(n):
                for task in ("triage", "support", None):
                    client.chat.completions.create(
                        model="small", messages=[{"role": "user", "content": f"ticket {i}"}],
                        extra_headers={"X-Nanoroute-Task": task} if task else None)


def start(servers: Servers, tmp_path: Path, **settings: Any) -> Stack:
    hosted = servers.upstream("large")
    vllm = servers.vllm("base-model")
    settings = {"admin_key": ADMIN_KEY, "api_keys": (f"console-client={CLIENT_KEY}",), "console_step_s": STEP_S,
                "access_log": False, **settings}
    return Stack(servers.gateway(config(tmp_path, hosted, vllm), **settings), hosted, vllm)


def rollout(stack: Stack) -> dict[str, object]:
    """Policy `triage`'s rollout (the only one), as the admin API shows it."""
    [found] = httpx.get(f"{stack.root}/admin/rollouts", headers=AS_ADMIN).json()["rollouts"]
    return found  # type: ignore[no-any-return]


CSRF = re.compile(r'<meta name="csrf-token" content="([0-9a-f]+)">')


class Operator:
    """Someone at the console, over httpx: the cookie jar of a browser, the Origin a browser sends."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.http = httpx.Client(base_url=root, follow_redirects=False, timeout=10)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Operator:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def login(self, key: str = ADMIN_KEY) -> httpx.Response:
        return self.http.post("/ui/login", data={"key": key}, headers={"Origin": self.root})

    def csrf(self) -> str:
        page = self.http.get("/ui/health")
        found = CSRF.search(page.text)
        assert found is not None, page.text[:500]
        return found[1]

    def logged_in(self) -> Operator:
        assert self.login().status_code == 303
        return self

    def post(self, path: str, data: dict[str, str], csrf: str | None = "", origin: str | None = "") -> httpx.Response:
        """A form sent as the console's page sends it: its CSRF token and Origin unless a test says otherwise."""
        form = {**data, "csrf": self.csrf() if csrf == "" else csrf} if csrf is not None else data
        headers = {"Origin": self.root if origin == "" else origin} if origin is not None else {}
        return self.http.post(path, data=form, headers=headers)
