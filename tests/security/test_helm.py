"""What the Helm chart defends against, shown on the objects it renders (helm/nanoroute, Helm's own engine).

Each test is named after the attack or accident it resists; tests/helm/ checks the chart's features.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.helm.chart import CHART, RELEASE, SCENARIOS, Obj, container, env_of, load_values, render

VLLM = f"{RELEASE}-nanoroute-vllm"


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def pod_spec(deployment: Obj) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("values", [{}, {"vllm": {"enabled": True}}, *SCENARIOS],
                         ids=lambda v: getattr(v, "name", "vllm" if v else "defaults"))
def test_no_pod_can_fill_its_nodes_disk_or_memory_through_an_empty_dir(chart: helm.Chart, values: Any) -> None:
    rendered = render(chart, load_values(values) if not isinstance(values, dict) else values)
    empty_dirs = [(d["metadata"]["name"], v["name"], v["emptyDir"]) for d in rendered.all("Deployment")
                  for v in pod_spec(d)["volumes"] if "emptyDir" in v]
    assert empty_dirs
    assert [(name, volume) for name, volume, source in empty_dirs if not source.get("sizeLimit")] == []


def deployments_with_vllm(chart: helm.Chart) -> list[Obj]:
    return render(chart, {"vllm": {"enabled": True}}).all("Deployment")


def test_a_process_taken_over_in_any_pod_is_not_root_and_cannot_gain_privileges(chart: helm.Chart) -> None:
    deployments = deployments_with_vllm(chart)
    assert len(deployments) == 2  # the gateway and vLLM
    for deployment in deployments:
        pod = pod_spec(deployment)["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] > 0 and pod["runAsGroup"] > 0
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for each in pod_spec(deployment)["containers"]:
            security = each["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert not security.get("privileged")


def test_a_process_taken_over_in_vllm_cannot_rewrite_its_image(chart: helm.Chart) -> None:
    vllm = next(d for d in deployments_with_vllm(chart) if d["metadata"]["name"].endswith("-vllm"))
    server = container(vllm)
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    # ... and vLLM still runs: every folder it, torch, Triton and Hugging Face write to is a writable mount.
    writable = [m["mountPath"] for m in server["volumeMounts"] if not m.get("readOnly")]
    env = {e["name"]: e.get("value") for e in server["env"]}
    folders = ["HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "VLLM_CACHE_ROOT", "TRITON_CACHE_DIR",
               "TORCHINDUCTOR_CACHE_DIR", "HF_HOME"]
    for name in folders:
        assert any(env[name] == m or env[name].startswith(m + "/") for m in writable), (name, env[name])
    assert {"/tmp", "/dev/shm"} <= set(writable)
    assert env["USER"]  # torch reads it for its default cache folder; the uid has no passwd entry


def generated_vllm_key(rendered: Any) -> str:
    secret = rendered.one("Secret", f"{VLLM}-api-key")
    return base64.b64decode(secret["data"]["api-key"]).decode()


@pytest.mark.parametrize("scenario", ["vllm-values.yaml", "adapters-values.yaml"])
def test_vllm_refuses_requests_without_the_api_key_the_gateway_sends(chart: helm.Chart, scenario: str) -> None:
    rendered = render(chart, load_values(CHART / "ci" / scenario))
    required = env_of(rendered.one("Deployment", VLLM))["VLLM_API_KEY"]  # vLLM's --api-key, from the environment
    assert required == {"secretKeyRef": {"name": f"{VLLM}-api-key", "key": "api-key"}}
    key = generated_vllm_key(rendered)
    assert len(key) >= 32 and key.isalnum()
    [backend] = [b for b in yaml.safe_load(rendered.config_text())["backends"].values() if b["type"] == "vllm"]
    assert env_of(rendered.gateway)[backend["api_key_env"]] == required  # the gateway sends the same key


def test_the_vllm_api_key_is_in_no_pod_spec_and_no_config(chart: helm.Chart) -> None:
    rendered = render(chart, load_values(CHART / "ci" / "vllm-values.yaml"))
    key = generated_vllm_key(rendered)
    for obj in rendered.objects:
        if obj["kind"] != "Secret":
            assert key not in json.dumps(obj), f"{obj['kind']} {obj['metadata']['name']}"
    assert not [a for a in container(rendered.one("Deployment", VLLM))["args"] if a.startswith("--api-key")]


def test_no_two_installs_share_a_vllm_api_key(chart: helm.Chart) -> None:
    keys = {generated_vllm_key(render(chart, {"vllm": {"enabled": True}})) for _ in range(3)}
    assert len(keys) == 3  # random for each new install, not a default baked into the chart


def test_the_vllm_api_key_is_never_sent_to_a_server_other_than_the_charts_vllm(chart: helm.Chart) -> None:
    mixed = {"backends": {"local": {"type": "vllm", "urls": [
        '{{ include "nanoroute.vllm.url" . }}', "http://vllm.elsewhere.example:8000/v1"]}}}
    with pytest.raises(helm.HelmRenderError, match="mixes the in-cluster vLLM"):
        render(chart, {"vllm": {"enabled": True}, "config": mixed})
    others = {"backends": {
        "local": {"type": "vllm", "urls": ['{{ include "nanoroute.vllm.url" . }}']},
        "remote": {"type": "vllm", "urls": ["http://vllm.elsewhere.example:8000/v1"]},
        "hosted": {"type": "openai", "url": "https://api.example.com/v1", "api_key_env": "HOSTED_KEY"},
    }}
    backends = yaml.safe_load(render(chart, {"vllm": {"enabled": True}, "config": others}).config_text())["backends"]
    assert {name: b.get("api_key_env") for name, b in backends.items()} == \
        {"local": "NANOROUTE_VLLM_API_KEY", "remote": None, "hosted": "HOSTED_KEY", "openai": "OPENAI_API_KEY"}


def test_only_the_gateway_can_reach_vllm(chart: helm.Chart) -> None:
    rendered = render(chart, {"vllm": {"enabled": True}})  # no networkPolicy value set: on by default
    policy = rendered.one("NetworkPolicy", VLLM)
    labels = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"].items()
              for d in rendered.all("Deployment")}
    selected = [name for name, pod in labels.items() if policy["spec"]["podSelector"]["matchLabels"].items() <= pod]
    assert selected == [VLLM]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]  # nothing else is allowed in
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    [peer] = rule["from"]
    assert list(peer) == ["podSelector"]  # pods of the release's namespace only
    admitted = [name for name, pod in labels.items() if peer["podSelector"]["matchLabels"].items() <= pod]
    assert admitted == [rendered.gateway["metadata"]["name"]]


def test_api_clients_cannot_read_the_gateways_metrics(chart: helm.Chart) -> None:
    rendered = render(chart)
    env = env_of(rendered.gateway)
    assert env["NANOROUTE_METRICS_ON_API"] == {"value": "false"}  # not on the API port ...
    ports = {p["name"]: p["containerPort"] for p in container(rendered.gateway)["ports"]}
    assert env["NANOROUTE_METRICS_PORT"] == {"value": str(ports["metrics"])}  # ... but on a port of its own
    assert ports["metrics"] != ports["http"]
    api = rendered.one("Service", f"{RELEASE}-nanoroute")
    assert [p["targetPort"] for p in api["spec"]["ports"]] == ["http"]


def test_a_public_load_balancer_never_publishes_the_gateways_metrics(chart: helm.Chart) -> None:
    rendered = render(chart, {"service": {"type": "LoadBalancer", "port": 443}})
    public = [s for s in rendered.all("Service") if s["spec"]["type"] != "ClusterIP"]
    assert [p["targetPort"] for s in public for p in s["spec"]["ports"]] == ["http"]
    metrics = rendered.one("Service", f"{RELEASE}-nanoroute-metrics")
    assert [p["targetPort"] for p in metrics["spec"]["ports"]] == ["metrics"]


def test_api_clients_and_the_scraper_each_reach_only_their_own_port(chart: helm.Chart) -> None:
    rendered = render(chart, load_values(CHART / "ci" / "monitoring-values.yaml"))
    rules = rendered.one("NetworkPolicy", f"{RELEASE}-nanoroute")["spec"]["ingress"]
    allowed = {p["port"]: [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                           for peer in rule["from"]] for rule in rules for p in rule["ports"]}
    assert allowed == {"http": ["apps"], "metrics": ["monitoring"]}
