"""RouteLLM's metrics for a router between a cheap and a strong model (Ong et al., 2024, section 5.1).

A router sends a share x of the calls to the strong model; the quality it gets is the mean score of the
answers it chose. Ordering the prompts by the router's preference (here: lowest predicted score of the cheap
model first), x runs from 0 (all cheap) to 1 (all strong) and draws the quality-against-cost curve.

- PGR(x), the performance gap recovered: (quality(x) - cheap) / (strong - cheap).
- `apgr`: its mean over x in [0, 1], the area under the curve between the two models' lines (trapezoids, one
  point per distinct prediction: prompts the router cannot tell apart move together, as a random tie-break
  would move them on average).
- `cpt50`, `cpt80`: the smallest share of strong calls whose curve recovers 50% and 80% of the gap.
- A random router sends each prompt to the strong model with probability x: its expected curve is the
  straight line, so its apgr is 0.5, its cpt50 0.5 and its cpt80 0.8, exactly (RouteLLM averages ten random
  runs to about the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RANDOM = {"apgr": 0.5, "cpt50": 0.5, "cpt80": 0.8}


@dataclass(frozen=True, slots=True)
class Curve:
    share: tuple[float, ...]
    """Share of calls to the strong model, from 0 to 1."""
    quality: tuple[float, ...]
    """Mean score at each share."""
    cheap: float
    strong: float


def curve(preference: Sequence[float], cheap: Sequence[float], strong: Sequence[float]) -> Curve:
    """The curve of a router that sends prompts to the strong model in ascending `preference` (for this
    router: the cheap model's predicted score), given each prompt's true scores."""
    n = len(preference)
    if n == 0 or len(cheap) != n or len(strong) != n:
        raise ValueError("a curve needs one preference and two scores per prompt, and at least one prompt")
    order = sorted(range(n), key=lambda i: preference[i])
    total = sum(cheap)
    share, quality = [0.0], [total / n]
    for k, i in enumerate(order, 1):
        total += strong[i] - cheap[i]
        if k < n and preference[order[k]] == preference[i]:
            continue  # a tie: the prompts move together
        share.append(k / n)
        quality.append(total / n)
    return Curve(tuple(share), tuple(quality), sum(cheap) / n, sum(strong) / n)


def apgr(c: Curve) -> float | None:
    """The average performance gap recovered; None when the strong model is not better than the cheap one."""
    gap = c.strong - c.cheap
    if gap <= 0:
        return None
    area = sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(c.share, c.share[1:], c.quality, c.quality[1:],
                                                                    strict=False))
    return (area - c.cheap) / gap


def cpt(c: Curve, recovered: float) -> float | None:
    """The smallest share of strong calls at which the curve recovers `recovered` (0..1) of the gap, between
    the two points it falls between; None without a gap."""
    gap = c.strong - c.cheap
    if gap <= 0:
        return None
    target = c.cheap + recovered * gap
    for i, y in enumerate(c.quality):
        if y >= target - 1e-12:
            if i == 0:
                return 0.0
            x0, x1, y0 = c.share[i - 1], c.share[i], c.quality[i - 1]
            return x0 + (target - y0) / (y - y0) * (x1 - x0)
    return 1.0  # not reached: the last point is the strong model's own quality


def summary(c: Curve) -> dict[str, float | None]:
    return {"apgr": _round(apgr(c)), "cpt50": _round(cpt(c, 0.5)), "cpt80": _round(cpt(c, 0.8))}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)
