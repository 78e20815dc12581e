"""Prices and context windows for hosted models, from litellm's cost map, read offline without litellm.

litellm ships `model_prices_and_context_window_backup.json` inside its package (3.4 MB, some 270 fields per
model). `costmap.json` beside this module holds the part of it the gateway reads, the `FIELDS` of each model,
taken from the litellm release that requirements/runtime-litellm.lock pins by scripts/litellm_data.py (which
`scripts/lock.py` runs): every install has the same prices, with or without the `litellm` extra. It is read
once per process, at config load.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PATH = Path(__file__).with_name("costmap.json")
SOURCE = "model_prices_and_context_window_backup.json"
"""The file's name inside litellm's package."""
FIELDS = ("input_cost_per_token", "output_cost_per_token", "max_input_tokens", "max_tokens")
"""What `lookup` reads of an entry; `trim` keeps these and drops the rest."""


@dataclass(frozen=True, slots=True)
class Entry:
    input_usd_per_token: float | None
    output_usd_per_token: float | None
    context_window: int | None


def trim(raw: Mapping[str, Any]) -> dict[str, dict[str, int | float]]:
    """litellm's cost map reduced to `FIELDS`, numbers only, for models that have any of them (its
    `sample_spec`, which documents the format, is left out), sorted by name."""
    out: dict[str, dict[str, int | float]] = {}
    for name, entry in sorted(raw.items()):
        if name == "sample_spec" or not isinstance(entry, dict):
            continue
        kept = {f: entry[f] for f in FIELDS if isinstance(entry.get(f), int | float) and not isinstance(entry[f], bool)}
        if kept:
            out[name] = kept
    return out


@functools.cache
def _read() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PATH.read_text())  # part of the package: a missing file is a broken install
    return data


def _table() -> dict[str, Any]:
    models: dict[str, Any] = _read()["models"]
    return models


def source() -> dict[str, str]:
    """Where the map comes from: the litellm release, its file, and that file's sha256."""
    return dict(_read()["source"])


def lookup(name: str, provider: str | None = None) -> Entry | None:
    """The entry for a model, trying `provider/name` and then `name`; None when the map has neither."""
    table = _table()
    for key in ([f"{provider}/{name}"] if provider else []) + [name]:
        raw = table.get(key)
        if isinstance(raw, dict):
            window = raw.get("max_input_tokens") or raw.get("max_tokens")
            return Entry(
                _num(raw.get("input_cost_per_token")),
                _num(raw.get("output_cost_per_token")),
                window if isinstance(window, int) else None,
            )
    return None


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
