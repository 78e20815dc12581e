"""`nanoroute router eval`: a router's RouteLLM metrics on held-out rows, and its quality-against-cost plot.

For the cheap and the strong model (by default the models with the lowest and the highest mean score; name
them when the cheapest is not the worst), on the rows that score both: the learned router's `apgr`, `cpt50`
and `cpt80` (curve.py), a random router's, and every model's mean score, as one JSON object.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.learned import curve as curves
from gateway.learned.data import DataError, Row
from gateway.learned.model import Router


def evaluate(router: Router, rows: Sequence[Row], source: str, *, cheap: str | None = None,
             strong: str | None = None, plot: Path | None = None) -> dict[str, Any]:
    predicted = [router.predict(r.body) for r in rows]
    means = {m: _mean([r.scores[m] for r in rows if m in r.scores]) for m in router.models}
    known = {m: v for m, v in means.items() if v is not None}
    if len(known) < 2:
        raise DataError("the rows score fewer than two of the router's models")
    cheap = cheap or min(known, key=lambda m: (known[m], m))
    strong = strong or max(known, key=lambda m: (known[m], m))
    for name in (cheap, strong):
        if name not in router.models:
            raise DataError(f"'{name}' is not one of the router's models ({', '.join(router.models)})")
    if cheap == strong:
        raise DataError("the cheap and the strong model are the same")
    i = router.models.index(cheap)
    pairs = [(p[i], r.scores[cheap], r.scores[strong]) for p, r in zip(predicted, rows, strict=True)
             if cheap in r.scores and strong in r.scores]
    if not pairs:
        raise DataError(f"no row scores both '{cheap}' and '{strong}'")
    c = curves.curve(*zip(*pairs, strict=True))
    if plot is not None:
        _plot(c, cheap, strong, plot)
    return {
        "router": str(router.path), "version": router.version, "data": source, "rows": len(pairs),
        "cheap": cheap, "strong": strong,
        "mean_scores": {m: None if v is None else round(v, 4) for m, v in means.items()},
        "learned": curves.summary(c),
        "random": dict(curves.RANDOM),
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _plot(c: curves.Curve, cheap: str, strong: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot([100 * x for x in c.share], c.quality, label="learned router", marker=".", markersize=3)
    ax.plot([0, 100], [c.cheap, c.strong], label="random router", linestyle=":")
    ax.axhline(c.cheap, color="grey", linestyle="--", label=f"{cheap} alone")
    ax.axhline(c.strong, color="red", linestyle="--", label=f"{strong} alone")
    ax.set_xlabel(f"calls to {strong} (%)")
    ax.set_ylabel("mean score")
    ax.set_title("Quality against cost")
    ax.legend(loc="lower right")
    fig.savefig(path, bbox_inches="tight", dpi=120)
    plt.close(fig)
