"""A trained router, loaded from its artifact folder, and its predictions.

    <dir>/manifest.json     format, version, models, the data it was trained on, the split, its metrics
    <dir>/weights.json      the terms with their IDF, and per model a weight per term and an intercept
    <dir>/heldout.jsonl     the rows held out from training (what `router eval` and calibration use)
    <dir>/calibration.json  the held-out rows' predicted and true scores, per model

A prediction is a logistic model per model on the prompt's TF-IDF terms (features.py): the probability
that the model's answer scores 1. Loading checks the format and that every file agrees with the manifest;
a `Router` is immutable, and a new artifact is a new `Router` (the config reload that loads it).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.learned.features import counts, prompt_text

FORMAT = "nanoroute-router/1"
MANIFEST, WEIGHTS, HELDOUT, CALIBRATION = "manifest.json", "weights.json", "heldout.jsonl", "calibration.json"


class ArtifactError(ValueError):
    """An artifact folder that is missing, unreadable or inconsistent; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """Held-out rows: each model's predicted score, and its true score (None where the row has none)."""

    predicted: tuple[tuple[float, ...], ...]
    scores: tuple[tuple[float | None, ...], ...]


class Router:
    """Predicts each of its models' scores for a prompt; thread-safe (nothing changes after loading)."""

    __slots__ = ("_intercepts", "_terms", "calibration", "manifest", "models", "path", "version")

    def __init__(self, path: Path, manifest: dict[str, Any], terms: Sequence[str], idf: Sequence[float],
                 coef: Sequence[Sequence[float]], intercepts: Sequence[float], calibration: Calibration) -> None:
        self.path = path
        self.manifest = manifest
        self.models: tuple[str, ...] = tuple(manifest["models"])
        self.version: str = manifest["version"]
        self.calibration = calibration
        # One lookup per term: its IDF, then its IDF times each model's weight.
        self._terms = {t: (w, *(w * c[j] for c in coef)) for j, (t, w) in enumerate(zip(terms, idf, strict=True))}
        self._intercepts = tuple(intercepts)

    def predict(self, body: dict[str, Any]) -> tuple[float, ...]:
        """Each model's predicted score (0..1) for a request or dataset row, in `models` order."""
        return self.predict_text(prompt_text(body))

    def predict_text(self, text: str) -> tuple[float, ...]:
        k = len(self.models)
        acc = [0.0] * k
        norm = 0.0
        table = self._terms
        for term, n in counts(text).items():
            entry = table.get(term)
            if entry is None:
                continue
            tf = 1.0 + math.log(n)
            norm += (tf * entry[0]) ** 2
            for i in range(k):
                acc[i] += tf * entry[i + 1]
        scale = 1.0 / math.sqrt(norm) if norm > 0.0 else 0.0
        return tuple(_sigmoid(b + a * scale) for a, b in zip(acc, self._intercepts, strict=True))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def load(path: Path) -> Router:
    """The router in folder `path`; raises ArtifactError naming what is wrong."""
    manifest = _json(path / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path / MANIFEST}: not a router artifact (expected \"format\": \"{FORMAT}\")")
    models = manifest.get("models")
    if not isinstance(models, list) or len(models) < 2 or not all(isinstance(m, str) for m in models):
        raise ArtifactError(f"{path / MANIFEST}: 'models' must list two or more model names")
    raw = _read(path / WEIGHTS)
    if hashlib.sha256(raw).hexdigest() != manifest.get("weights_sha256"):
        raise ArtifactError(f"{path / WEIGHTS}: does not match the manifest's weights_sha256 (a partial copy?)")
    weights = orjson.loads(raw)
    try:
        terms, idf = weights["terms"], weights["idf"]
        coef = [weights["coef"][m] for m in models]
        intercepts = [float(weights["intercept"][m]) for m in models]
        if not all(len(c) == len(terms) for c in coef) or len(idf) != len(terms):
            raise ArtifactError(f"{path / WEIGHTS}: terms, idf and coefficients differ in length")
        cal = _json(path / CALIBRATION)
        calibration = Calibration(tuple(tuple(float(v) for v in row) for row in cal["predicted"]),
                                  tuple(tuple(None if v is None else float(v) for v in row) for row in cal["scores"]))
        if list(cal["models"]) != models or len(calibration.predicted) != len(calibration.scores):
            raise ArtifactError(f"{path / CALIBRATION}: does not match the manifest's models")
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ArtifactError):
            raise
        raise ArtifactError(f"{path}: malformed artifact ({type(exc).__name__}: {exc})") from None
    return Router(path, manifest, terms, idf, coef, intercepts, calibration)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: {exc.strerror or exc}") from None


def _json(path: Path) -> Any:
    try:
        return orjson.loads(_read(path))
    except orjson.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None
