"""gateway/routing/tokens.py: prompt text, the characters / 4 approximation, and tiktoken offline."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.routing import tokens

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.mark.parametrize(("body", "text", "messages"), [
    ({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}, "be brief\nhi", 2),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "look"},
                                                {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                                                {"type": "text", "text": "here"}]}]}, "look\nhere", 1),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": []}, "not a message"]}, "", 2),
    ({"messages": []}, "", 0),
    ({"prompt": "once upon a time"}, "once upon a time", 0),
    ({"prompt": ["one", "two", 3]}, "one\ntwo", 0),
    ({"input": "embed me"}, "embed me", 0),
    ({"input": [[1, 2, 3]]}, "", 0),
    ({}, "", 0),
])
def test_text_of(body: dict[str, Any], text: str, messages: int) -> None:
    assert tokens.text_of(body) == (text, messages)


@pytest.mark.parametrize(("body", "expected"), [
    ({"prompt": ""}, 0),
    ({"prompt": "abc"}, 1),
    ({"prompt": "abcd"}, 1),
    ({"prompt": "abcde"}, 2),
    ({"prompt": "x" * 4000}, 1000),
    ({"messages": [{"role": "user", "content": "hi"}]}, 1 + tokens.PER_MESSAGE),
    ({"messages": [{"role": "user", "content": "abcd"}, {"role": "user", "content": "abc"}]},
     2 + 2 * tokens.PER_MESSAGE),  # "abcd\nabc": 8 characters
])
def test_the_approximation_is_characters_over_four_plus_four_per_message(body: dict[str, Any], expected: int) -> None:
    assert tokens.count(body, None) == expected


@pytest.fixture
def no_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset TIKTOKEN_CACHE_DIR for the test, and restore whatever it was afterwards."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")


def test_tiktoken_loads_from_litellms_bundled_file(no_cache_dir: None) -> None:
    encoder = tokens.load_encoder()
    assert encoder is not None
    cache = Path(os.environ["TIKTOKEN_CACHE_DIR"])
    assert cache.parts[-2:] == ("litellm_core_utils", "tokenizers")
    # tiktoken names a cached file by the SHA-1 of its URL: the file is there, so nothing is fetched.
    assert (cache / hashlib.sha1(CL100K_URL.encode()).hexdigest()).is_file()
    assert encoder.encode_ordinary("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]


def test_an_existing_cache_dir_is_left_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    tokens.load_encoder()
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path)


def test_exact_counts_with_cl100k() -> None:
    encoder = tokens.load_encoder()
    assert encoder is not None
    assert tokens.count({"prompt": "hello world"}, encoder) == 2
    body = {"messages": [{"role": "user", "content": "hello world"}, {"role": "user", "content": "tiktoken is great!"}]}
    # "hello world\ntiktoken is great!": 2 + 1 + 6 tokens, plus 4 per message
    assert tokens.count(body, encoder) == len(encoder.encode_ordinary("hello world\ntiktoken is great!")) + 8
    assert tokens.count(body, encoder) != tokens.count(body, None)


def test_special_token_text_is_counted_as_ordinary_text() -> None:
    encoder = tokens.load_encoder()
    assert encoder is not None
    assert tokens.count({"prompt": "<|endoftext|>"}, encoder) > 1  # no error, no single special token
