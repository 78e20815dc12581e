"""A small routing dataset whose answer is known: the cheap model gets the "easy" prompts right and the
"hard" ones wrong, the strong model gets both right (but a few); and a router trained on it once per session."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

EASY = ["reset my password", "where is my parcel", "send me the invoice", "change my address", "cancel my order"]
HARD = ["the refund was charged twice after the return but the app crashed", "not a billing question: the login "
        "loops after the update", "my parcel arrived but the invoice shows a return fee for a swap I never made"]
FILLER = ["please", "thanks", "hello", "asap", "today", "again", "kindly", "urgent"]


def rows(n: int, seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        hard = rng.random() < 0.3
        text = f"{rng.choice(FILLER)} {rng.choice(HARD if hard else EASY)} {rng.choice(FILLER)} #{i}"
        out.append({"id": f"r{i}", "task": "triage",
                    "messages": [{"role": "system", "content": "Triage."}, {"role": "user", "content": text}],
                    "scores": {"cheap": 0.0 if hard else 1.0, "strong": 0.0 if rng.random() < 0.05 else 1.0}})
    return out


def write(path: Path, data: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("data") / "routing.jsonl", rows(300))


@pytest.fixture(scope="session")
def artifact(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn")
    from gateway.learned.train import Options, train

    out = tmp_path_factory.mktemp("router") / "triage"
    train(Options(dataset, out, seed=3))
    return out
