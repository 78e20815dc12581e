from __future__ import annotations

import math

import pytest

from gateway.learned.calibrate import MIN_ROWS, calibrate, choose
from gateway.learned.model import Calibration


def two(rows: list[tuple[float, float, float]]) -> Calibration:
    """(predicted cheap score, true cheap score, true strong score) per row; the strong model predicted 0.9."""
    return Calibration(tuple((p, 0.9) for p, _, _ in rows), tuple((c, s) for _, c, s in rows))


# 20 rows: the cheap model is right on the 12 it is predicted best on, wrong on the rest; the strong one always.
ROWS = [(0.95 - 0.01 * i, 1.0, 1.0) for i in range(12)] + [(0.3 - 0.01 * i, 0.0, 1.0) for i in range(8)]


def test_the_floor_takes_the_lowest_threshold_that_meets_it() -> None:
    t = calibrate(two(ROWS), [0, 1], min_quality=0.9)
    # Down to 0.84 all 12 right ones go cheap (quality 1.0); the next lower threshold sends a wrong one too
    # (19/20 = 0.95), then 18/20 = 0.9, then 17/20 < 0.9: stop before it.
    assert t.value == pytest.approx(0.29)
    assert t.quality == pytest.approx(0.9)
    assert t.shares == pytest.approx((0.7, 0.3))
    assert t.rows == 20 and t.meets


def test_a_floor_no_mix_meets_sends_everything_to_the_dearest() -> None:
    rows = [(p, c, 0.5) for p, c, _ in ROWS]
    t = calibrate(two(rows), [0, 1], min_quality=0.9)
    assert math.isinf(t.value) and t.shares == (0.0, 1.0) and not t.meets


def test_a_cost_target_takes_the_highest_threshold_within_it() -> None:
    t = calibrate(two(ROWS), [0, 1], max_share=0.5)
    assert t.shares[1] <= 0.5
    assert t.value == pytest.approx(0.86)  # ten go cheap: the best ten
    assert t.quality == 1.0


def test_three_candidates_in_price_order() -> None:
    # Columns: the router's models are (strong, cheap, mid); the policy's price order is cheap, mid, strong.
    predicted = tuple((0.9, p_cheap, p_mid) for p_cheap, p_mid in [(0.9, 0.9)] * 10 + [(0.1, 0.8)] * 10
                      + [(0.1, 0.1)] * 10)
    scores = tuple((1.0, c, m) for c, m in [(1.0, 1.0)] * 10 + [(0.0, 1.0)] * 10 + [(0.0, 0.0)] * 10)
    t = calibrate(Calibration(predicted, scores), [1, 2, 0], min_quality=1.0)
    assert t.shares == pytest.approx((1 / 3, 1 / 3, 1 / 3)) and t.quality == 1.0
    assert choose((0.9, 0.9, 0.2), t.value) == 0
    assert choose((0.1, 0.8, 0.2), t.value) == 1
    assert choose((0.1, 0.1, 0.2), t.value) == 2


def test_too_few_rows_scored_on_every_candidate() -> None:
    rows = ROWS[: MIN_ROWS - 1]
    with pytest.raises(ValueError, match="calibrating needs at least 20"):
        calibrate(two(rows), [0, 1], min_quality=0.9)
    missing = Calibration(tuple((0.5, 0.5) for _ in range(30)), tuple((1.0, None) for _ in range(30)))
    with pytest.raises(ValueError, match="score 0 prompts"):
        calibrate(missing, [0, 1], max_share=0.5)
