"""Counting a request's prompt tokens, for cost and context estimates.

With `tiktoken` available, text is counted exactly for OpenAI's tokenizer family with the `cl100k_base`
encoding, read from `cl100k_base.tiktoken` beside this module (the file tiktoken would download, taken from
litellm's wheel by scripts/litellm_data.py and checked against the sha256 that tiktoken itself expects), so
nothing is fetched and litellm is not needed. Otherwise, and for every model when `exact` is off, one token per
four characters (OpenAI's rule of thumb for English). Both add 4 tokens per chat message for the role and
separators. Other models' tokenizers differ by some percent either way: these are estimates for routing, not
billing (billing uses the upstream's own usage).
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any, Protocol

from gateway.learned.features import request_text

PER_MESSAGE = 4

CL100K_PATH = Path(__file__).with_name("cl100k_base.tiktoken")
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# cl100k_base as tiktoken_ext.openai_public defines it (an encoding never changes once published).
_CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
                   r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
_CL100K_SPECIAL = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                   "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}


class Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


def load_encoder(path: Path = CL100K_PATH) -> Encoder | None:
    """cl100k_base from the packaged file; None without tiktoken, or when the file is missing or altered."""
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != CL100K_SHA256:
        return None
    # The file's format, as tiktoken.load.load_tiktoken_bpe reads it: one "base64(token) rank" per line.
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}
    return tiktoken.Encoding("cl100k_base", pat_str=_CL100K_PATTERN, mergeable_ranks=ranks,
                             special_tokens=_CL100K_SPECIAL)


def text_of(body: dict[str, Any]) -> tuple[str, int]:
    """The request's prompt text and its number of chat messages."""
    return request_text(body)


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
