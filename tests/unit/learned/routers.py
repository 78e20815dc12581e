"""Routing datasets whose answer is known, and routers trained on them: for the learned router's own tests and
for the loader's, decide's and the API's (tests/conftest.py trains the shared one once per session).

`rows`: the cheap model gets the "easy" prompts right and the "hard" ones wrong, the strong model gets both
right (but a few). `three`: a `mid` model between them, right on the easy and the "middle" prompts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

EASY = ["reset my password", "where is my parcel", "send me the invoice", "change my address", "cancel my order"]
MIDDLE = ["the coupon code expired before checkout", "my loyalty points vanished overnight",
          "the gift card balance looks wrong"]
HARD = ["the refund was charged twice after the return but the app crashed", "not a billing question: the login "
        "loops after the update", "my parcel arrived but the invoice shows a return fee for a swap I never made"]
FILLER = ["please", "thanks", "hello", "asap", "today", "again", "kindly", "urgent"]

# Prompts to route: two templates of a kind make a surer prediction than one, far from the thresholds the
# routers are calibrated at (those lie at the edge of the wrong answers' predictions).
ASK_EASY = "please reset my password and change my address"
ASK_MIDDLE = "the coupon code expired before checkout and my loyalty points vanished overnight"
ASK_HARD = ("the refund was charged twice after the return but the app crashed, and not a billing question: the "
            "login loops after the update")


def chat(text: str) -> list[dict[str, str]]:
    """A request's (and a dataset row's) messages: an app's system prompt, then the user's `text`."""
    return [{"role": "system", "content": "Triage."}, {"role": "user", "content": text}]


def rows(n: int, seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    for i in range(n):
        hard = rng.random() < 0.3
        text = f"{rng.choice(FILLER)} {rng.choice(HARD if hard else EASY)} {rng.choice(FILLER)} #{i}"
        out.append({"id": f"r{i}", "task": "triage", "messages": chat(text),
                    "scores": {"cheap": 0.0 if hard else 1.0, "strong": 0.0 if rng.random() < 0.05 else 1.0}})
    return out


def three(n: int, seed: int = 11) -> list[dict[str, object]]:
    """Easy, middle and hard prompts in about equal parts, scored for `cheap`, `mid` and `strong`."""
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    for i in range(n):
        level = rng.randrange(3)  # 0 easy, 1 middle, 2 hard
        text = f"{rng.choice(FILLER)} {rng.choice((EASY, MIDDLE, HARD)[level])} {rng.choice(FILLER)} #{i}"
        out.append({"id": f"t{i}", "messages": chat(text),
                    "scores": {"cheap": float(level == 0), "mid": float(level < 2), "strong": 1.0}})
    return out


def write(path: Path, data: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    return path


def train_router(data: Path, out: Path, seed: int = 3) -> Path:
    """Train a router on the dataset file `data` into the folder `out` (skipped without scikit-learn)."""
    pytest.importorskip("sklearn")
    from gateway.learned.train import Options, train

    train(Options(data, out, seed=seed))
    return out
