"""What the learned router reads of a prompt: its words and pairs of adjacent words, weighted TF-IDF.

Training (scikit-learn's TfidfVectorizer with `terms` as its analyzer, `sublinear_tf`, L2 norm) and serving
(`model.Router`, which applies the same weighting itself) read a prompt through the same two functions, so a
model predicts in the gateway exactly what it predicted when it was evaluated.

- The text is the conversation without its system messages (an app's system prompt is the same for each of
  its requests and says nothing of one prompt's difficulty), or a completions `prompt`.
- Only its last MAX_CHARS characters are read, the end of a conversation being what is asked now: this
  bounds the work per request (about 0.3 ms for a 1,000-token prompt on one core, bench/decide.py).
- Words are runs of letters and digits, lower-cased; each other non-space character is a word of its own
  (`?`, `#`, `@` tell a question, an order number, an address).
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import pairwise
from typing import Any

MAX_CHARS = 16384
WORD = re.compile(r"\w+|[^\w\s]")


def prompt_text(body: dict[str, Any]) -> str:
    """The text a router reads of a chat request (or a dataset row, which has the same shape)."""
    return request_text(body, SKIPPED_ROLES)[0]


SKIPPED_ROLES = frozenset({"system", "developer"})


def request_text(body: dict[str, Any], skip: frozenset[str] = frozenset()) -> tuple[str, int]:
    """A request's text (chat messages' text parts, but those of the roles in `skip`, one a line; or a
    completions prompt) and its number of chat messages. Token counting (gateway/routing/tokens.py) reads
    it all; the router leaves out system messages."""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        for m in messages:
            if not isinstance(m, dict) or m.get("role") in skip:
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


def _words(text: str) -> list[str]:
    return WORD.findall(text[-MAX_CHARS:].lower())


def terms(text: str) -> list[str]:
    """Every word, then every pair of adjacent words ("a b"): the analyzer training gives TfidfVectorizer."""
    words = _words(text)
    return [*words, *map(" ".join, pairwise(words))]


def counts(text: str) -> Counter[str]:
    """How often each term occurs: what serving weighs (the same terms as `terms`, counted)."""
    words = _words(text)
    found = Counter(words)
    found.update(map(" ".join, pairwise(words)))
    return found
