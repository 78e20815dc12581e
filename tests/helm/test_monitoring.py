"""The ServiceMonitor and the Grafana dashboard ConfigMap: off unless enabled, and pointing at the right things."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import helm_python as helm
import jsonschema
import pytest

from tests.helm.chart import CHART, RELEASE, Obj, Rendered, env_of, load_values, render

DASHBOARD = CHART / "dashboards" / "nanoroute.json"
SERVICEMONITOR_SCHEMA = Path(__file__).parent / "schemas" / "servicemonitor-v1.json"


def test_nothing_for_prometheus_or_grafana_unless_enabled(chart: helm.Chart) -> None:
    kinds = render(chart).kinds()
    assert "ServiceMonitor" not in kinds
    assert [o for o in render(chart).all("ConfigMap") if o["metadata"]["name"].endswith("-dashboard")] == []


def scraped(rendered: Rendered, monitor: Obj) -> list[tuple[str, int]]:
    """The (Service, port) pairs a ServiceMonitor scrapes: the selected Services' ports of the endpoint's name."""
    selector = monitor["spec"]["selector"]["matchLabels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    return [(s["metadata"]["name"], p["port"]) for s in rendered.all("Service")
            if selector <= s["metadata"]["labels"].items() for p in s["spec"]["ports"] if p["name"] == endpoint["port"]]


def test_the_service_monitors_scrape_the_gateways_metrics_port_and_vllm(chart: helm.Chart) -> None:
    """The gateway serves /metrics on a port of its own (metrics.port), vLLM on its API port: one monitor each."""
    values = load_values(CHART / "ci" / "monitoring-values.yaml")
    rendered = render(chart, {**values, "vllm": {"enabled": True}})
    gateway = rendered.one("ServiceMonitor", f"{RELEASE}-nanoroute")
    vllm = rendered.one("ServiceMonitor", f"{RELEASE}-nanoroute-vllm")
    assert scraped(rendered, gateway) == [(f"{RELEASE}-nanoroute-metrics", 9090)]
    assert scraped(rendered, vllm) == [(f"{RELEASE}-nanoroute-vllm", 8000)]
    for monitor in (gateway, vllm):
        jsonschema.validate(monitor, json.loads(SERVICEMONITOR_SCHEMA.read_text()))
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        [endpoint] = monitor["spec"]["endpoints"]
        assert (endpoint["path"], endpoint["interval"]) == ("/metrics", "15s")
        assert endpoint["metricRelabelings"][0]["action"] == "drop"


def test_without_a_metrics_port_the_gateway_is_scraped_on_its_api_port(chart: helm.Chart) -> None:
    rendered = render(chart, {"serviceMonitor": {"enabled": True}, "metrics": {"port": None, "onApiPort": True}})
    assert scraped(rendered, rendered.one("ServiceMonitor")) == [(f"{RELEASE}-nanoroute", 8080)]
    env = env_of(rendered.gateway)
    assert "NANOROUTE_METRICS_PORT" not in env and "NANOROUTE_METRICS_ON_API" not in env
    assert [s["metadata"]["name"] for s in rendered.all("Service")] == [f"{RELEASE}-nanoroute"]


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
