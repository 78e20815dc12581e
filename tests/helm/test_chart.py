"""The chart as a whole: Helm's linter, values.schema.json, and the cross-value checks in _helpers.tpl."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.helm.chart import CHART, SCENARIOS, load_values, render

INFO, WARNING, ERROR = 1, 2, 3


@pytest.mark.parametrize("values_file", [None, *SCENARIOS], ids=lambda p: p.name if p else "defaults")
def test_helm_lint_finds_nothing_to_fix(values_file: Any) -> None:
    values = load_values(values_file) if values_file else None
    report = helm.lint(CHART, values, strict=True, namespace="llm", kube_version="v1.27.0")
    assert report["errors"] == []
    # Only advice remains (an icon is recommended for chart repositories' web pages).
    assert [m for m in report["messages"] if m["severity"] > INFO] == []


def test_helm_runs_the_real_engine() -> None:
    assert helm.helm_sdk_version().startswith("v4.")


@pytest.mark.parametrize(("values", "complaint"), [
    ({"replicaCount": "two"}, "/replicaCount"),
    ({"replicas": 2}, "additional properties 'replicas' not allowed"),
    ({"image": {"repository": "nanoroute", "tag": "1", "pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"providerKeys": [{"env": "OPENAI-KEY", "secretName": "s", "key": "k"}]}, "/providerKeys/0/env"),
    ({"providerKeys": [{"env": "OPENAI_API_KEY", "key": "k"}]}, "secretName"),
    ({"config": {"backends": None}}, "backends"),
    ({"redis": {"url": "http://redis:6379"}}, "/redis/url"),
    ({"data": {"mountPath": "data"}}, "/data/mountPath"),
    ({"data": {"sizeLimit": "4 GB"}}, "/data/sizeLimit"),
    ({"tmpSizeLimit": None}, "tmpSizeLimit"),
    ({"serviceMonitor": {"enabled": True, "interval": "30 seconds"}}, "/serviceMonitor/interval"),
    ({"vllm": {"enabled": True, "lora": {"enabled": True, "maxLoraRank": 12}}}, "/vllm/lora/maxLoraRank"),
    ({"vllm": {"enabled": True, "gpuMemoryUtilization": 1.5}}, "/vllm/gpuMemoryUtilization"),
    ({"vllm": {"enabled": True, "homeSizeLimit": "lots"}}, "/vllm/homeSizeLimit"),
    ({"redis": {"bundled": {"enabled": True, "replicas": 3}}}, "additional properties 'replicas' not allowed"),
    ({"redis": {"bundled": {"enabled": True, "maxmemory": "200 MB"}}}, "/redis/bundled/maxmemory"),
    ({"redis": {"bundled": {"enabled": True, "persistence": {"size": "2 GB"}}}}, "/redis/bundled/persistence/size"),
    ({"redis": {"bundled": {"enabled": True, "auth": {"existingSecret": "Redis_Password"}}}},
     "/redis/bundled/auth/existingSecret"),
    ({"auth": {"keysSecret": "Client Keys"}}, "/auth/keysSecret"),
])
def test_the_schema_rejects_bad_values(chart: helm.Chart, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError) as info:
        chart.validate_schema(values)
    assert complaint in str(info.value)
    with pytest.raises(helm.HelmError):  # and an install would refuse them too
        render(chart, values)


@pytest.mark.parametrize(("values", "complaint"), [
    ({"hpa": {"enabled": True, "targetCPUUtilizationPercentage": None}}, "hpa.enabled needs"),
    ({"hpa": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}, "at least hpa.minReplicas"),
    ({"pdb": {"enabled": True, "maxUnavailable": None}}, "pdb.enabled needs"),
    ({"vllm": {"enabled": True, "lora": {"enabled": False, "modules": [{"name": "a", "path": "a"}]}}},
     "vllm.lora.modules needs vllm.lora.enabled"),
    ({"metrics": {"port": None}}, "set metrics.onApiPort: true"),
    ({"metrics": {"port": 8080}}, "must differ from the API port"),
    ({"redis": {"url": "redis://redis:6379/0", "bundled": {"enabled": True}}},
     "redis.bundled.enabled runs a Redis for the gateway, and redis.url or redis.existingSecret names another"),
    ({"redis": {"existingSecret": "nanoroute-redis", "bundled": {"enabled": True}}}, "give one, not both"),
])
def test_contradicting_values_stop_the_install(chart: helm.Chart, values: dict[str, Any], complaint: str) -> None:
    chart.validate_schema(values)
    with pytest.raises(helm.HelmRenderError) as info:
        render(chart, values)
    assert complaint in str(info.value)


def test_the_chart_defaults_install_the_gateway_alone(chart: helm.Chart) -> None:
    rendered = render(chart)
    # Two Services: the API's, and the metrics port's (metrics.port).
    assert rendered.kinds() == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "Service",
                                "ServiceAccount"]
