"""gateway/routing/tokens.py: prompt text, the characters / 4 approximation, and tiktoken offline."""

from __future__ import annotations

import hashlib
import importlib.util
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


def reference_cl100k(monkeypatch: pytest.MonkeyPatch) -> Any:
    """tiktoken's own cl100k_base, from the copy of the file that litellm bundles (the test extra has it)."""
    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.origin is not None
    cache = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
    # tiktoken names a cached file by the SHA-1 of its URL: the file is there, so nothing is fetched.
    assert (cache / hashlib.sha1(CL100K_URL.encode()).hexdigest()).is_file()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    import tiktoken

    return tiktoken.get_encoding("cl100k_base")


def test_cl100k_loads_from_the_packaged_file_and_is_tiktokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/nonexistent")  # were anything fetched or cached, it would fail
    encoder = tokens.load_encoder()
    assert encoder is not None
    assert encoder.encode_ordinary("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert hashlib.sha256(tokens.CL100K_PATH.read_bytes()).hexdigest() == tokens.CL100K_SHA256
    reference = reference_cl100k(monkeypatch)
    assert isinstance(encoder, type(reference))
    assert (encoder.name, encoder._pat_str, encoder._special_tokens) == (
        reference.name, reference._pat_str, reference._special_tokens)
    assert encoder._mergeable_ranks == reference._mergeable_ranks
    text = "Ünïcode, numbers 1234567 and   spaces\r\n<|endoftext|> tabs\t"
    assert encoder.encode_ordinary(text) == reference.encode_ordinary(text)


def test_an_altered_or_missing_file_is_not_used(tmp_path: Path) -> None:
    altered = tmp_path / "cl100k_base.tiktoken"
    altered.write_bytes(tokens.CL100K_PATH.read_bytes().replace(b" 0\n", b" 1\n", 1))
    assert tokens.load_encoder(altered) is None  # the approximation instead
    assert tokens.load_encoder(tmp_path / "missing") is None
    assert tokens.load_encoder(tokens.CL100K_PATH) is not None


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
