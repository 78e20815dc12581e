"""The optional vLLM server: a base model with LoRA adapters from a volume, reached by the gateway's config."""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.helm.chart import CHART, RELEASE, Rendered, container, env_of, load_values, render

VLLM = f"{RELEASE}-nanoroute-vllm"


@pytest.fixture
def rendered(chart: helm.Chart) -> Rendered:
    return render(chart, load_values(CHART / "ci" / "vllm-values.yaml"))


def test_off_by_default(chart: helm.Chart) -> None:
    assert [o["metadata"]["name"] for o in render(chart).objects if "vllm" in o["metadata"]["name"]] == []


def test_the_gateway_config_points_at_the_in_cluster_service(rendered: Rendered) -> None:
    service = rendered.one("Service", VLLM)
    port = service["spec"]["ports"][0]["port"]
    config = yaml.safe_load(rendered.config_text())
    assert config["backends"]["local"] == {"type": "vllm", "urls": [f"http://{VLLM}:{port}/v1"],
                                           "api_key_env": "NANOROUTE_VLLM_API_KEY"}  # vLLM's key, added
    served = {m["name"] for m in config["models"].values() if m["backend"] == "local"}
    assert served == {"base", "support-v3"}  # the base model's served name and an adapter's


def test_vllm_serves_the_model_with_lora_adapters_from_the_volume(rendered: Rendered) -> None:
    vllm = container(rendered.one("Deployment", VLLM))
    assert vllm["image"] == "vllm/vllm-openai:v0.33.0"
    assert vllm["command"] == ["vllm", "serve"]
    args = vllm["args"]
    assert args[0] == "Qwen/Qwen2.5-7B-Instruct"
    for flag in ("--host=0.0.0.0", "--port=8000", "--served-model-name=base", "--enable-lora", "--max-loras=4",
                 "--max-lora-rank=16", "--max-model-len=8192", "--enable-prefix-caching"):
        assert flag in args
    assert args[args.index("--lora-modules") + 1] == "support-v3=/adapters/support-v3"
    assert env_of(rendered.one("Deployment", VLLM))["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == {"value": "True"}
    volumes = {v["name"]: v for v in rendered.one("Deployment", VLLM)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["adapters"]["persistentVolumeClaim"] == {"claimName": "lora-adapters", "readOnly": True}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "hf-cache"}
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["name"]: m["mountPath"] for m in vllm["volumeMounts"]}
    assert mounts == {"adapters": "/adapters", "model-cache": "/var/cache/huggingface", "shm": "/dev/shm",
                      "home": "/home/vllm", "tmp": "/tmp"}
    assert env_of(rendered.one("Deployment", VLLM))["HF_HOME"] == {"value": "/var/cache/huggingface"}


def test_gpus_are_requested_and_tolerated(rendered: Rendered) -> None:
    deployment = rendered.one("Deployment", VLLM)
    resources = container(deployment)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        deployment["spec"]["template"]["spec"]["tolerations"]
    assert container(deployment)["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}


@pytest.mark.parametrize(("values", "flag"), [
    ({"gpus": 2}, "--tensor-parallel-size=2"),
    ({"lora": {"enabled": True, "maxCpuLoras": 8}}, "--max-cpu-loras=8"),
])
def test_optional_flags(chart: helm.Chart, values: dict[str, Any], flag: str) -> None:
    rendered = render(chart, {"vllm": {"enabled": True, **values}})
    assert flag in container(rendered.one("Deployment", VLLM))["args"]


def test_without_lora_no_lora_flags_or_runtime_loading(chart: helm.Chart) -> None:
    rendered = render(chart, {"vllm": {"enabled": True, "gpus": 0, "lora": {"enabled": False}}})
    vllm = container(rendered.one("Deployment", VLLM))
    assert not [a for a in vllm["args"] if "lora" in a]
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in env_of(rendered.one("Deployment", VLLM))
    assert "nvidia.com/gpu" not in vllm["resources"]["limits"]


def test_only_the_gateway_reaches_vllm_when_network_policies_are_on(chart: helm.Chart) -> None:
    values = load_values(CHART / "ci" / "vllm-values.yaml")
    rendered = render(chart, {**values, "networkPolicy": {"enabled": True}})
    policy = rendered.one("NetworkPolicy", VLLM)
    vllm_labels = rendered.one("Deployment", VLLM)["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= vllm_labels
    [rule] = policy["spec"]["ingress"]
    [peer] = rule["from"]
    gateway_labels = rendered.gateway["spec"]["template"]["metadata"]["labels"].items()
    assert peer["podSelector"]["matchLabels"].items() <= gateway_labels
    assert not peer["podSelector"]["matchLabels"].items() <= vllm_labels


def test_notes_warn_when_no_backend_uses_the_vllm_service(chart: helm.Chart, rendered: Rendered) -> None:
    assert "no backend in the config uses that URL" not in rendered.notes
    unused = render(chart, {"vllm": {"enabled": True}})
    assert f"http://{VLLM}:8000/v1\nWARNING: no backend in the config uses that URL" in unused.notes


def test_the_model_cache_without_a_claim_is_an_empty_dir_of_the_size_given(chart: helm.Chart) -> None:
    rendered = render(chart, {"vllm": {"enabled": True, "modelCache": {"sizeLimit": "200Gi"}}})
    volumes = {v["name"]: v for v in rendered.one("Deployment", VLLM)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model-cache"] == {"name": "model-cache", "emptyDir": {"sizeLimit": "200Gi"}}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}


def test_the_hardening_can_be_relaxed_for_a_model_that_needs_it(chart: helm.Chart) -> None:
    rendered = render(chart, {"vllm": {"enabled": True, "podSecurityContext": {"runAsUser": 2000, "fsGroup": None},
                                       "securityContext": {"readOnlyRootFilesystem": False}}})
    deployment = rendered.one("Deployment", VLLM)
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsNonRoot"]) == (2000, True)
    assert "fsGroup" not in pod
    security = container(deployment)["securityContext"]
    assert security["readOnlyRootFilesystem"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}  # the rest of the defaults stay


def test_vllm_and_the_gateway_restart_together_when_the_generated_key_changes(rendered: Rendered) -> None:
    stored = rendered.one("Secret", f"{VLLM}-api-key")["data"]["api-key"]
    checksum = hashlib.sha256(stored.encode()).hexdigest()
    for deployment in (rendered.gateway, rendered.one("Deployment", VLLM)):
        assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/vllm-api-key"] == checksum


def test_an_upgrade_keeps_the_key_the_cluster_holds(tmp_path: Path) -> None:
    """`lookup` finds nothing without a cluster, so the helper that decides is fed a stored Secret directly."""
    copy = tmp_path / "nanoroute"
    shutil.copytree(CHART, copy)
    (copy / "templates" / "probe.yaml").write_text(
        '{{- $stored := dict "data" (dict "api-key" "c3RvcmVk" "other" "b3RoZXI=") }}\n'
        'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\ndata:\n'
        '  kept: {{ include "nanoroute.vllm.apiKey.keep" (dict "stored" $stored "key" "api-key") | quote }}\n'
        '  new: {{ include "nanoroute.vllm.apiKey.keep" (dict "stored" dict "key" "api-key") | quote }}\n')
    with helm.Chart.load(copy) as probed:
        data = render(probed).one("ConfigMap", "probe")["data"]
    assert data["kept"] == "c3RvcmVk"  # the Secret's own bytes, as it holds them
    assert len(base64.b64decode(data["new"])) == 48


def test_an_existing_secret_holds_the_key_instead(chart: helm.Chart) -> None:
    rendered = render(chart, {"vllm": {"enabled": True, "apiKey": {"existingSecret": "vllm-key", "key": "token"}}})
    assert rendered.all("Secret") == []
    reference = {"secretKeyRef": {"name": "vllm-key", "key": "token"}}
    assert env_of(rendered.one("Deployment", VLLM))["VLLM_API_KEY"] == reference
    assert env_of(rendered.gateway)["NANOROUTE_VLLM_API_KEY"] == reference
    for deployment in (rendered.gateway, rendered.one("Deployment", VLLM)):  # the chart cannot see its content
        assert "checksum/vllm-api-key" not in deployment["spec"]["template"]["metadata"].get("annotations", {})


def test_a_backend_that_names_its_own_key_keeps_it(chart: helm.Chart) -> None:
    backends = {"local": {"type": "vllm", "urls": ['{{ include "nanoroute.vllm.url" . }}'],
                          "api_key_env": "MY_VLLM_KEY"}}
    rendered = render(chart, {"vllm": {"enabled": True}, "config": {"backends": backends},
                              "extraEnv": [{"name": "MY_VLLM_KEY", "value": "unused"}]})
    assert yaml.safe_load(rendered.config_text())["backends"]["local"]["api_key_env"] == "MY_VLLM_KEY"


def test_the_vllm_network_policy_takes_extra_peers_and_can_be_turned_off(chart: helm.Chart) -> None:
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    rendered = render(chart, {"vllm": {"enabled": True}, "networkPolicy": {"vllmIngressFrom": [prometheus]}})
    [rule] = rendered.one("NetworkPolicy", VLLM)["spec"]["ingress"]
    assert rule["from"][1:] == [prometheus]
    assert rendered.all("NetworkPolicy") == [rendered.one("NetworkPolicy", VLLM)]  # the gateway's stays off
    off = render(chart, {"vllm": {"enabled": True}, "networkPolicy": {"vllmEnabled": False}})
    assert off.all("NetworkPolicy") == []


def test_notes_warn_that_prometheus_cannot_scrape_vllm_through_its_network_policy(chart: helm.Chart) -> None:
    values = {"vllm": {"enabled": True}, "serviceMonitor": {"enabled": True}}
    assert "Prometheus cannot scrape vLLM" in render(chart, values).notes
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    admitted = render(chart, {**values, "networkPolicy": {"vllmIngressFrom": [prometheus]}})
    assert "Prometheus cannot scrape vLLM" not in admitted.notes
