"""Each value scenario (the chart's defaults and helm/nanoroute/ci/*-values.yaml) renders into objects that
Kubernetes accepts, and into a gateway config that `nanoroute check` accepts with the environment the pod gets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.helm.chart import (
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    Obj,
    Rendered,
    env_of,
    load_values,
    nanoroute_check,
    render,
    write_pod_files,
)

# The chart's oldest supported Kubernetes (Chart.yaml kubeVersion) and the newest that kubernetes-validate knows.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"):
        json.loads((Path(__file__).parent / "schemas" / "servicemonitor-v1.json").read_text()),
}

CASES = [pytest.param(None, id="defaults"),
         *(pytest.param(p, id=p.name.removesuffix("-values.yaml")) for p in SCENARIOS)]


def test_the_scenarios_are_there() -> None:
    names = {p.name for p in SCENARIOS}
    assert {"minimal-values.yaml", "vllm-values.yaml", "monitoring-values.yaml",
            "existing-secret-values.yaml", "adapters-values.yaml", "redis-values.yaml"} <= names


@pytest.fixture(params=CASES)
def scenario(request: pytest.FixtureRequest, chart: helm.Chart) -> tuple[dict[str, Any], Rendered]:
    values = load_values(request.param) if request.param else {}
    return values, render(chart, values)


def _validate(obj: Obj, version: str) -> None:
    crd = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if crd is not None:
        jsonschema.validate(obj, crd)
        return
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path)
        pytest.fail(f"{obj['kind']} {obj['metadata']['name']} at {where}: {exc.message} (Kubernetes {version})")


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_object_is_valid_kubernetes(scenario: tuple[dict[str, Any], Rendered], version: str) -> None:
    _, rendered = scenario
    assert rendered.objects
    for obj in rendered.objects:
        _validate(obj, version)


def test_every_object_is_labelled_and_namespaced(scenario: tuple[dict[str, Any], Rendered]) -> None:
    _, rendered = scenario
    for obj in rendered.objects:
        meta = obj["metadata"]
        assert meta["namespace"] == NAMESPACE, meta["name"]
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert meta["name"].startswith(f"{RELEASE}-nanoroute"), meta["name"]
    names = [(o["kind"], o["metadata"]["name"]) for o in rendered.objects]
    assert len(names) == len(set(names)), "two objects of one kind share a name"


def test_each_service_selects_the_pods_of_one_workload(scenario: tuple[dict[str, Any], Rendered]) -> None:
    _, rendered = scenario
    workloads = [*rendered.all("Deployment"), *rendered.all("StatefulSet")]
    for service in rendered.all("Service"):
        selector = service["spec"]["selector"].items()
        matched = [w for w in workloads if selector <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matched) == 1, service["metadata"]["name"]
        workload = matched[0]
        assert workload["spec"]["selector"]["matchLabels"].items() <= \
            workload["spec"]["template"]["metadata"]["labels"].items()
        ports = {p["name"] for c in workload["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    for statefulset in rendered.all("StatefulSet"):  # its governing Service is one of the chart's
        assert ("Service", statefulset["spec"]["serviceName"]) in \
            {(o["kind"], o["metadata"]["name"]) for o in rendered.objects}


def test_the_rendered_config_passes_nanoroute_check(scenario: tuple[dict[str, Any], Rendered],
                                                    tmp_path: Path) -> None:
    values, rendered = scenario
    if values.get("existingConfigMap"):
        pytest.skip("the config lives in the operator's own ConfigMap")
    text = rendered.config_text()
    backends = yaml.safe_load(text)["backends"]
    needed = {b["api_key_env"] for b in backends.values() if b.get("api_key_env")}
    container = rendered.gateway["spec"]["template"]["spec"]["containers"][0]
    if container.get("envFrom"):
        provided = needed  # an existing Secret's keys become variables; the chart cannot see which
    else:
        provided = {name for name, source in env_of(rendered.gateway).items() if "secretKeyRef" in source}
        if values:  # the bare defaults leave the key unset on purpose, and NOTES.txt warns about it
            assert needed <= provided, f"no providerKeys entry sets {sorted(needed - provided)}"
    # The config's folder and the adapter manifests' beside it, as the pod mounts them.
    result = nanoroute_check(write_pod_files(rendered, tmp_path), {name: "sk-test" for name in provided})
    assert result.returncode == 0, result.stderr
    assert ": valid (version" in result.stdout
    if needed <= provided:
        assert not [line for line in result.stderr.splitlines() if line.startswith("warning:")], result.stderr


def test_notes_say_how_to_reach_the_gateway(scenario: tuple[dict[str, Any], Rendered]) -> None:
    _, rendered = scenario
    assert f"http://{RELEASE}-nanoroute.{NAMESPACE}.svc:8080/v1" in rendered.notes
    assert f"port-forward svc/{RELEASE}-nanoroute" in rendered.notes


def test_vendored_crd_schema_rejects_a_misspelt_key() -> None:
    schema = CRD_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")]
    good = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"},
            "spec": {"selector": {}, "endpoints": [{"port": "http", "interval": "30s"}]}}
    jsonschema.validate(good, schema)
    bad = json.loads(json.dumps(good))
    bad["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
