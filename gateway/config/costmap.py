"""Prices and context windows for hosted models, from litellm's bundled cost map, read offline.

litellm ships `model_prices_and_context_window_backup.json` inside its package; this reads that file
directly (no import of litellm, no network), once per process, at config load.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE = "model_prices_and_context_window_backup.json"


@dataclass(frozen=True, slots=True)
class Entry:
    input_usd_per_token: float | None
    output_usd_per_token: float | None
    context_window: int | None


@functools.cache
def _table() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return {}
    path = Path(spec.origin).with_name(FILE)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


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
