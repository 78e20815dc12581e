"""Counting a request's prompt tokens, for cost and context estimates.

With `tiktoken` and its `cl100k_base` encoding available offline (litellm bundles the file), text is
counted exactly for OpenAI's tokenizer family; otherwise, and for every model when `exact` is off,
one token per four characters (OpenAI's rule of thumb for English). Both add 4 tokens per chat
message for the role and separators. Other models' tokenizers differ by some percent either way:
these are estimates for routing, not billing (billing uses the upstream's own usage).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Protocol

PER_MESSAGE = 4


class Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


def load_encoder() -> Encoder | None:
    """cl100k_base from the files litellm bundles, so nothing is fetched; None when unavailable."""
    try:
        import tiktoken
    except ImportError:
        return None
    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.origin is not None and "TIKTOKEN_CACHE_DIR" not in os.environ:
        os.environ["TIKTOKEN_CACHE_DIR"] = str(Path(spec.origin).parent / "litellm_core_utils" / "tokenizers")
    try:
        return tiktoken.get_encoding("cl100k_base")
    except Exception:  # no cached file and no network: fall back to the approximation
        return None


def text_of(body: dict[str, Any]) -> tuple[str, int]:
    """The request's prompt text and its number of chat messages."""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        for m in messages:
            if not isinstance(m, dict):
                continue
            content = m.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "\n".join(parts), len(messages)
    prompt = body.get("prompt", body.get("input"))
    if isinstance(prompt, str):
        return prompt, 0
    if isinstance(prompt, list):
        return "\n".join(p for p in prompt if isinstance(p, str)), 0
    return "", 0


EXACT_CHARS = 16384
"""Text up to this long is counted whole; longer text is estimated from SAMPLES slices of SAMPLE_CHARS
spread over it, so one request never holds the event loop for more than a few milliseconds (tiktoken
takes seconds for megabytes, and far longer for a long run of one character)."""
SAMPLES = 4
SAMPLE_CHARS = 4096


def count(body: dict[str, Any], encoder: Encoder | None) -> int:
    text, messages = text_of(body)
    if encoder is None:
        n = (len(text) + 3) // 4
    elif len(text) <= EXACT_CHARS:
        n = len(encoder.encode_ordinary(text))
    else:
        n = estimate(text, encoder)
    return n + PER_MESSAGE * messages


def estimate(text: str, encoder: Encoder) -> int:
    """Tokens in a long text: the tokens per character of evenly spread slices, times its length."""
    step = (len(text) - SAMPLE_CHARS) // (SAMPLES - 1)
    sampled = sum(len(encoder.encode_ordinary(text[i * step:i * step + SAMPLE_CHARS])) for i in range(SAMPLES))
    return round(sampled * len(text) / (SAMPLES * SAMPLE_CHARS))
