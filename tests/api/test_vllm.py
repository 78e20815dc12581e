"""A vLLM backend through the gateway, with the official SDK: adapters loaded on their own, failures
that fall back with a clear reason, replicas that restart, and a queue that makes a latency SLO spill."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.api.support import MESSAGES, Client, wait_until
from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream
from tests.fakes.vllm import FakeVllm


def stack(tmp_path: Path, vllm: FakeVllm, hosted: FakeUpstream | None = None, path: str | None = None,
          extra: str = "", require: str = "") -> str:
    """Model `small` (the base model), `triage` (its adapter, manifest in tmp_path/adapters) and, with
    `hosted`, `large`; policy `triage` sends task triage to the adapter, falling back to `small`/`large`."""
    weights = tmp_path / "weights" / "triage"
    weights.mkdir(parents=True, exist_ok=True)
    (tmp_path / "adapters").mkdir(exist_ok=True)
    (tmp_path / "adapters" / "triage.yaml").write_text(
        f"name: triage\nbase_model: base-model\ntasks: [triage]\npath: {path or weights}\n"
        "eval: {metric: exact_match, examples: 20, adapter: 0.95, base: 0.2}\n")
    hosted_backend = f"  hosted: {{type: openai, url: {hosted.url}}}\n" if hosted else ""
    hosted_model = ("  large: {backend: hosted, price: {input: 5, output: 15}, quality: {triage: 0.99}}\n"
                    if hosted else "")
    fallback = "[small, large]" if hosted else "[small]"
    return f"""\
adapters_dir: {tmp_path / "adapters"}
backends:
  local: {{type: vllm, urls: [{vllm.url}], poll_interval_s: 0.05{extra}}}
{hosted_backend}models:
  small: {{backend: local, name: base-model, price: {{input: 0.01, output: 0.01}},
          latency: {{ttft_ms: 100, tokens_per_s: 50}}}}
  triage: {{backend: local, adapter: triage, price: {{input: 0.02, output: 0.02}},
           latency: {{ttft_ms: 100, tokens_per_s: 50}}}}
{hosted_model}policies:
  - name: triage
    match: {{task: triage}}
    strategy: {"cheapest" if require else "ordered"}
    candidates: {"[triage, large]" if require else "[triage]"}
    {require or "require: {}"}
    fallback: {fallback}
  - {{name: default, match: {{}}, candidates: [small]}}
"""


def ask(client: Client, base: str, task: str | None = "triage") -> tuple[str, dict[str, str]]:
    raw = client(base).chat.completions.with_raw_response.create(
        model="small", messages=MESSAGES, max_tokens=5,
        extra_headers={"X-Nanoroute-Task": task} if task else None)
    return raw.parse().model, dict(raw.headers)


def test_the_task_goes_to_its_adapter_which_the_gateway_loaded(servers: Servers, client: Client,
                                                                tmp_path: Path) -> None:
    fake = servers.vllm()
    base = servers.gateway(stack(tmp_path, fake), admin_key="admin-0123456789abcdef")
    served, headers = ask(client, base)
    assert served == "triage"
    assert (headers["x-nanoroute-model"], headers["x-nanoroute-fallbacks"]) == ("triage", "0")
    assert fake.adapters == {"triage": str(tmp_path / "weights" / "triage")}
    assert fake.load_calls == ["triage"]
    assert ask(client, base, task=None)[0] == "base-model"

    root = base.removesuffix("/v1")
    info = httpx.get(f"{root}/admin/backends", headers={"Authorization": "Bearer admin-0123456789abcdef"}).json()
    replica = info["backends"]["local"]["replicas"][0]
    assert replica["adapters"] == ["triage"] and replica["served"] == {"base-model": None, "triage": "base-model"}
    config = httpx.get(f"{root}/admin/config", headers={"Authorization": "Bearer admin-0123456789abcdef"}).json()
    assert config["models"]["triage"]["quality"] == {"triage": 0.95}  # from the manifest
    assert config["models"]["triage"]["adapter"]["base_model"] == "base-model"
    metrics = httpx.get(f"{root}/metrics").text
    assert 'nanoroute_adapter_loads_total{adapter="triage",backend="local",outcome="loaded"} 1.0' in metrics


def test_an_adapter_that_will_not_load_falls_back_and_says_why(servers: Servers, client: Client,
                                                                tmp_path: Path) -> None:
    fake = servers.vllm()
    base = servers.gateway(stack(tmp_path, fake, path="/missing/triage"))
    served, headers = ask(client, base)
    assert served == "base-model"
    assert (headers["x-nanoroute-model"], headers["x-nanoroute-fallbacks"]) == ("small", "1")
    assert fake.adapters == {}
    metrics = httpx.get(f"{base.removesuffix('/v1')}/metrics").text
    assert 'nanoroute_upstream_errors_total{kind="adapter_load",model="triage"}' in metrics
    assert 'nanoroute_adapter_loads_total{adapter="triage",backend="local",outcome="failed"}' in metrics


def test_a_replica_that_restarted_gets_the_adapter_back(servers: Servers, client: Client, tmp_path: Path) -> None:
    fake = servers.vllm()
    base = servers.gateway(stack(tmp_path, fake))
    assert ask(client, base)[0] == "triage"
    fake.restart()
    wait_until(lambda: "triage" in fake.adapters)  # the poll saw it and loaded it again
    served, headers = ask(client, base)
    assert (served, headers["x-nanoroute-fallbacks"]) == ("triage", "0")
    assert fake.load_calls == ["triage", "triage"]


def test_a_long_vllm_queue_makes_a_latency_slo_spill_to_the_hosted_model(servers: Servers, client: Client,
                                                                          tmp_path: Path) -> None:
    fake, hosted = servers.vllm(), servers.upstream("hosted-large")
    config = stack(tmp_path, fake, hosted, require="require: {p95_latency_ms: 2000}")
    base = servers.gateway(config)
    served, headers = ask(client, base)
    assert (served, headers["x-nanoroute-reason"]) == ("triage", "cheapest")

    fake.waiting = 12  # and nothing finishing: the queue will not clear within the SLO
    metrics = f"{base.removesuffix('/v1')}/metrics"
    wait_until(lambda: 'nanoroute_backend_queue_wait_seconds{backend="local"} 60.0' in httpx.get(metrics).text)
    served, headers = ask(client, base)
    assert (served, headers["x-nanoroute-reason"]) == ("large", "latency_slo")

    fake.waiting = 0
    wait_until(lambda: ask(client, base)[1]["x-nanoroute-model"] == "triage")


def test_an_edited_manifest_is_a_new_version_and_a_broken_one_changes_nothing(servers: Servers,
                                                                                tmp_path: Path) -> None:
    fake = servers.vllm()
    base = servers.gateway(stack(tmp_path, fake), reload_interval_s=0.1, admin_key="admin-0123456789abcdef")
    root, admin = base.removesuffix("/v1"), {"Authorization": "Bearer admin-0123456789abcdef"}

    def config() -> dict:  # type: ignore[type-arg]
        return httpx.get(f"{root}/admin/config", headers=admin).json()  # type: ignore[no-any-return]

    first = config()
    manifest = tmp_path / "adapters" / "triage.yaml"
    manifest.write_text(manifest.read_text().replace("adapter: 0.95", "adapter: 0.8"))  # a new `distill eval`
    wait_until(lambda: config()["models"]["triage"]["quality"] == {"triage": 0.8})
    second = config()
    assert second["version"] != first["version"]

    manifest.write_text("name: triage\nbase_model: [\n")
    wait_until(lambda: config()["last_error"] is not None)
    broken = config()
    assert broken["version"] == second["version"]  # the previous version keeps serving
    assert "triage.yaml" in broken["last_error"]["problems"][0]["problem"]
