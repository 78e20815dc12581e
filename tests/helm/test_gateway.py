"""The gateway's Deployment and what it reads: config, keys, probes, rolling on a config change."""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.helm.chart import CHART, RELEASE, REPO, container, env_of, load_values, render

CHECKSUM = "checksum/config"


def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def test_probes_ask_healthz_for_liveness_and_readyz_for_readiness(chart: helm.Chart) -> None:
    gateway = container(render(chart).gateway)
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in gateway["ports"]


def test_the_pod_reads_the_mounted_config_and_listens_on_all_interfaces(chart: helm.Chart) -> None:
    deployment = render(chart).gateway
    env = env_of(deployment)
    assert env["NANOROUTE_CONFIG"] == {"value": "/etc/nanoroute/config.yaml"}
    assert env["NANOROUTE_HOST"] == {"value": "0.0.0.0"}
    assert env["NANOROUTE_PORT"] == {"value": "8080"}
    mount = next(m for m in container(deployment)["volumeMounts"] if m["name"] == "config")
    assert mount == {"name": "config", "mountPath": "/etc/nanoroute", "readOnly": True}  # no subPath: updates land
    volume = next(v for v in pod(deployment)["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == f"{RELEASE}-nanoroute-config"


def test_a_policy_change_rolls_the_pods_and_nothing_else_does(chart: helm.Chart) -> None:
    base = render(chart).gateway["spec"]["template"]["metadata"]["annotations"][CHECKSUM]
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    config = render(chart).config_text()
    changed = yaml.safe_load(config)
    changed["policies"][0]["strategy"] = "cheapest"
    rolled = render(chart, {"config": changed})
    assert rolled.gateway["spec"]["template"]["metadata"]["annotations"][CHECKSUM] != base
    same = render(chart, {"replicaCount": 5, "logLevel": "debug"})
    assert same.gateway["spec"]["template"]["metadata"]["annotations"][CHECKSUM] == base


def test_live_reload_keeps_the_pods_when_the_config_changes(chart: helm.Chart) -> None:
    live = render(chart, {"configReload": "live"})
    assert "annotations" not in live.gateway["spec"]["template"]["metadata"]
    assert "reloaded live by each pod" in live.notes
    changed = render(chart, {"configReload": "live", "config": {"policies": [
        {"name": "default", "match": {}, "strategy": "cheapest", "candidates": ["gpt-4o-mini"]}]}})
    assert changed.gateway == live.gateway  # same pod template: nothing rolls
    assert changed.config_text() != live.config_text()


def test_an_existing_configmap_replaces_the_charts_own(chart: helm.Chart) -> None:
    values = load_values(CHART / "ci" / "existing-config-values.yaml")
    rendered = render(chart, values)
    assert rendered.all("ConfigMap") == []
    deployment = rendered.gateway
    assert env_of(deployment)["NANOROUTE_CONFIG"] == {"value": "/etc/nanoroute/policies.yaml"}
    volume = next(v for v in pod(deployment)["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == "nanoroute-policies"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert CHECKSUM not in annotations  # the chart cannot see that ConfigMap's content
    assert "nanoroute-policies" in rendered.notes and "reloads it live" in rendered.notes


def test_keys_come_from_secrets_never_from_values(chart: helm.Chart) -> None:
    rendered = render(chart, load_values(CHART / "ci" / "vllm-values.yaml"))
    env = env_of(rendered.gateway)
    assert env["NANOROUTE_API_KEYS"] == {"secretKeyRef": {"name": "nanoroute-client-keys", "key": "api-keys"}}
    assert env["NANOROUTE_ADMIN_KEY"] == {"secretKeyRef": {"name": "nanoroute-admin-key", "key": "admin-key"}}
    assert env["OPENAI_API_KEY"] == {"secretKeyRef": {"name": "llm-provider-keys", "key": "openai"}}
    # The one Secret the chart writes holds the key it generates for vLLM, never one from values.
    assert [s["metadata"]["name"] for s in rendered.all("Secret")] == [f"{RELEASE}-nanoroute-vllm-api-key"]


def test_an_existing_secret_becomes_the_environment(chart: helm.Chart) -> None:
    rendered = render(chart, load_values(CHART / "ci" / "existing-secret-values.yaml"))
    gateway = container(rendered.gateway)
    assert gateway["envFrom"] == [{"secretRef": {"name": "nanoroute-env"}}]
    assert "WARNING: no client keys" not in rendered.notes


def test_notes_warn_about_an_open_api_and_an_unset_provider_key(chart: helm.Chart) -> None:
    notes = render(chart).notes
    assert "WARNING: no client keys are set" in notes
    assert "OPENAI_API_KEY (api_key_env) but no providerKeys entry sets it" in notes
    quiet = render(chart, load_values(CHART / "ci" / "minimal-values.yaml")).notes
    assert "WARNING" not in quiet


@pytest.mark.parametrize(("values", "expected"), [
    ({}, None),
    ({"redis": {"url": "redis://redis:6379/0"}}, {"value": "redis://redis:6379/0"}),
    ({"redis": {"url": "redis://ignored:6379", "existingSecret": "nanoroute-redis"}},
     {"secretKeyRef": {"name": "nanoroute-redis", "key": "redis-url"}}),
])
def test_redis_is_optional_and_passed_as_one_url(chart: helm.Chart, values: dict[str, Any],
                                                 expected: dict[str, Any] | None) -> None:
    assert env_of(render(chart, values).gateway).get("NANOROUTE_REDIS_URL") == expected


def test_client_keys_from_a_secret_are_mounted_for_the_configs_secret_files(chart: helm.Chart) -> None:
    rendered = render(chart, {"auth": {"keysSecret": "nanoroute-keys"}})
    mounts = {m["name"]: m for m in container(rendered.gateway)["volumeMounts"]}
    assert mounts["keys"] == {"name": "keys", "mountPath": "/etc/nanoroute/keys", "readOnly": True}  # no subPath
    assert mounts["config"] == {"name": "config", "mountPath": "/etc/nanoroute", "readOnly": True}
    volume = next(v for v in pod(rendered.gateway)["volumes"] if v["name"] == "keys")
    assert volume == {"name": "keys", "secret": {"secretName": "nanoroute-keys"}}
    assert "WARNING: no client keys" not in rendered.notes  # the config's keys name those files
    assert "secret_file: /etc/nanoroute/keys/<key>" in rendered.notes
    default = render(chart).gateway
    assert "keys" not in {v["name"] for v in pod(default)["volumes"]}
    assert "keys" not in {m["name"] for m in container(default)["volumeMounts"]}


def test_the_data_dir_is_a_writable_volume_an_empty_dir_by_default(chart: helm.Chart) -> None:
    """Captures (policies with `capture:`) need a writable NANOROUTE_DATA_DIR: the root is read-only."""
    deployment = render(chart).gateway
    assert env_of(deployment)["NANOROUTE_DATA_DIR"] == {"value": "/var/lib/nanoroute"}
    assert "POD_NAME" not in env_of(deployment)
    mount = next(m for m in container(deployment)["volumeMounts"] if m["name"] == "data")
    assert mount == {"name": "data", "mountPath": "/var/lib/nanoroute"}
    data = next(v for v in pod(deployment)["volumes"] if v["name"] == "data")
    assert data == {"name": "data", "emptyDir": {"sizeLimit": "4Gi"}}  # data.sizeLimit: a full dir evicts the pod
    sized = render(chart, {"data": {"sizeLimit": "500Mi"}, "tmpSizeLimit": "64Mi"}).gateway
    assert {v["name"]: v["emptyDir"]["sizeLimit"] for v in pod(sized)["volumes"] if "emptyDir" in v} == \
        {"data": "500Mi", "tmp": "64Mi"}


@pytest.mark.parametrize(("data", "source"), [
    ({"existingClaim": "captures"}, {"persistentVolumeClaim": {"claimName": "captures"}}),
    ({"volume": {"nfs": {"server": "nfs.local", "path": "/exports/nanoroute"}}},
     {"nfs": {"server": "nfs.local", "path": "/exports/nanoroute"}}),
])
def test_a_shared_data_volume_gives_each_pod_a_folder_of_its_own(chart: helm.Chart, data: dict[str, Any],
                                                                 source: dict[str, Any]) -> None:
    deployment = render(chart, {"data": {"mountPath": "/data", **data}, "replicaCount": 3}).gateway
    env = env_of(deployment)
    assert env["NANOROUTE_DATA_DIR"] == {"value": "/data"}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    mount = next(m for m in container(deployment)["volumeMounts"] if m["name"] == "data")
    assert mount == {"name": "data", "mountPath": "/data", "subPathExpr": "$(POD_NAME)"}
    assert next(v for v in pod(deployment)["volumes"] if v["name"] == "data") == {"name": "data", **source}


def test_the_pod_runs_as_the_images_user_with_a_read_only_root(chart: helm.Chart) -> None:
    deployment = render(chart).gateway
    user = re.search(r"^USER (\d+):(\d+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert user, "the Dockerfile names its user by number"
    security = pod(deployment)["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(user[1]), int(user[2]))
    assert security["runAsNonRoot"] is True
    gateway = container(deployment)
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in gateway["volumeMounts"]  # metrics files of several workers
    assert pod(deployment)["automountServiceAccountToken"] is False


def test_rolling_updates_keep_the_old_pods_until_new_ones_are_ready(chart: helm.Chart) -> None:
    deployment = render(chart).gateway
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    stop = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert stop == ["sleep", "5"]
    assert pod(deployment)["terminationGracePeriodSeconds"] > 30 + 5  # uvicorn's drain plus the sleep


def test_the_autoscaler_owns_the_replica_count(chart: helm.Chart) -> None:
    assert render(chart).gateway["spec"]["replicas"] == 2
    rendered = render(chart, load_values(CHART / "ci" / "monitoring-values.yaml"))
    assert "replicas" not in rendered.gateway["spec"]
    hpa = rendered.one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": rendered.gateway["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}


def test_the_disruption_budget_and_network_policy_select_the_gateway_pods(chart: helm.Chart) -> None:
    rendered = render(chart, load_values(CHART / "ci" / "monitoring-values.yaml"))
    labels = rendered.gateway["spec"]["template"]["metadata"]["labels"].items()
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 2, "selector": pdb["spec"]["selector"]}
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels
    policy = rendered.one("NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress stays open: hosted providers, DNS
    api, scrape = policy["spec"]["ingress"]  # the API's clients and the scraper, each on its own port
    assert api["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert scrape["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert (len(api["from"]), len(scrape["from"])) == (1, 1)
    assert render(chart).all("NetworkPolicy") == []


def test_every_top_level_config_section_passes_through_the_chart(chart: helm.Chart) -> None:
    from gateway.config.loader import load_text

    config = yaml.safe_load(render(chart).config_text())
    config["pinning"] = {"allow_keys": ["ops"]}
    config["capture"] = {"redact": {"builtin": ["email"], "patterns": {"order": "ORD-[0-9]{6}"}}}
    config["policies"][0]["capture"] = {"sample": 0.1}
    rendered = yaml.safe_load(render(chart, {"config": config}).config_text())
    table = load_text(yaml.safe_dump(rendered))
    assert table.pin_keys == frozenset({"ops"})
    assert table.policies[0].capture is not None


def test_the_metrics_port_admits_the_api_peers_unless_given_its_own(chart: helm.Chart) -> None:
    apps = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}}}
    rendered = render(chart, {"networkPolicy": {"enabled": True, "ingressFrom": [apps]}})
    api, scrape = rendered.one("NetworkPolicy")["spec"]["ingress"]
    assert api["from"] == scrape["from"] == [apps]  # who could read /metrics on the API port before
    assert "Metrics: http://test-nanoroute-metrics.llm.svc:9090/metrics, not on the API port" in rendered.notes
