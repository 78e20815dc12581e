"""gateway/config/costmap.py: prices and context windows from the packaged trim of litellm's cost map, offline."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.config import costmap


def litellms_file() -> Path:
    """litellm's own, whole file, in the installed litellm (the test extra has it)."""
    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).with_name(costmap.SOURCE)


def litellms() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads(litellms_file().read_text())
    return data


def packaged() -> dict[str, dict[str, Any]]:
    """The file the module reads, read here independently."""
    models: dict[str, dict[str, Any]] = json.loads(costmap.PATH.read_text())["models"]
    return models


def test_the_map_is_litellms_trimmed_to_the_fields_lookup_reads() -> None:
    # tests/security/test_supply_chain.py checks, offline, that the map comes from the locked litellm release.
    if importlib.metadata.version("litellm") != costmap.source()["version"]:
        pytest.skip("the installed litellm is not the release requirements/runtime-litellm.lock pins")
    raw = litellms_file().read_bytes()
    assert hashlib.sha256(raw).hexdigest() == costmap.source()["sha256"]
    assert packaged() == costmap.trim(json.loads(raw))
    assert costmap.PATH.stat().st_size < len(raw) / 4


def test_trim_keeps_numbers_of_the_fields_read_and_drops_the_rest() -> None:
    raw = {
        "sample_spec": {"input_cost_per_token": 0.0, "max_input_tokens": "max input tokens"},
        "m": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "max_tokens": 8192, "mode": "chat",
              "supports_vision": True, "max_input_tokens": None},
        "images-only": {"output_cost_per_image": 0.04, "mode": "image_generation"},
        "a-flag": {"max_tokens": True},
    }
    assert costmap.trim(raw) == {"m": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "max_tokens": 8192}}


def test_gpt_4o_mini_has_a_price_and_a_128k_window() -> None:
    entry = costmap.lookup("gpt-4o-mini")
    assert entry is not None
    assert entry.context_window == 128000
    assert entry.input_usd_per_token is not None and entry.output_usd_per_token is not None
    assert 0 < entry.input_usd_per_token < entry.output_usd_per_token < 1e-5
    raw = litellms()["gpt-4o-mini"]
    assert (entry.input_usd_per_token, entry.output_usd_per_token) == (raw["input_cost_per_token"],
                                                                       raw["output_cost_per_token"])


@pytest.mark.parametrize(("name", "provider"), [
    ("no-such-model-anywhere", None),
    ("no-such-model-anywhere", "openai"),
    ("", None),
    ("sample_spec", None),  # litellm's description of its format, not a model
])
def test_an_unknown_model_is_none(name: str, provider: str | None) -> None:
    assert costmap.lookup(name, provider) is None


def test_provider_slash_name_is_tried_first() -> None:
    table = packaged()
    # A model whose provider-specific entry has its own price, different from the bare name's.
    assert table["azure/gpt-4-turbo"]["input_cost_per_token"] != table["gpt-4-turbo"]["input_cost_per_token"]
    azure, plain = costmap.lookup("gpt-4-turbo", "azure"), costmap.lookup("gpt-4-turbo")
    assert azure is not None and plain is not None
    assert azure.input_usd_per_token == table["azure/gpt-4-turbo"]["input_cost_per_token"]
    assert plain.input_usd_per_token == table["gpt-4-turbo"]["input_cost_per_token"]


def test_the_bare_name_is_the_fallback_for_a_provider() -> None:
    assert "nosuchprovider/gpt-4o-mini" not in packaged()
    assert costmap.lookup("gpt-4o-mini", "nosuchprovider") == costmap.lookup("gpt-4o-mini")


def test_a_window_comes_from_max_input_tokens() -> None:
    table = packaged()
    name = next(k for k, v in table.items() if isinstance(v.get("max_input_tokens"), int)
                and v.get("max_input_tokens") != v.get("max_tokens"))
    entry = costmap.lookup(name)
    assert entry is not None and entry.context_window == table[name]["max_input_tokens"]
