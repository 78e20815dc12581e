"""LoRA adapter manifests: `adapters/<name>.yaml`, one per adapter (format in docs/adapters.md).

A manifest says what an adapter is (its name in vLLM, the base model it was trained on, its tasks, where
its weights are) and what it earned (evaluation scores). The gateway reads them at config load: a
`vllm` model with `adapter: NAME` takes its upstream name, the path vLLM loads it from, and, for the
tasks the config does not score itself, its quality from the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.config.schema import Name, Score


class Eval(BaseModel):
    """What the adapter scored on held-out examples. Tools may add keys of their own; they are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    metric: str | None = None
    examples: Annotated[int, Field(ge=0)] | None = None
    adapter: Score | None = None
    """The adapter's score (0..1) on every one of its tasks, unless `scores` names the task."""
    base: Score | None = None
    scores: dict[Name, Score] = {}
    """Per-task scores, where they differ by task."""


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    base_model: Name
    tasks: list[Name] = []
    path: str | None = None
    """The adapter's folder (peft's files): absolute, or relative to the folder that holds `adapters/`."""
    uri: str | None = None
    """Where vLLM fetches it itself (a Hugging Face repo id, or what a vLLM LoRA resolver understands)."""
    rank: Annotated[int, Field(ge=1)] | None = None
    alpha: Annotated[float, Field(gt=0)] | None = None
    target_modules: list[str] = []
    training: dict[str, Any] = {}
    eval: Eval = Eval()

    @model_validator(mode="after")
    def _one_location(self) -> Manifest:
        if (self.path is None) == (self.uri is None):
            raise ValueError("give the adapter's path or its uri (one of them)")
        return self

    def quality(self) -> dict[str, float]:
        """The task scores this manifest earns the model that serves it."""
        scores = dict(self.eval.scores)
        if self.eval.adapter is not None:
            for task in self.tasks:
                scores.setdefault(task, self.eval.adapter)
        return scores


class ManifestError(ValueError):
    """A manifest that is missing or wrong; the message names the file and what was expected."""


def manifest_path(adapters_dir: Path, name: str) -> Path:
    return adapters_dir / f"{name}.yaml"


def read(path: Path) -> Manifest:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"no adapter manifest at {path}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: cannot read the manifest: {exc}") from None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ManifestError(f"{path}: {problems}") from None
    if manifest.name != path.stem:
        raise ManifestError(f"{path}: name '{manifest.name}' differs from the file's name '{path.stem}'")
    return manifest


def read_all(adapters_dir: Path) -> dict[str, Manifest]:
    """Every manifest in the folder, by name (a missing folder holds none)."""
    if not adapters_dir.is_dir():
        return {}
    return {m.name: m for m in (read(p) for p in sorted(adapters_dir.glob("*.yaml")))}


def location(manifest: Manifest, adapters_dir: Path) -> str:
    """What vLLM's `load_lora_adapter` gets as `lora_path`: an absolute path, or the uri as written."""
    if manifest.uri is not None:
        return manifest.uri
    assert manifest.path is not None
    path = Path(manifest.path)
    return str(path if path.is_absolute() else (adapters_dir.resolve().parent / path))
