"""gateway/config/manifest.py, and how the config loader uses manifests for `adapter:` models."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.loader import load_file
from gateway.config.manifest import Manifest, ManifestError, location, read, read_all
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]

MANIFEST = """\
name: triage-v2
base_model: base-model
tasks: [triage, routing]
path: weights/triage-v2
rank: 8
eval: {metric: exact_match, examples: 40, adapter: 0.85, base: 0.1, scores: {routing: 0.7}, evaluator: exact}
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def test_the_repositorys_manifests_are_valid() -> None:
    manifests = read_all(REPO / "adapters")
    assert "ticket-triage" in manifests
    triage = manifests["ticket-triage"]
    assert triage.base_model == "smollm2-135m-instruct" and triage.tasks == ["triage"]
    assert location(triage, REPO / "adapters") == str(REPO / ".stack" / "adapters" / "ticket-triage")


def test_quality_comes_from_the_scores_per_task_then_the_overall_score(tmp_path: Path) -> None:
    m = read(write(tmp_path / "adapters", "triage-v2", MANIFEST))
    assert m.quality() == {"triage": 0.85, "routing": 0.7}
    assert m.eval.model_extra == {"evaluator": "exact"}  # tools' own keys are kept


def test_a_relative_path_is_taken_from_the_folder_that_holds_adapters(tmp_path: Path) -> None:
    m = read(write(tmp_path / "adapters", "triage-v2", MANIFEST))
    assert location(m, tmp_path / "adapters") == str(tmp_path / "weights" / "triage-v2")
    remote = Manifest(name="x", base_model="b", uri="org/x-lora")
    assert location(remote, tmp_path) == "org/x-lora"


@pytest.mark.parametrize(("text", "expected"), [
    ("name: other\nbase_model: b\npath: p\n", "differs from the file's name"),
    ("name: triage-v2\nbase_model: b\n", "path or its uri"),
    ("name: triage-v2\nbase_model: b\npath: p\nuri: u\n", "path or its uri"),
    ("name: triage-v2\nbase_model: b\npath: p\neval: {adapter: 1.5}\n", "eval.adapter"),
    ("name: triage-v2\nbase_model: b\npath: p\nranks: 8\n", "ranks"),
    ("name: [triage-v2\n", "cannot read"),
])
def test_a_bad_manifest_names_the_file_and_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "triage-v2", text)
    with pytest.raises(ManifestError, match=expected) as info:
        read(path)
    assert str(path) in str(info.value)


def config(tmp_path: Path, model: str, backend: str = "{type: vllm, urls: ['http://127.0.0.1:1/v1']}") -> Path:
    path = tmp_path / "conf" / "gateway.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"adapters_dir: ../adapters\nbackends:\n  local: {backend}\nmodels:\n  {model}\n")
    return path


def test_an_adapter_model_takes_name_path_and_quality_from_its_manifest(tmp_path: Path) -> None:
    write(tmp_path / "adapters", "triage-v2", MANIFEST)
    table = load_file(config(tmp_path, "triage: {backend: local, adapter: triage-v2, quality: {routing: 0.9}}"))
    m = table.models["triage"]
    assert m.upstream_name == "triage-v2" and m.adapter_base == "base-model"
    assert m.adapter_path == str(tmp_path / "weights" / "triage-v2")
    assert dict(m.quality) == {"triage": 0.85, "routing": 0.9}  # the config's own score wins
    assert {"triage", "routing"} <= table.tasks


def test_an_unknown_adapter_fails_the_load_with_the_path_it_looked_at(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models\.triage\.adapter .*no adapter manifest at .*nope\.yaml"):
        load_file(config(tmp_path, "triage: {backend: local, adapter: nope}"))


def test_only_vllm_backends_serve_adapters(tmp_path: Path) -> None:
    write(tmp_path / "adapters", "triage-v2", MANIFEST)
    with pytest.raises(ConfigError, match="adapters are served by vllm backends; 'local' is openai"):
        load_file(config(tmp_path, "triage: {backend: local, adapter: triage-v2}",
                         backend="{type: openai, url: 'http://127.0.0.1:1/v1'}"))
