"""The flywheel demonstration, for real: examples/flywheel/demo.py against the teacher, the gateway, peft on
the CPU and the real vLLM. Slow (about 11 minutes alone on 2 cores, 20 on a busy machine): marked e2e and slow.

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


def test_the_adapter_agrees_with_the_teacher_on_held_out_tickets(report: dict) -> None:
    agreement = report["agreement"]
    assert agreement["heldout"] >= 100
    assert agreement["adapter"] >= 0.90, agreement
    assert agreement["adapter"] > agreement["base_model"] + 0.5  # it learnt the task, the base model did not


def test_the_adapter_earned_the_traffic_through_shadow_and_canary(report: dict) -> None:
    stages = [h["to"] for h in report["rollout"]["history"]]
    assert stages[0] == "canary[0]" and stages[-1] == "primary"
    assert all(s.startswith("canary") for s in stages[1:-1])
    assert report["after"]["stage"] == "primary"
    assert report["after"]["adapter_share"] >= 0.80


def test_the_task_costs_less_per_request_after(report: dict) -> None:
    before, after = report["before"], report["after"]
    assert before["savings_per_1000_usd"] == 0.0  # the teacher alone: nothing saved
    assert after["cost_per_1000_usd"] < before["cost_per_1000_usd"] / 3
    assert after["savings_per_1000_usd"] > 0
    # Even counting what the audits cost, the task is cheaper.
    assert after["cost_per_1000_usd"] + after["mirror_cost_per_1000_usd"] < before["cost_per_1000_usd"]


def test_distill_recorded_how_it_was_trained_and_scored(report: dict) -> None:
    manifest = report["manifest"]
    assert manifest["training"]["examples"] >= 200
    assert manifest["eval"]["adapter"] >= 0.85
    assert report["dataset"]["eval"] > 0
