"""Render helm/nanoroute with Helm's own template engine and read the result.

helm-python-sdk binds Helm v4's Go SDK through ctypes: `Chart.render` runs the same engine as `helm template`
(values merged with the chart's defaults, validated against values.schema.json, templates rendered), with no
helm binary and no cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "nanoroute"
SCENARIOS = sorted(CHART.glob("ci/*-values.yaml"))
RELEASE = "test"
NAMESPACE = "llm"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    objects: list[Obj]
    notes: str

    def all(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Obj:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
        return found[0]

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    @property
    def gateway(self) -> Obj:
        return self.one("Deployment", f"{RELEASE}-nanoroute")

    def config_text(self) -> str:
        """The gateway config as the pods read it."""
        data: str = self.one("ConfigMap", f"{RELEASE}-nanoroute-config")["data"]["config.yaml"]
        return data


def load_values(path: Path) -> dict[str, Any]:
    """A values file as `helm -f` reads it."""
    return helm.values_from_yaml(path.read_text())


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> Rendered:
    manifests = chart.render(values=values or {}, name=RELEASE, namespace=NAMESPACE)
    objects: list[Obj] = []
    notes = ""
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(objects, notes)


def container(deployment: Obj, name: str | None = None) -> Obj:
    containers: list[Obj] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def env_of(deployment: Obj) -> dict[str, Obj]:
    """The first container's `env`, by name: each entry's `value` or `valueFrom`."""
    return {e["name"]: e.get("valueFrom", {"value": e.get("value")}) for e in container(deployment).get("env", [])}


def write_pod_files(rendered: Rendered, root: Path) -> Path:
    """The files the gateway pod reads, laid out under `root` as the Deployment mounts them: each of the
    chart's ConfigMaps at its volume's mountPath. Returns the path of the config file (NANOROUTE_CONFIG)."""
    spec = rendered.gateway["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container(rendered.gateway)["volumeMounts"]:
        source = volumes[mount["name"]].get("configMap")
        if source is None:
            continue
        folder = root / mount["mountPath"].lstrip("/")
        folder.mkdir(parents=True)
        for key, text in rendered.one("ConfigMap", source["name"])["data"].items():
            (folder / key).write_text(text)
    config: str = env_of(rendered.gateway)["NANOROUTE_CONFIG"]["value"]
    return root / config.lstrip("/")


def nanoroute_check(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`nanoroute check` on a config file, with only the given provider-key variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run([sys.executable, "-m", "gateway", "check", str(path)], env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=False)
