"""Writing adapter manifests (`adapters/<name>.yaml`, the format in docs/adapters.md): the training run
writes one whole, an evaluation replaces its `eval` section. Paths in it are relative to the folder that
holds the adapters folder (the repository root for `adapters/`), as the gateway resolves them.

PyYAML only: the trainer writes manifests from the ML venv.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

HEADER = "# Written by nanoroute distill (gateway/distill); the format is described in docs/adapters.md.\n"


def path_for(adapters_dir: Path, name: str) -> Path:
    return adapters_dir / f"{name}.yaml"


def relative(path: Path, manifest: Path) -> str:
    """`path` as the manifest gives it: relative to the folder above the manifest's, else absolute."""
    root = manifest.resolve().parent.parent
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path.resolve())


def resolve(value: str, manifest: Path) -> Path:
    """The inverse of `relative`."""
    path = Path(value)
    return path if path.is_absolute() else manifest.resolve().parent.parent / path


def read(path: Path) -> dict[str, Any]:
    """The manifest as a mapping; FileNotFoundError or ValueError when there is none or it is not one."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ValueError(f"{path}: not an adapter manifest (a mapping with a name)")
    return data


def write(path: Path, manifest: dict[str, Any]) -> None:
    """Write the whole manifest, replacing the file at once (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(HEADER + yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    os.replace(partial, path)


def record_eval(path: Path, section: dict[str, Any]) -> dict[str, Any]:
    """Replace the manifest's `eval` section; returns the manifest written."""
    manifest = read(path)
    manifest["eval"] = section
    write(path, manifest)
    return manifest
