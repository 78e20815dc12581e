"""The flywheel demonstration, for real: examples/flywheel/demo.py against the teacher, the gateway, peft on
the CPU, the real vLLM and the learned router. Slow (about 14 minutes alone on 2 cores, 30 on a busy machine):
marked e2e and slow.

As test_vllm_stack.py: without CI set an unbuilt stack skips it; with CI=true it builds the stack first.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.test_vllm_stack import REPO, built  # noqa: F401  (the fixture that builds the stack)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEMO = REPO / "examples" / "flywheel" / "demo.py"
TIMEOUT_S = 50 * 60


@pytest.fixture(scope="module")
def report(built: None, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: F811
    work = tmp_path_factory.mktemp("flywheel")
    out = work / "report.json"
    done = subprocess.run([sys.executable, str(DEMO), "--work", str(work / "run"), "--report", str(out)],
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if done.returncode != 0:
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((work / "run" / "logs").glob("*"))
                         if p.is_file())
        pytest.fail(f"the demo failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}\n{logs}")
    print(done.stdout[-3000:])
    return json.loads(out.read_text())  # type: ignore[no-any-return]


MIN_QUALITY = 0.9
"""The floor of both policies (demo.MIN_QUALITY)."""
NOISE = 0.03
"""How far below the floor the learned policy's measured quality may fall on the 90 final tickets: the
threshold is calibrated on the router's ~64 held-out prompts, so the routed traffic meets the floor in
expectation, not on every sample (one wrong answer is 1.1 points)."""


def test_the_adapter_agrees_with_the_teacher_on_the_kinds_it_learnt_not_on_the_hard_ones(report: dict) -> None:
    agreement = report["agreement"]
    assert agreement["final"] == report["tickets"]["final"] >= 80
    assert agreement["teacher_is_label"] == 1.0
    kinds = agreement["adapter_by_kind"]
    learnt = [k for k in kinds if k != "hard"]
    right = sum(kinds[k]["adapter"] * kinds[k]["tickets"] for k in learnt)
    assert right / sum(kinds[k]["tickets"] for k in learnt) >= 0.90, kinds
    assert kinds["hard"]["adapter"] <= 0.70, kinds  # the capture had none of them
    assert agreement["adapter"] < MIN_QUALITY  # so the task as a whole is below the floor
    assert agreement["adapter"] > agreement["base_model"] + 0.4  # it learnt the task, the base model did not


def test_the_per_task_rollout_kept_the_adapter_below_the_floor_out(report: dict) -> None:
    rollout, per_task = report["rollout"], report["per_task"]
    assert rollout["requests"] == report["tickets"]["live"]
    assert rollout["stage"] != "primary" and per_task["stage"] != "primary"
    assert per_task["adapter_share"] <= 0.5
    assert per_task["quality"] >= MIN_QUALITY


def test_the_router_learnt_from_the_rollouts_comparisons_and_never_saw_a_final_ticket(report: dict) -> None:
    router = report["router"]
    assert router["final_tickets_in_data"] == 0
    assert router["dataset"]["rows"] >= 0.75 * report["tickets"]["live"]
    assert router["dataset"]["comparisons"]["joined"] >= router["dataset"]["rows"]
    assert router["dataset"]["comparisons"]["unmatched"] == 0
    metrics = router["heldout_metrics"]
    assert metrics["learned"]["apgr"] > metrics["random"]["apgr"] + 0.1


def test_the_learned_policy_sends_more_to_the_adapter_at_the_floor_and_beats_a_random_split(report: dict) -> None:
    learned, per_task, random = report["learned"], report["per_task"], report["random_at_learned_share"]
    assert learned["quality"] >= MIN_QUALITY - NOISE, learned
    assert learned["adapter_share"] >= per_task["adapter_share"] + 0.3
    assert learned["adapter_share"] >= 0.5
    assert random["adapter_share"] == learned["adapter_share"]
    assert learned["quality"] >= random["quality"] + 0.05


def test_the_task_costs_less_per_request_after(report: dict) -> None:
    before, per_task, learned = report["before"], report["per_task"], report["learned"]
    assert before["savings_per_1000_usd"] == 0.0  # the teacher alone: nothing saved
    assert learned["cost_per_1000_usd"] < before["cost_per_1000_usd"] / 2
    assert learned["cost_per_1000_usd"] < per_task["cost_per_1000_usd"] / 2
    assert learned["savings_per_1000_usd"] > 0
    assert learned["mirror_cost_per_1000_usd"] == 0.0  # no rollout behind it: nothing asked twice


def test_distill_recorded_how_it_was_trained_and_scored(report: dict) -> None:
    manifest = report["manifest"]
    assert manifest["training"]["examples"] >= 200
    assert manifest["eval"]["adapter"] >= 0.85
    assert report["dataset"]["eval"] > 0
