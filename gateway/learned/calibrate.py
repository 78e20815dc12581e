"""The threshold a `learned` policy routes by, chosen on the router's held-out rows when the config loads.

The rule, for candidates in order of price: the cheapest whose predicted score is at least the threshold
`t`, or, when none is, the dearest. Lowering `t` only ever moves prompts to cheaper models, so one number
trades cost against quality, and each `t` gives a quality and a share per candidate on the held-out rows:

- a floor (`require.min_quality`): the lowest `t` whose quality, and that of every higher `t`, meets the floor
  on the held-out rows: routed traffic like them meets the floor (the closer they are to live traffic,
  the truer; `nanoroute_router_quality_*` shows the live figures);
- a cost target (`max_share`): the highest `t` that sends at most that share to the dearest candidate.

Computed in one sweep over the rows' predictions, O(rows x candidates x log), at load time only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.learned.model import Calibration

MIN_ROWS = 20
"""Held-out rows, scored for every candidate, needed to calibrate a threshold."""


@dataclass(frozen=True, slots=True)
class Threshold:
    value: float
    """Route to the cheapest candidate (but the dearest) whose predicted score is at least this."""
    quality: float
    """The held-out rows' mean true score when routed at `value`."""
    shares: tuple[float, ...]
    """Each candidate's share of the held-out rows at `value`, in the candidates' (price) order."""
    rows: int
    meets: bool = True
    """False when even the dearest candidate alone misses the floor (then everything goes to it)."""


def choose(predicted: Sequence[float], threshold: float) -> int:
    """The index of the candidate the rule picks, candidates in price order."""
    last = len(predicted) - 1
    for i in range(last):
        if predicted[i] >= threshold:
            return i
    return last


def calibrate(cal: Calibration, columns: Sequence[int], *, min_quality: float | None = None,
              max_share: float | None = None) -> Threshold:
    """The threshold for candidates whose predictions are `columns` of the calibration rows (price order)."""
    if (min_quality is None) == (max_share is None):
        raise ValueError("calibrate for a quality floor or for a share of the dearest candidate, one of them")
    rows = [(tuple(p[c] for c in columns), tuple(s[c] for c in columns))
            for p, s in zip(cal.predicted, cal.scores, strict=True)]
    scored = [(p, tuple(float(v) for v in s if v is not None)) for p, s in rows if all(v is not None for v in s)]
    n = len(scored)
    if n < MIN_ROWS:
        raise ValueError(f"the router's held-out rows score {n} prompts on every candidate; calibrating needs "
                         f"at least {MIN_ROWS}")
    last = len(columns) - 1
    current = [last] * n
    total = sum(s[last] for _, s in scored)
    counts = [0] * len(columns)
    counts[last] = n
    # Each row's candidates (but the dearest) become eligible as t falls to their prediction.
    events = sorted(((p[i], r, i) for r, (p, _) in enumerate(scored) for i in range(last)), reverse=True)
    steps = [(math.inf, total, tuple(counts))]
    k = 0
    while k < len(events):
        t = events[k][0]
        while k < len(events) and events[k][0] == t:
            _, r, i = events[k]
            if i < current[r]:
                total += scored[r][1][i] - scored[r][1][current[r]]
                counts[current[r]] -= 1
                counts[i] += 1
                current[r] = i
            k += 1
        steps.append((t, total, tuple(counts)))
    if min_quality is not None:
        chosen = steps[0]
        for step in steps:
            if step[1] / n < min_quality - 1e-12:
                break
            chosen = step
        meets = steps[0][1] / n >= min_quality - 1e-12
    else:
        assert max_share is not None
        chosen = next((s for s in steps if s[2][last] / n <= max_share + 1e-12), steps[-1])
        meets = True
    t, total, shares = chosen
    return Threshold(t, total / n, tuple(c / n for c in shares), n, meets)
