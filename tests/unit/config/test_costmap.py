"""gateway/config/costmap.py: prices and context windows from litellm's bundled cost map, offline."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from gateway.config import costmap


def bundled() -> dict[str, dict[str, object]]:
    """The file the module reads, read here independently."""
    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.origin is not None
    data: dict[str, dict[str, object]] = json.loads(Path(spec.origin).with_name(costmap.FILE).read_text())
    return data


def test_gpt_4o_mini_has_a_price_and_a_128k_window() -> None:
    entry = costmap.lookup("gpt-4o-mini")
    assert entry is not None
    assert entry.context_window == 128000
    assert entry.input_usd_per_token is not None and entry.output_usd_per_token is not None
    assert 0 < entry.input_usd_per_token < entry.output_usd_per_token < 1e-5
    raw = bundled()["gpt-4o-mini"]
    assert (entry.input_usd_per_token, entry.output_usd_per_token) == (raw["input_cost_per_token"],
                                                                       raw["output_cost_per_token"])


@pytest.mark.parametrize(("name", "provider"), [
    ("no-such-model-anywhere", None),
    ("no-such-model-anywhere", "openai"),
    ("", None),
])
def test_an_unknown_model_is_none(name: str, provider: str | None) -> None:
    assert costmap.lookup(name, provider) is None


def test_provider_slash_name_is_tried_first() -> None:
    table = bundled()
    # A model whose provider-specific entry has its own price, different from the bare name's.
    assert table["azure/gpt-4-turbo"]["input_cost_per_token"] != table["gpt-4-turbo"]["input_cost_per_token"]
    azure, plain = costmap.lookup("gpt-4-turbo", "azure"), costmap.lookup("gpt-4-turbo")
    assert azure is not None and plain is not None
    assert azure.input_usd_per_token == table["azure/gpt-4-turbo"]["input_cost_per_token"]
    assert plain.input_usd_per_token == table["gpt-4-turbo"]["input_cost_per_token"]


def test_the_bare_name_is_the_fallback_for_a_provider() -> None:
    assert "nosuchprovider/gpt-4o-mini" not in bundled()
    assert costmap.lookup("gpt-4o-mini", "nosuchprovider") == costmap.lookup("gpt-4o-mini")


def test_a_window_comes_from_max_input_tokens() -> None:
    table = bundled()
    name = next(k for k, v in table.items() if isinstance(v, dict) and isinstance(v.get("max_input_tokens"), int)
                and v.get("max_input_tokens") != v.get("max_tokens"))
    entry = costmap.lookup(name)
    assert entry is not None and entry.context_window == table[name]["max_input_tokens"]

