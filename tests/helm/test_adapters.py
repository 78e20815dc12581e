"""LoRA adapter manifests shipped to the gateway: a ConfigMap mounted beside the config, named by its
adapters_dir, rolling the pods when a manifest changes, and loading with the gateway's own loader."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from gateway.config.loader import load_file
from gateway.config.schema import Name
from tests.helm.chart import CHART, RELEASE, Obj, Rendered, container, env_of, load_values, render, write_pod_files

ADAPTERS = f"{RELEASE}-nanoroute-adapters"
TRIAGE: dict[str, Any] = {"base_model": "base", "tasks": ["triage"], "path": "/adapters/ticket-triage", "rank": 8,
          "eval": {"metric": "exact_match", "adapter": 0.91, "base": 0.42}}
CONFIG: dict[str, Any] = {"backends": {"local": {"type": "vllm", "urls": ["http://vllm:8000/v1"]}},
          "models": {"base": {"backend": "local"}, "ticket-triage": {"backend": "local", "adapter": "ticket-triage"}},
          "policies": [{"name": "default", "match": {}, "candidates": ["ticket-triage"], "fallback": ["base"]}]}
WITH_MANIFESTS = {"config": CONFIG, "adapterManifests": {"ticket-triage": TRIAGE}}


def pod_template(rendered: Rendered) -> Obj:
    template: Obj = rendered.gateway["spec"]["template"]
    return template


def pod_annotations(rendered: Rendered) -> dict[str, str]:
    found: dict[str, str] = pod_template(rendered)["metadata"].get("annotations", {})
    return found


def adapters_volume(rendered: Rendered) -> Obj | None:
    return next((v for v in pod_template(rendered)["spec"]["volumes"] if v["name"] == "adapters"), None)


def adapters_mount(rendered: Rendered) -> Obj | None:
    return next((m for m in container(rendered.gateway)["volumeMounts"] if m["name"] == "adapters"), None)


def test_without_manifests_nothing_changes(chart: helm.Chart) -> None:
    rendered = render(chart)
    assert [o for o in rendered.all("ConfigMap") if o["metadata"]["name"] == ADAPTERS] == []
    assert adapters_volume(rendered) is None and adapters_mount(rendered) is None
    assert "adapters_dir" not in yaml.safe_load(rendered.config_text())
    assert set(pod_annotations(rendered)) == {"checksum/config"}
    assert "Adapter manifests" not in rendered.notes


def test_manifests_are_mounted_beside_the_config_and_named_by_adapters_dir(chart: helm.Chart) -> None:
    rendered = render(chart, WITH_MANIFESTS)
    data = rendered.one("ConfigMap", ADAPTERS)["data"]
    assert list(data) == ["ticket-triage.yaml"]
    assert yaml.safe_load(data["ticket-triage.yaml"]) == {**TRIAGE, "name": "ticket-triage"}
    assert adapters_volume(rendered) == {"name": "adapters", "configMap": {"name": ADAPTERS}}
    mount = adapters_mount(rendered)
    assert mount == {"name": "adapters", "mountPath": "/etc/nanoroute-adapters", "readOnly": True}
    config_file = env_of(rendered.gateway)["NANOROUTE_CONFIG"]["value"]
    config_dir = posixpath.dirname(config_file)
    assert not mount["mountPath"].startswith(f"{config_dir}/")  # a folder of its own, not in the config's mount
    adapters_dir = yaml.safe_load(rendered.config_text())["adapters_dir"]
    assert posixpath.normpath(posixpath.join(config_dir, adapters_dir)) == mount["mountPath"]
    assert f"ConfigMap {ADAPTERS}, mounted at /etc/nanoroute-adapters; a change rolls the pods" in rendered.notes


def test_the_configs_own_adapters_dir_wins(chart: helm.Chart) -> None:
    rendered = render(chart, {**WITH_MANIFESTS, "config": {**CONFIG, "adapters_dir": "/etc/nanoroute-adapters"}})
    assert yaml.safe_load(rendered.config_text())["adapters_dir"] == "/etc/nanoroute-adapters"
    assert adapters_mount(rendered) is not None


def test_a_manifest_change_rolls_the_pods_and_nothing_else_does(chart: helm.Chart) -> None:
    base = pod_annotations(render(chart, WITH_MANIFESTS))
    assert len(base["checksum/adapters"]) == 64
    rescored = {**TRIAGE, "eval": {**TRIAGE["eval"], "adapter": 0.95}}
    rolled = pod_annotations(render(chart, {**WITH_MANIFESTS, "adapterManifests": {"ticket-triage": rescored}}))
    assert rolled["checksum/adapters"] != base["checksum/adapters"]
    assert rolled["checksum/config"] == base["checksum/config"]
    same = pod_annotations(render(chart, {**WITH_MANIFESTS, "replicaCount": 5}))
    assert same == base


def test_live_reload_keeps_the_pods_when_a_manifest_changes(chart: helm.Chart) -> None:
    live = render(chart, {**WITH_MANIFESTS, "configReload": "live"})
    assert "checksum/adapters" not in pod_annotations(live)
    assert "each gateway reloads when the kubelet updates them" in live.notes


def test_an_existing_configmap_of_manifests_is_mounted_the_same_way(chart: helm.Chart) -> None:
    rendered = render(chart, {"config": CONFIG, "existingAdapterManifestsConfigMap": "lora-manifests"})
    assert [o for o in rendered.all("ConfigMap") if o["metadata"]["name"] == ADAPTERS] == []
    assert adapters_volume(rendered) == {"name": "adapters", "configMap": {"name": "lora-manifests"}}
    assert adapters_mount(rendered) is not None
    assert yaml.safe_load(rendered.config_text())["adapters_dir"] == "../nanoroute-adapters"
    assert "checksum/adapters" not in pod_annotations(rendered)  # the chart cannot see that ConfigMap's content
    assert "lora-manifests" in rendered.notes and "not managed by this chart" in rendered.notes


def test_the_rendered_config_and_manifests_load_with_the_adapter_resolved(chart: helm.Chart, tmp_path: Path) -> None:
    rendered = render(chart, load_values(CHART / "ci" / "adapters-values.yaml"))
    table = load_file(write_pod_files(rendered, tmp_path))
    model = table.models["ticket-triage"]
    assert model.upstream_name == "ticket-triage"
    assert model.adapter_path == "/adapters/ticket-triage"
    assert model.adapter_base == "base"
    assert model.quality_for("triage") == 0.91  # the manifest's eval score
    triage = next(p for p in table.policies if p.name == "triage")
    assert model in triage.candidates
    vllm = container(rendered.one("Deployment", f"{RELEASE}-nanoroute-vllm"))
    volume = next(m["mountPath"] for m in vllm["volumeMounts"] if m["name"] == "adapters")
    assert model.adapter_path.startswith(f"{volume}/")  # where vLLM's pods see it
    assert "outside vLLM's adapters volume" not in rendered.notes


def test_notes_warn_about_a_path_outside_the_vllm_adapters_volume(chart: helm.Chart) -> None:
    values = {**WITH_MANIFESTS, "vllm": {"enabled": True},
              "adapterManifests": {"ticket-triage": {**TRIAGE, "path": "/models/ticket-triage"}}}
    notes = render(chart, values).notes
    assert "adapters volume (/adapters): ticket-triage (/models/ticket-triage)" in notes


@pytest.mark.parametrize(("values", "complaint"), [
    ({"adapterManifests": {"ticket-triage": "path: /adapters/ticket-triage"}},
     "at '/adapterManifests/ticket-triage': got string, want object"),
    ({"adapterManifests": {"ticket-triage": {**TRIAGE, "path": "adapters/ticket-triage"}}},
     "/adapterManifests/ticket-triage/path"),
    ({"adapterManifests": {"org/triage": TRIAGE}}, "invalid propertyName 'org/triage'"),
    ({"existingAdapterManifestsConfigMap": "Lora_Manifests"}, "/existingAdapterManifestsConfigMap"),
])
def test_the_schema_rejects_bad_manifests(chart: helm.Chart, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError) as info:
        chart.validate_schema(values)
    assert complaint in str(info.value)


NAMES = ["ticket-triage", "support.v3", "Qwen2_5-lora", "a", "x" * 128, "x" * 129, "-lead", ".hidden",
         "has space", "triage\n", "org/triage", "triage:v2", "triage@2", "triagé"]


@pytest.mark.parametrize("name", NAMES)
def test_the_schema_takes_gateway_adapter_names_that_a_configmap_key_can_hold(chart: helm.Chart, name: str) -> None:
    try:
        TypeAdapter(Name).validate_python(name)
        gateway_takes = True
    except ValidationError:
        gateway_takes = False
    try:
        chart.validate_schema({"adapterManifests": {name: TRIAGE}})
        chart_takes = True
    except helm.HelmValuesError:
        chart_takes = False
    # ConfigMap keys are [-._a-zA-Z0-9]+: of the gateway's names, those with ':', '/' or '@' cannot be keys.
    assert chart_takes == (gateway_takes and not set(name) & set(":/@"))


@pytest.mark.parametrize(("values", "complaint"), [
    ({"adapterManifests": {"ticket-triage": TRIAGE}, "existingAdapterManifestsConfigMap": "lora-manifests"},
     "give adapterManifests or existingAdapterManifestsConfigMap, not both"),
    ({"adapterManifests": {"ticket-triage": {**TRIAGE, "name": "triage-v2"}}},
     'adapterManifests.ticket-triage: name "triage-v2" differs from its key'),
    ({"config": CONFIG}, "no manifest for: ticket-triage (model ticket-triage)"),
    ({"config": CONFIG, "adapterManifests": {"other": TRIAGE}}, "no manifest for: ticket-triage (model ticket-triage)"),
])
def test_manifests_that_cannot_load_stop_the_install(chart: helm.Chart, values: dict[str, Any],
                                                     complaint: str) -> None:
    chart.validate_schema(values)
    with pytest.raises(helm.HelmRenderError) as info:
        render(chart, values)
    assert complaint in str(info.value)
