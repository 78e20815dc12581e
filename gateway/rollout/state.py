"""A rollout's state and the changes made to it, each applied alike to a process's copy and to the state
kept in the store (`rollouts.py` writes it): a score, an automatic move, an operator's action, the config's stage."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from gateway.config.table import RolloutRoute

if TYPE_CHECKING:
    pass

log = logging.getLogger("nanoroute")

STAGES = ("shadow", "canary", "primary", "stopped")
HISTORY = 50
Z_95 = 1.645
"""One-sided 95%: the z of the confidence bound that must fall below min_quality to move a rollout back."""


Move = dict[str, Any]
"""One move of a rollout, as its history keeps it: at, from, to, share, why."""


@dataclass(slots=True)
class RolloutState:
    """A rollout's state. Everything but `mirroring` is its shared part: with a store, one copy of it is kept
    there for every process, and this is this process's copy (see `Rollouts`)."""

    policy: str
    route: RolloutRoute
    min_quality: float
    stage: str
    step: int = 0
    auto: bool = True
    window: deque[float] = field(default_factory=deque)
    scored: int = 0
    """Scores in the current stage (or canary step)."""
    total: int = 0
    mirroring: int = 0
    """Mirrored calls in flight now, in this process."""
    history: deque[Move] = field(default_factory=lambda: deque(maxlen=HISTORY))
    live: float | None = None
    """The live score when the latest score was added (the window is emptied by a move; this is not)."""
    quality: float | None = None
    """The latest live score over at least `min_samples` scores: the model's measured quality for `task`."""
    task: str | None = None
    """The task of the latest score, when the config names it."""
    config_stage: str = ""
    config_auto: bool = True
    """The config's `stage` and `auto` as last applied: a config that says otherwise applies its own, once."""

    @classmethod
    def fresh(cls, policy: str, route: RolloutRoute, min_quality: float) -> RolloutState:
        """A rollout as the config starts it."""
        s = route.settings
        return cls(policy, route, min_quality, s.stage, auto=s.auto, config_stage=s.stage, config_auto=s.auto)

    @property
    def share(self) -> float:
        if self.stage == "canary":
            return self.route.settings.canary_steps[self.step]
        return 1.0 if self.stage == "primary" else 0.0

    @property
    def score(self) -> float | None:
        return sum(self.window) / len(self.window) if self.window else None

    @property
    def label(self) -> str:
        return self.stage if self.stage != "canary" else f"canary[{self.step}]"

    def describe(self) -> dict[str, Any]:
        s = self.route.settings
        return {"policy": self.policy, "model": self.route.model.name, "stage": self.stage,
                "canary_step": self.step if self.stage == "canary" else None, "share": self.share,
                "auto": self.auto, "score": self.score, "scored_in_stage": self.scored, "scored_total": self.total,
                "mirroring": self.mirroring,
                "min_quality": self.min_quality, "min_samples": s.min_samples, "evaluator": s.evaluator,
                "judge": self.route.judge.name if self.route.judge is not None else None,
                "history": list(self.history)}

    def encode(self) -> bytes:
        """The shared part, as the store keeps it under ("rollouts", policy)."""
        return orjson.dumps({"model": self.route.model.name, "stage": self.stage, "step": self.step,
                             "auto": self.auto, "window": list(self.window), "scored": self.scored,
                             "total": self.total, "live": self.live, "quality": self.quality, "task": self.task,
                             "config": {"stage": self.config_stage, "auto": self.config_auto},
                             "history": list(self.history)})

    def take(self, other: RolloutState) -> None:
        """Make the shared part `other`'s."""
        self.stage, self.step, self.auto = other.stage, other.step, other.auto
        self.window, self.scored, self.total = deque(other.window), other.scored, other.total
        self.history = deque(other.history, maxlen=HISTORY)
        self.live, self.quality, self.task = other.live, other.quality, other.task
        self.config_stage, self.config_auto = other.config_stage, other.config_auto


def decode(value: bytes, st: RolloutState) -> RolloutState | str:
    """A stored state, read for `st`'s rollout (whose settings it takes); the name of the model it is for when
    that is another than `st`'s. Raises ValueError when it is not a rollout's state."""
    try:
        d = orjson.loads(value)
        if d["model"] != st.route.model.name:
            return str(d["model"])
        if d["stage"] not in STAGES:
            raise ValueError(f"unknown stage {d['stage']!r}")
        steps, size = st.route.settings.canary_steps, st.route.settings.window
        out = RolloutState(st.policy, st.route, st.min_quality, d["stage"], min(int(d["step"]), len(steps) - 1),
                           bool(d["auto"]), deque(float(x) for x in d["window"][-size:]), int(d["scored"]),
                           int(d["total"]), history=deque(d["history"], maxlen=HISTORY),
                           live=_score(d["live"]), quality=_score(d["quality"]),
                           task=None if d["task"] is None else str(d["task"]),
                           config_stage=str(d["config"]["stage"]), config_auto=bool(d["config"]["auto"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a rollout's state: {exc}") from None
    return out


def _score(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not a score")
    return float(value)


# -- the changes: each one applied alike to a process's copy and to the stored state ----------------------------


def move(st: RolloutState, stage: str, step: int, why: str) -> Move:
    before = st.label
    st.stage, st.step = stage, step
    st.window.clear()
    st.scored = 0
    entry = {"at": time.time(), "from": before, "to": st.label, "share": st.share, "why": why}
    st.history.append(entry)
    return entry


def scored(st: RolloutState, score: float, task: str | None) -> list[Move]:
    """One score of the rolled-out model's answer; with `auto`, it may move the rollout on or back."""
    s = st.route.settings
    st.window.append(score)
    while len(st.window) > s.window:
        st.window.popleft()
    st.scored += 1
    st.total += 1
    st.live, st.task = st.score, task
    live = st.live
    assert live is not None
    if st.scored >= s.min_samples:
        st.quality = live
    if not st.auto or st.scored < s.min_samples or st.stage == "stopped":
        return []
    if live >= st.min_quality:
        why = f"score {live:.3f} >= {st.min_quality} over {st.scored}"
        if st.stage == "shadow":
            return [move(st, "canary", 0, why)]
        if st.stage == "canary" and st.step + 1 < len(s.canary_steps):
            return [move(st, "canary", st.step + 1, why)]
        if st.stage == "canary":
            return [move(st, "primary", 0, why)]
    elif st.stage in ("canary", "primary"):
        upper = upper_bound(live, len(st.window))
        if upper < st.min_quality:
            return [move(st, "shadow", 0, f"score {live:.3f} (at most {upper:.3f}) < {st.min_quality} "
                                          f"over {len(st.window)}")]
    return []


def pinned(st: RolloutState, stage: str, step: int) -> list[Move]:
    st.auto = False
    return [move(st, stage, step, "pinned by an operator")]


def stopped(st: RolloutState) -> list[Move]:
    st.auto = False
    return [move(st, "stopped", 0, "stopped by an operator")]


def resumed(st: RolloutState) -> list[Move]:
    st.auto = True
    return [move(st, "shadow", 0, "resumed by an operator")] if st.stage == "stopped" else []


def configured(st: RolloutState, stage: str, auto: bool) -> list[Move]:
    """The config's `stage` and `auto`, applied when they differ from what a config said last: so that N
    processes reloading one config move the rollout once, and a reload that changes neither leaves an
    operator's pin."""
    moves = []
    if stage != st.config_stage:
        st.config_stage = stage
        if st.stage != stage:
            moves.append(move(st, stage, 0, "set by the config"))
    if auto != st.config_auto:
        st.config_auto = st.auto = auto
    return moves


@dataclass(frozen=True, slots=True)
class Change:
    """One change to a rollout's shared state: `apply` makes it (to this process's copy, and to the stored
    state when it is written) and returns the moves it made."""

    apply: Callable[[RolloutState], list[Move]]
    kept: bool = True
    """Written once the store is back when it is down now (an operator's or the config's change; a score is
    not: the scores this process makes meanwhile move only its own copy)."""


def upper_bound(mean: float, n: int, z: float = Z_95) -> float:
    """The upper end of the one-sided 95% Wilson score interval of a mean of n scores in 0..1: what the
    true score could still be. A rollout moves back only when even this is below its floor."""
    if n == 0:
        return 1.0
    z2 = z * z
    centre = mean + z2 / (2 * n)
    margin = z * math.sqrt(mean * (1 - mean) / n + z2 / (4 * n * n))
    return min(1.0, (centre + margin) / (1 + z2 / n))
