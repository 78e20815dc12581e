from __future__ import annotations

import pytest

from gateway.learned import curve


def test_a_curve_computed_by_hand() -> None:
    # Routed to the strong model in ascending preference: prompt 1, 3, 2, 0.
    c = curve.curve([0.9, 0.1, 0.8, 0.5], cheap=[1, 0, 1, 0], strong=[1, 1, 1, 0])
    assert c.share == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert c.quality == (0.5, 0.75, 0.75, 0.75, 0.75)
    assert (c.cheap, c.strong) == (0.5, 0.75)
    # Area: 0.25 * (0.5 + 0.75) / 2 + 0.75 * 0.75 = 0.71875; (0.71875 - 0.5) / 0.25.
    assert curve.apgr(c) == pytest.approx(0.875)
    assert curve.cpt(c, 0.5) == pytest.approx(0.125)  # 0.625 is reached halfway to the first point
    assert curve.cpt(c, 0.8) == pytest.approx(0.2)
    assert curve.summary(c) == {"apgr": 0.875, "cpt50": 0.125, "cpt80": 0.2}


def test_a_router_that_cannot_tell_prompts_apart_is_the_random_router() -> None:
    c = curve.curve([0.5] * 4, cheap=[1, 0, 1, 0], strong=[1, 1, 1, 1])
    assert c.share == (0.0, 1.0)
    assert curve.summary(c) == curve.RANDOM


def test_the_worst_order_recovers_less_than_random() -> None:
    # The router sends the prompts the cheap model gets right to the strong model first.
    c = curve.curve([0.1, 0.9, 0.2, 0.8], cheap=[1, 0, 1, 0], strong=[1, 1, 1, 1])
    apgr = curve.apgr(c)
    assert apgr is not None and apgr < 0.5
    assert curve.cpt(c, 0.5) == pytest.approx(0.75)


def test_no_gap_has_no_metrics() -> None:
    c = curve.curve([0.2, 0.4], cheap=[1, 1], strong=[1, 0])
    assert curve.apgr(c) is None and curve.cpt(c, 0.5) is None


def test_a_curve_needs_prompts() -> None:
    with pytest.raises(ValueError, match="at least one prompt"):
        curve.curve([], [], [])
