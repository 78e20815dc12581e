"""The Grafana dashboard shipped with the chart: well formed, its metric names are the gateway's own,
and every PromQL expression parses in the real Prometheus (`promtool check rules`).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.debian import program
from tests.fakes.servers import Servers, free_port

DASHBOARD = Path(__file__).resolve().parents[2] / "helm" / "nanoroute" / "dashboards" / "nanoroute.json"
DATASOURCE = "${datasource}"
METRIC = re.compile(r"\bnanoroute_[a-z_]+")
RANGE = re.compile(r"\[([^\]]*)\]")
# Grafana's variables, replaced by what Grafana would send to Prometheus.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h", "$policy": ".*", "$model": ".*"}
LABEL_VALUES = re.compile(r"^label_values\((.+),\s*[a-z_]+\)$")
ADMIN_KEY = "admin-key-for-tests"


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data: rows are only containers (a collapsed row holds its panels)."""
    out = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets, and the selectors inside the variables' label_values()."""
    exprs = [t["expr"] for p in panels(dashboard) for t in p["targets"]]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            match = LABEL_VALUES.match(var["query"]["query"])
            assert match, var["query"]
            exprs.append(match.group(1))
    return exprs


def to_promql(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
    return expr


def require(binary: str) -> str:
    """The path of a Prometheus binary; skip without it, except in CI where it must be installed."""
    return program(binary, "prometheus")


def test_dashboard_is_importable() -> None:
    dashboard = load()
    assert dashboard["uid"] == "nanoroute"
    assert "__inputs" not in dashboard
    assert dashboard["schemaVersion"] >= 38  # Grafana 10
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("policy", "model"):
        var = variables[name]
        assert var["type"] == "query" and var["multi"] and var["includeAll"], name
        assert var["datasource"]["uid"] == DATASOURCE, name
    assert variables["policy"]["query"]["query"] == "label_values(nanoroute_requests_total, policy)"
    assert variables["model"]["query"]["query"] == 'label_values(nanoroute_requests_total{policy=~"$policy"}, model)'

    shown = panels(dashboard)
    assert len(shown) >= 20
    ids = [p["id"] for p in dashboard["panels"]] + [p["id"] for r in dashboard["panels"] for p in r.get("panels", [])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in shown:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, title
        assert panel["targets"], title
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == DATASOURCE, title
            assert t["expr"].strip(), title
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, title
    for row in dashboard["panels"]:
        if row["type"] == "row":
            assert not row.get("targets"), row["title"]


def test_rate_windows_use_grafana_intervals() -> None:
    for expr in expressions(load()):
        for window in RANGE.findall(expr):
            assert window in ("$__rate_interval", "$__range"), expr


def test_metric_names_exist_on_the_gateway(servers: Servers) -> None:
    up = servers.upstream("fake")
    base = servers.gateway(f"""
backends:
  up: {{type: openai, url: {up.url}}}
  down: {{type: openai, url: "http://127.0.0.1:{free_port()}/v1"}}
models:
  small: {{backend: up, price: {{input: 0.15, output: 0.6}}}}
  large: {{backend: up, price: {{input: 2.5, output: 10}}}}
  broken: {{backend: down}}
policies:
  - {{name: chat, match: {{model: chat}}, strategy: cheapest, candidates: [small, large]}}
  - {{name: flaky, match: {{model: flaky}}, candidates: [broken], fallback: [small]}}
""", access_log=False, admin_key=ADMIN_KEY, reload_interval_s=0)
    messages: Any = [{"role": "user", "content": "hi"}]
    with openai.OpenAI(base_url=base, api_key="unused", max_retries=0) as client:
        client.chat.completions.create(model="chat", messages=messages)
        assert len(list(client.chat.completions.create(model="chat", messages=messages, stream=True))) > 1
        fell_back = client.chat.completions.with_raw_response.create(model="flaky", messages=messages)
        assert fell_back.headers["x-nanoroute-fallbacks"] == "1"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="no-such-model", messages=messages)
    _reload_twice(base.removesuffix("/v1"), servers.app_of().settings.config_path)
    text = httpx.get(base.removesuffix("/v1") + "/metrics").text

    declared: dict[str, str] = {}  # sample name -> family type
    sampled: set[str] = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",))
        for suffix in suffixes:
            declared[family.name + suffix] = family.type
        sampled.update(s.name for s in family.samples)

    referenced = {name for expr in expressions(load()) for name in METRIC.findall(expr)}
    assert referenced >= {"nanoroute_requests_total", "nanoroute_request_duration_seconds_bucket"}
    unknown = referenced - declared.keys()
    assert not unknown, f"the dashboard reads metrics the gateway does not expose: {sorted(unknown)}"
    empty = referenced - sampled
    assert not empty, f"no series after success, stream, fallback, 404 and reloads: {sorted(empty)}"


def _reload_twice(gateway: str, config: Path) -> None:
    """A reload that succeeds (the file changed) and one that fails (the file is no longer valid)."""
    auth = {"authorization": f"Bearer {ADMIN_KEY}"}
    config.write_text(config.read_text() + "# edited\n")
    assert httpx.post(f"{gateway}/admin/reload", headers=auth).json()["reloaded"] is True
    config.write_text("models: [")
    assert httpx.post(f"{gateway}/admin/reload", headers=auth).status_code == 422


def test_expressions_parse_in_prometheus(tmp_path: Path) -> None:
    promtool = require("promtool")
    exprs = [to_promql(e) for e in expressions(load())]
    rules = {"groups": [{"name": "nanoroute_dashboard", "rules": [
        {"record": f"nanoroute_dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    run = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in run.stdout
