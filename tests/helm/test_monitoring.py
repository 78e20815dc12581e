"""The ServiceMonitor and the Grafana dashboard ConfigMap: off unless enabled, and pointing at the right things."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import helm_python as helm
import pytest

from tests.helm.chart import CHART, RELEASE, load_values, render

DASHBOARD = CHART / "dashboards" / "nanoroute.json"


def test_nothing_for_prometheus_or_grafana_unless_enabled(chart: helm.Chart) -> None:
    kinds = render(chart).kinds()
    assert "ServiceMonitor" not in kinds
    assert [o for o in render(chart).all("ConfigMap") if o["metadata"]["name"].endswith("-dashboard")] == []


def test_the_service_monitor_scrapes_every_service_of_the_release(chart: helm.Chart) -> None:
    values = load_values(CHART / "ci" / "monitoring-values.yaml")
    rendered = render(chart, {**values, "vllm": {"enabled": True}})
    monitor = rendered.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"].items()
    selected = [s["metadata"]["name"] for s in rendered.all("Service") if selector <= s["metadata"]["labels"].items()]
    assert sorted(selected) == [f"{RELEASE}-nanoroute", f"{RELEASE}-nanoroute-vllm"]
    [endpoint] = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("http", "/metrics", "15s")
    for service in rendered.all("Service"):
        assert "http" in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["metricRelabelings"][0]["action"] == "drop"


@pytest.mark.skipif(not DASHBOARD.exists(), reason="the dashboard JSON is not in the chart yet")
def test_the_dashboard_ships_as_a_configmap_for_the_grafana_sidecar(chart: helm.Chart) -> None:
    rendered = render(chart, load_values(CHART / "ci" / "monitoring-values.yaml"))
    configmap = rendered.one("ConfigMap", f"{RELEASE}-nanoroute-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "LLM"}
    assert json.loads(configmap["data"]["nanoroute.json"]) == json.loads(DASHBOARD.read_text())
    assert len(json.dumps(configmap)) < 1024 * 1024  # a ConfigMap holds at most 1 MiB


def test_no_dashboard_configmap_when_the_chart_has_no_dashboard(tmp_path: Path) -> None:
    copy = tmp_path / "nanoroute"
    shutil.copytree(CHART, copy)
    shutil.rmtree(copy / "dashboards", ignore_errors=True)
    with helm.Chart.load(copy) as bare:
        rendered = render(bare, {"grafanaDashboard": {"enabled": True}})
    assert [o for o in rendered.all("ConfigMap") if o["metadata"]["name"].endswith("-dashboard")] == []
