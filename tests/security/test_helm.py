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
