"""What the Helm chart defends against, shown on the objects it renders (helm/nanoroute, Helm's own engine).

Each test is named after the attack or accident it resists; tests/helm/ checks the chart's features.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest

from tests.helm.chart import CHART, SCENARIOS, Obj, load_values, render


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
        for container in pod_spec(deployment)["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert not security.get("privileged")


def test_a_process_taken_over_in_vllm_cannot_rewrite_its_image(chart: helm.Chart) -> None:
    vllm = next(d for d in deployments_with_vllm(chart) if d["metadata"]["name"].endswith("-vllm"))
    [container] = pod_spec(vllm)["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # ... and vLLM still runs: every folder it, torch, Triton and Hugging Face write to is a writable mount.
    writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    env = {e["name"]: e.get("value") for e in container["env"]}
    folders = ["HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "VLLM_CACHE_ROOT", "TRITON_CACHE_DIR",
               "TORCHINDUCTOR_CACHE_DIR", "HF_HOME"]
    for name in folders:
        assert any(env[name] == m or env[name].startswith(m + "/") for m in writable), (name, env[name])
    assert {"/tmp", "/dev/shm"} <= set(writable)
    assert env["USER"]  # torch reads it for its default cache folder; the uid has no passwd entry
