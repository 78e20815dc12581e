"""gateway/rollout.py: the stages, the moves between them, and what each stage does to a decision."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.backends.base import Operation
from gateway.config.loader import load_text
from gateway.config.table import RoutingTable
from gateway.errors import ConfigError, InvalidRequest, NotFound
from gateway.rollout import Rollouts, RolloutState, upper_bound
from gateway.routing.decide import decide
from gateway.routing.request import parse_request
from gateway.routing.signals import Signals

CONFIG = """\
backends:
  hosted: {type: openai, url: 'http://127.0.0.1:1/v1'}
  local: {type: vllm, urls: ['http://127.0.0.1:2/v1']}
models:
  large: {backend: hosted, price: {input: 1, output: 2}, quality: {triage: 0.95}}
  small: {backend: local, price: {input: 0.01, output: 0.01}}
policies:
  - name: triage
    match: {task: triage}
    candidates: [large]
    require: {min_quality: 0.9}
    rollout: {model: small, min_samples: 4, window: 8, canary_steps: [0.25, 0.5], shadow_sample: 0.5,
              audit_sample: 0.1%s}
"""


class Draws:
    """A random source that returns the values queued, so each draw's outcome is chosen by the test."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def __call__(self) -> float:
        return self.values.pop(0)


def table(extra: str = "") -> RoutingTable:
    return load_text(CONFIG % extra)


@pytest.fixture
def draws() -> Draws:
    return Draws()


@pytest.fixture
def rollouts(draws: Draws) -> Iterator[Rollouts]:
    r = Rollouts(Signals(exact_tokens=False), rng=draws)
    r.configure(table(), {})
    yield r


def state(r: Rollouts) -> RolloutState:
    return r._states["triage"]


def request() -> object:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "I was charged twice"}]}'
    return parse_request(Operation.CHAT, body, task_header="triage", key_id=None, request_id="r1")


def route(r: Rollouts, t: RoutingTable | None = None) -> tuple[list[str], str, str | None]:
    req = request()
    decision, probe = r.route(decide(t or table(), req, r.signals), req)  # type: ignore[arg-type]
    mirrored = None if probe is None else probe.mirror.name
    return [m.name for m in decision.chain], decision.reason, mirrored


def scores(r: Rollouts, *values: float) -> None:
    for v in values:
        r.record(state(r), v, "triage")


def test_shadow_serves_as_usual_and_mirrors_a_sample(rollouts: Rollouts, draws: Draws) -> None:
    draws.values = [0.4, 0.6]
    assert route(rollouts) == (["large"], "ordered", "small")  # 0.4 < shadow_sample 0.5: mirrored
    assert route(rollouts) == (["large"], "ordered", None)


def test_good_scores_move_it_through_the_canary_steps_to_primary(rollouts: Rollouts, draws: Draws) -> None:
    st = state(rollouts)
    scores(rollouts, 1, 1, 1)
    assert st.stage == "shadow"  # min_samples is 4
    scores(rollouts, 1)
    assert (st.stage, st.step, st.share) == ("canary", 0, 0.25)
    draws.values = [0.2, 0.05, 0.3, 0.9]
    assert route(rollouts) == (["small", "large"], "rollout", "large")  # served by it, audited (0.05 < 0.1)
    assert route(rollouts) == (["large"], "ordered", None)  # 0.3 >= 0.25: not its share; 0.9: not mirrored
    scores(rollouts, 1, 1, 1)
    assert (st.stage, st.step) == ("canary", 0)  # each step needs min_samples of its own
    scores(rollouts, 1)
    assert (st.stage, st.step) == ("canary", 1)
    scores(rollouts, 1, 1, 1, 1)
    assert (st.stage, st.share) == ("primary", 1.0)
    draws.values = [0.5]
    assert route(rollouts) == (["small", "large"], "rollout", None)
    assert [h["to"] for h in st.history] == ["canary[0]", "canary[1]", "primary"]


def test_a_score_below_min_quality_sends_it_back_to_shadow(rollouts: Rollouts) -> None:
    st = state(rollouts)
    scores(rollouts, 1, 1, 1, 1)
    assert st.stage == "canary"
    scores(rollouts, 1, 0, 1, 0)
    assert (st.stage, st.share) == ("shadow", 0.0)
    assert st.history[-1]["why"] == "score 0.500 (at most 0.818) < 0.9 over 4"
    scores(rollouts, 0, 0, 0, 0)
    assert st.stage == "shadow"  # a bad score in shadow only keeps it there


def test_a_score_just_under_the_floor_is_not_enough_to_move_back(rollouts: Rollouts) -> None:
    st = state(rollouts)
    scores(rollouts, *[1] * 12)
    assert st.stage == "primary"
    scores(rollouts, 1, 1, 1, 1, 1, 1, 0)  # 6 of 7, 0.857 < 0.9: but it could well be 0.9 after 7 scores
    assert (st.stage, st.scored) == ("primary", 7)
    scores(rollouts, 0)  # 6 of the last 8 (the window): 0.75, at most 0.91
    assert st.stage == "primary"
    scores(rollouts, 0)  # 5 of 8: 0.625, at most 0.84
    assert st.stage == "shadow"
    assert upper_bound(6 / 7, 7) > 0.9
    assert upper_bound(0.5, 200) < 0.6 and upper_bound(1.0, 1) == 1.0 and upper_bound(0.0, 0) == 1.0


def test_the_live_score_becomes_the_models_measured_quality(rollouts: Rollouts) -> None:
    scores(rollouts, 1, 1, 1)
    assert rollouts.signals.quality("small", "triage") is None  # not before min_samples
    scores(rollouts, 0)
    assert rollouts.signals.quality("small", "triage") == 0.75


def test_an_operator_pins_stops_and_resumes(rollouts: Rollouts, draws: Draws) -> None:
    st = state(rollouts)
    rollouts.act("triage", "pin", "canary", 1)
    assert (st.stage, st.step, st.auto) == ("canary", 1, False)
    scores(rollouts, 0, 0, 0, 0)
    assert st.stage == "canary"  # pinned: the scores do not move it
    assert rollouts.act("triage", "stop")["stage"] == "stopped"
    assert route(rollouts) == (["large"], "ordered", None)  # no draw at all while stopped
    assert rollouts.act("triage", "resume")["stage"] == "shadow" and st.auto
    with pytest.raises(NotFound):
        rollouts.act("nope", "stop")
    with pytest.raises(InvalidRequest, match="pin needs a stage"):
        rollouts.act("triage", "pin")
    with pytest.raises(InvalidRequest, match=r"step must be 0\.\.1"):
        rollouts.act("triage", "pin", "canary", 2)
    with pytest.raises(InvalidRequest, match="action must be"):
        rollouts.act("triage", "promote")


def test_a_reload_keeps_the_state_unless_the_model_changes(rollouts: Rollouts) -> None:
    scores(rollouts, 1, 1, 1, 1)
    rollouts.configure(table(", auto: true"), {})
    assert state(rollouts).stage == "canary"
    other = CONFIG.replace("model: small", "model: small2") + "  \n"
    other = other.replace("models:\n", "models:\n  small2: {backend: local}\n")
    rollouts.configure(load_text(other % ""), {})
    assert state(rollouts).stage == "shadow"


def test_a_reload_that_changes_stage_or_auto_applies_it_and_only_then(rollouts: Rollouts) -> None:
    """Every gateway reads the same config: changing `stage` or `auto` there moves them all at once."""
    scores(rollouts, 1, 1, 1, 1)
    assert state(rollouts).stage == "canary"
    rollouts.configure(table(", stage: primary, auto: false"), {})
    assert (state(rollouts).stage, state(rollouts).auto) == ("primary", False)
    assert state(rollouts).history[-1]["why"] == "set by the config"
    rollouts.configure(table(", stage: primary, auto: false"), {})  # unchanged: nothing moves
    assert len(state(rollouts).history) == 2
    rollouts.act("triage", "pin", "canary", 1)  # an operator's pin survives a reload that changes neither
    rollouts.configure(table(", stage: primary, auto: false, max_concurrency: 3"), {})
    assert (state(rollouts).stage, state(rollouts).step) == ("canary", 1)
    rollouts.configure(table(", stage: primary"), {})
    assert state(rollouts).auto is True


@pytest.mark.parametrize(("old", "new", "complaint"), [
    ("canary_steps: [0.25, 0.5]", "canary_steps: [0.5, 0.25]", "canary_steps must grow"),
    ("window: 8", "window: 2", "window must hold at least min_samples"),
    ("canary_steps: [0.25, 0.5]", "canary_steps: [0.25, 1.0]", "less than 1"),
    ("min_samples: 4", "min_samples: 4, stage: live", "Input should be 'shadow', 'canary' or 'primary'"),
    ("min_samples: 4", "min_samples: 4, evaluator: judge", "evaluator: judge needs a judge model"),
    ("min_samples: 4", "min_samples: 4, judge: large", "a judge model needs evaluator: judge"),
    ("min_samples: 4", "min_samples: 4, evaluator: judge, judge: huge", "unknown model 'huge'"),
])
def test_bad_rollout_settings_fail_the_load(old: str, new: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        load_text((CONFIG % "").replace(old, new))


def test_the_judge_is_resolved_to_its_catalog_model() -> None:
    policy = load_text(CONFIG % ", evaluator: judge, judge: large").policies[0]
    assert policy.rollout is not None and policy.rollout.judge is not None
    assert policy.rollout.judge.name == "large"


def test_a_rollout_needs_a_quality_floor_and_a_model_that_is_not_a_candidate() -> None:
    with pytest.raises(ConfigError, match=r"needs require\.min_quality"):
        load_text((CONFIG % "").replace("require: {min_quality: 0.9}", "require: {}"))
    with pytest.raises(ConfigError, match="must not be a candidate too"):
        load_text((CONFIG % "").replace("candidates: [large]", "candidates: [large, small]"))
    with pytest.raises(ConfigError, match="unknown model 'tiny'"):
        load_text((CONFIG % "").replace("model: small,", "model: tiny,"))
