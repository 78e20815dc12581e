"""Adapter manifests as distill writes them (gateway/distill/manifest.py): whole, their eval replaced,
paths relative to the folder above adapters/, and readable by the gateway's own manifest reader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.distill import manifest

TRAINED = {
    "name": "triage-lora", "base_model": "smollm2-135m-instruct", "tasks": ["triage"],
    "path": ".nanoroute/adapters/triage-lora", "rank": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"],
    "training": {"data": ".nanoroute/datasets/triage/train.jsonl", "examples": 40, "epochs": 3},
    "eval": {"data": "x", "examples": 1, "metric": "exact_match", "adapter": 0.1},
}


def test_write_then_record_eval_keeps_everything_else(tmp_path: Path) -> None:
    path = manifest.path_for(tmp_path / "adapters", "triage-lora")
    manifest.write(path, TRAINED)
    assert path.read_text().startswith("# Written by nanoroute distill")
    assert list(yaml.safe_load(path.read_text())) == list(TRAINED)  # the order is kept
    section = {"data": ".nanoroute/datasets/triage/eval.jsonl", "examples": 10, "metric": "exact_match",
               "adapter": 0.9, "base": 0.0}
    written = manifest.record_eval(path, section)
    assert manifest.read(path) == written == {**TRAINED, "eval": section}
    assert not list(tmp_path.glob("adapters/*.partial"))


def test_paths_are_relative_to_the_folder_above_the_manifests(tmp_path: Path) -> None:
    target = tmp_path / "adapters" / "a.yaml"
    assert manifest.relative(tmp_path / ".nanoroute" / "adapters" / "a", target) == ".nanoroute/adapters/a"
    assert manifest.relative(Path("/elsewhere/a"), target) == "/elsewhere/a"
    assert manifest.resolve(".nanoroute/adapters/a", target) == tmp_path.resolve() / ".nanoroute" / "adapters" / "a"
    assert manifest.resolve("/elsewhere/a", target) == Path("/elsewhere/a")


def test_a_file_that_is_not_a_manifest(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("- a list\n")
    with pytest.raises(ValueError, match="not an adapter manifest"):
        manifest.read(tmp_path / "a.yaml")
    with pytest.raises(FileNotFoundError):
        manifest.read(tmp_path / "b.yaml")


def test_the_gateway_reads_what_distill_writes(tmp_path: Path) -> None:
    reader = pytest.importorskip("gateway.config.manifest")
    path = manifest.path_for(tmp_path / "adapters", "triage-lora")
    manifest.write(path, TRAINED)
    read = reader.read(path)
    assert (read.name, read.base_model, read.tasks, read.eval.adapter) == (
        "triage-lora", "smollm2-135m-instruct", ["triage"], 0.1)
    assert reader.location(read, tmp_path / "adapters") == str(tmp_path.resolve() / ".nanoroute/adapters/triage-lora")
