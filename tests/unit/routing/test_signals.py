"""gateway/routing/signals.py: latency windows and answer lengths learned from finished requests."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.loader import load_text
from gateway.config.table import ModelRoute
from gateway.record import RequestRecord
from gateway.routing.signals import EWMA_ALPHA, MIN_SAMPLES, REFRESH_EVERY, WINDOW, Signals, Window

TABLE = load_text("""\
backends:
  a: {type: vllm, urls: ["http://127.0.0.1:9/v1"]}
models:
  m: {backend: a}
  n: {backend: a}
""")
M, N = TABLE.models["m"], TABLE.models["n"]
TASKS = frozenset({"support"})


def record(model: ModelRoute | None = M, **fields: Any) -> RequestRecord:
    values: dict[str, Any] = {"policy": "p", "model": model, "status": 200, "stream": True, "completion_tokens": 11,
                              "first_byte_s": 0.2, "duration_s": 1.2, **fields}
    return RequestRecord("r", 0.0, **values)


# -- Window ---------------------------------------------------------------------------------------


def test_an_empty_window_knows_nothing() -> None:
    w = Window()
    assert (w.count, w.p50, w.p95) == (0, None, None)


def test_quantiles_are_exact_while_the_window_fills() -> None:
    w = Window()
    for v in (3.0, 1.0, 2.0):
        w.add(v)
    assert (w.count, w.p50, w.p95) == (3, 2.0, 3.0)
    for v in range(4, MIN_SAMPLES + 1):
        w.add(float(v))
    assert (w.count, w.p50, w.p95) == (MIN_SAMPLES, float(MIN_SAMPLES // 2), float(MIN_SAMPLES))


def test_quantiles_refresh_every_few_samples_after_the_first_ones() -> None:
    w = Window()
    n = REFRESH_EVERY * 12  # 96: a multiple of REFRESH_EVERY past MIN_SAMPLES, so just refreshed
    assert n > MIN_SAMPLES and n < WINDOW
    for v in range(1, n + 1):
        w.add(float(v))
    assert (w.p50, w.p95) == (float((n - 1) // 2 + 1), float(round(0.95 * (n - 1)) + 1))
    before = (w.p50, w.p95)
    for _ in range(REFRESH_EVERY - 1):
        w.add(1000.0)
    assert (w.p50, w.p95) == before  # stale until the next refresh
    w.add(1000.0)
    assert w.p95 == 1000.0
    assert w.p50 is not None and before[0] is not None and w.p50 > before[0]


def test_old_samples_fall_out_of_the_window() -> None:
    w = Window()
    for _ in range(WINDOW):
        w.add(10.0)
    for _ in range(WINDOW):
        w.add(1.0)
    assert (w.count, w.p50, w.p95) == (2 * WINDOW, 1.0, 1.0)


# -- Signals.observe --------------------------------------------------------------------------------


def test_a_stream_gives_time_to_first_token_and_time_per_token() -> None:
    sig = Signals(exact_tokens=False)
    sig.observe(record(first_byte_s=0.2, duration_s=1.2, completion_tokens=11), TASKS)
    speed = sig.speed("m")
    assert speed is not None
    assert speed.ttft.p50 == 0.2
    assert speed.tpot.p50 == pytest.approx(0.1)
    assert sig.speed("n") is None


def test_a_json_answer_is_split_with_the_measured_first_token_time() -> None:
    sig = Signals(exact_tokens=False)
    sig.observe(record(stream=False, first_byte_s=None, duration_s=1.0, completion_tokens=10), TASKS)
    speed = sig.speed("m")
    assert speed is not None
    assert speed.ttft.count == 0
    assert speed.tpot.p50 == pytest.approx(0.1)  # no first-token time yet: all of it is decoding
    sig.observe(record(first_byte_s=0.5, duration_s=0.5, completion_tokens=1), TASKS)  # a stream: ttft only
    sig.observe(record(stream=False, first_byte_s=None, duration_s=1.5, completion_tokens=10), TASKS)
    assert (speed.ttft.count, speed.tpot.count) == (1, 2)
    # (1.5 s - the measured 0.5 s to first token) / 10 tokens, not 1.5 s / 10
    assert speed.tpot.p50 == pytest.approx(0.1)
    assert speed.tpot.p95 == pytest.approx(0.1)


def test_a_model_is_ready_after_min_samples_of_both() -> None:
    sig = Signals(exact_tokens=False)
    for i in range(MIN_SAMPLES):
        speed = sig.speed("m")
        assert speed is None or not speed.ready()
        sig.observe(record(completion_tokens=2 + i), TASKS)
    speed = sig.speed("m")
    assert speed is not None and speed.ready()


@pytest.mark.parametrize("fields", [
    {"status": 502},
    {"status": 499},
    {"model": None},
    {"completion_tokens": None},
])
def test_failed_or_unmeasured_requests_teach_nothing(fields: dict[str, Any]) -> None:
    sig = Signals(exact_tokens=False)
    sig.observe(record(**fields), TASKS)
    assert sig.speed("m") is None
    assert sig.expected_output_tokens("p", None) is None


def test_answer_lengths_are_a_moving_average_per_policy_and_task() -> None:
    sig = Signals(exact_tokens=False)
    sig.observe(record(task="support", completion_tokens=100), TASKS)
    assert sig.expected_output_tokens("p", "support") == 100
    sig.observe(record(task="support", completion_tokens=200), TASKS)
    assert sig.expected_output_tokens("p", "support") == pytest.approx(100 + EWMA_ALPHA * 100)
    assert sig.expected_output_tokens("p", None) is None
    assert sig.expected_output_tokens("other", "support") is None


def test_tasks_the_config_does_not_name_share_one_average() -> None:
    sig = Signals(exact_tokens=False)
    sig.observe(record(task="made-up-1", completion_tokens=40), TASKS)
    sig.observe(record(task="made-up-2", completion_tokens=40), TASKS)
    assert sig.expected_output_tokens("p", None) == 40
    assert sig.expected_output_tokens("p", "made-up-1") is None


def test_measurements_are_keyed_by_model_name_and_outlive_a_reload() -> None:
    sig = Signals(exact_tokens=False)
    sig.observe(record(model=M), TASKS)
    reloaded = load_text("backends:\n  a: {type: vllm, urls: ['http://127.0.0.1:9/v1']}\nmodels:\n  m: {backend: a}\n")
    sig.observe(record(model=reloaded.models["m"]), TASKS)
    speed = sig.speed("m")
    assert speed is not None and speed.ttft.count == 2


def test_the_encoder_follows_exact_tokens() -> None:
    assert Signals(exact_tokens=False).encoder is None
    assert Signals(exact_tokens=True).encoder is not None  # tiktoken from litellm's bundled files
