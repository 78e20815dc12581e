"""extraVolumes and extraVolumeMounts: files of the operator's in the gateway pods, e.g. a learned router's
artifact folder (docs/router.md), and a policy that loads it from where they are mounted."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from gateway.config.loader import load_file
from tests.helm.chart import CHART, RELEASE, container, load_values, render, write_pod_files

ROUTERS_VOLUME = {"name": "routers", "persistentVolumeClaim": {"claimName": "nanoroute-routers", "readOnly": True}}
ROUTERS_MOUNT = {"name": "routers", "mountPath": "/etc/nanoroute-routers", "readOnly": True}
ROUTERS = {"extraVolumes": [ROUTERS_VOLUME], "extraVolumeMounts": [ROUTERS_MOUNT]}
OWN = ["config", "keys", "adapters", "data", "tmp"]


def volumes(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["volumes"]
    return found


def test_the_default_adds_no_volume_and_no_mount(chart: helm.Chart) -> None:
    deployment = render(chart).gateway
    assert [v["name"] for v in volumes(deployment)] == ["config", "data", "tmp"]
    assert [m["name"] for m in container(deployment)["volumeMounts"]] == ["config", "data", "tmp"]


def test_extra_volumes_and_mounts_render_as_given_after_the_charts_own(chart: helm.Chart) -> None:
    values = {**ROUTERS, "auth": {"keysSecret": "nanoroute-keys"}}
    deployment = render(chart, values).gateway
    assert [v["name"] for v in volumes(deployment)] == ["config", "keys", "data", "tmp", "routers"]
    assert volumes(deployment)[-1] == ROUTERS_VOLUME
    mounts = container(deployment)["volumeMounts"]
    assert [m["name"] for m in mounts] == ["config", "keys", "data", "tmp", "routers"]
    assert mounts[-1] == ROUTERS_MOUNT
    for version in ("1.27.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(deployment, version, strict=True)


def test_several_of_each_keep_their_order_and_only_the_gateway_gets_them(chart: helm.Chart) -> None:
    more = {"name": "prompts", "configMap": {"name": "triage-prompts"}}
    values = {**load_values(CHART / "ci" / "vllm-values.yaml"),
              "extraVolumes": [ROUTERS_VOLUME, more],
              "extraVolumeMounts": [ROUTERS_MOUNT, {"name": "prompts", "mountPath": "/etc/prompts"},
                                    {"name": "data", "mountPath": "/var/lib/routers", "subPath": "routers"}]}
    rendered = render(chart, values)
    assert volumes(rendered.gateway)[-2:] == [ROUTERS_VOLUME, more]
    assert container(rendered.gateway)["volumeMounts"][-3:] == values["extraVolumeMounts"]
    # vLLM's pods do not run the gateway: they get none of them.
    vllm = rendered.one("Deployment", f"{RELEASE}-nanoroute-vllm")
    assert not {"routers", "prompts"} & {v["name"] for v in volumes(vllm)}


@pytest.mark.parametrize("name", OWN)
def test_a_volume_named_like_one_of_the_charts_stops_the_install(chart: helm.Chart, name: str) -> None:
    values = {"extraVolumes": [{**ROUTERS_VOLUME, "name": name}]}
    chart.validate_schema(values)
    with pytest.raises(helm.HelmRenderError) as info:
        render(chart, values)
    assert (f'extraVolumes: "{name}" is the name of one of the chart\'s own volumes '
            "(config, keys, adapters, data, tmp): give yours another name") in str(info.value)


def test_a_volume_given_twice_stops_the_install(chart: helm.Chart) -> None:
    values = {"extraVolumes": [ROUTERS_VOLUME, {"name": "routers", "emptyDir": {}}]}
    with pytest.raises(helm.HelmRenderError) as info:
        render(chart, values)
    assert 'extraVolumes: "routers" is given twice' in str(info.value)


@pytest.mark.parametrize(("values", "complaint"), [
    ({"extraVolumes": ROUTERS_VOLUME}, "at '/extraVolumes': got object, want array"),
    ({"extraVolumes": "routers"}, "at '/extraVolumes': got string, want array"),
    ({"extraVolumeMounts": ROUTERS_MOUNT}, "at '/extraVolumeMounts': got object, want array"),
    ({"extraVolumes": ["routers"]}, "at '/extraVolumes/0': got string, want object"),
    ({"extraVolumes": [{"persistentVolumeClaim": {"claimName": "nanoroute-routers"}}]},
     "at '/extraVolumes/0': missing property 'name'"),
    ({"extraVolumes": [{**ROUTERS_VOLUME, "name": "Routers"}]}, "/extraVolumes/0/name"),
    ({"extraVolumeMounts": [{"name": "routers"}]}, "at '/extraVolumeMounts/0': missing property 'mountPath'"),
    ({"extraVolumeMounts": [{**ROUTERS_MOUNT, "mountPath": "etc/nanoroute-routers"}]},
     "/extraVolumeMounts/0/mountPath"),
])
def test_the_schema_rejects_what_is_not_a_list_of_volumes_or_mounts(chart: helm.Chart, values: dict[str, Any],
                                                                     complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError) as info:
        chart.validate_schema(values)
    assert complaint in str(info.value)


def test_a_learned_policy_loads_its_router_from_the_mounted_volume(chart: helm.Chart, router_artifact: Path,
                                                                    tmp_path: Path) -> None:
    """The pod's files laid out under tmp_path: the chart's ConfigMaps, and the claim's content at the extra
    mount. `router:` relative to the config's folder (/etc/nanoroute) names the same folder as
    /etc/nanoroute-routers/triage does in the pod, and loads here too."""
    config = {
        "models": {"cheap": {"backend": "openai", "price": {"input": 1, "output": 1}},
                   "strong": {"backend": "openai", "price": {"input": 0.5, "output": 10}}},
        "policies": [{"name": "triage", "match": {"task": "triage"}, "strategy": "learned",
                      "router": "../nanoroute-routers/triage", "candidates": ["strong", "cheap"],
                      "require": {"min_quality": 0.9}},
                     {"name": "default", "match": {}, "strategy": "ordered", "candidates": ["gpt-4o-mini"]}],
    }
    rendered = render(chart, {**ROUTERS, "config": config})
    path = write_pod_files(rendered, tmp_path)
    mount = next(m for m in container(rendered.gateway)["volumeMounts"] if m["name"] == "routers")
    shutil.copytree(router_artifact, tmp_path / mount["mountPath"].lstrip("/") / "triage")
    table = load_file(path)
    [learned] = [p.learned for p in table.policies if p.learned is not None]
    assert learned.router.path.resolve() == (tmp_path / "etc" / "nanoroute-routers" / "triage").resolve()
    assert learned.order == ("cheap", "strong")
