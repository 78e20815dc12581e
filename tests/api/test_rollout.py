"""Rollouts through a running gateway, with the official SDK: a model shadows, goes canary, becomes
primary on measured agreement, and falls back when its answers stop agreeing; operators see and steer it.

Each gateway gets a data folder of the test's own: a rollout's state is kept in the store, and outlives
the gateway (test_rollout_shared.py shares one between gateways)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from gateway.capture.sink import files_in
from gateway.distill import routing
from tests.api.support import Client, wait_until
from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream

ADMIN_KEY = "admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def config(teacher: FakeUpstream, student: FakeUpstream) -> str:
    return f"""\
backends:
  hosted: {{type: openai, url: {teacher.url}}}
  local: {{type: openai, url: {student.url}}}
models:
  large: {{backend: hosted, price: {{input: 2.5, output: 10}}, quality: {{triage: 0.95}}}}
  small: {{backend: local, price: {{input: 0.02, output: 0.02}}}}
policies:
  - name: triage
    match: {{task: triage}}
    candidates: [large]
    require: {{min_quality: 0.9}}
    rollout: {{model: small, shadow_sample: 1.0, audit_sample: 1.0, min_samples: 5, window: 5,
              canary_steps: [0.5]}}
"""


def ask(client: Client, base: str) -> str:
    raw = client(base).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "I was charged twice"}],
        extra_headers={"X-Nanoroute-Task": "triage"})
    return raw.headers["x-nanoroute-model"]


def rollout(root: str) -> dict[str, Any]:
    data = httpx.get(f"{root}/admin/rollouts", headers=ADMIN).json()["rollouts"]
    assert len(data) == 1
    return data[0]  # type: ignore[no-any-return]


def drive(client: Client, base: str, root: str, until_stage: str, limit: int = 60) -> list[str]:
    """Send requests one by one (each mirror settles first) until the rollout reaches `until_stage`."""
    served = []
    for _ in range(limit):
        if rollout(root)["stage"] == until_stage:
            return served
        before = rollout(root)["scored_total"]
        served.append(ask(client, base))
        wait_until(lambda before=before: rollout(root)["scored_total"] > before)
    raise AssertionError(f"still {rollout(root)['stage']} after {limit} requests")


def test_a_model_that_agrees_is_promoted_and_one_that_stops_is_sent_back(servers: Servers, client: Client,
                                                                         tmp_path: Path) -> None:
    teacher = servers.upstream("teacher", answer="billing")
    student = servers.upstream("student", answer="Billing.")  # the same label, as the evaluator reads it
    base = servers.gateway(config(teacher, student), admin_key=ADMIN_KEY, data_dir=tmp_path)
    root = base.removesuffix("/v1")
    assert rollout(root)["stage"] == "shadow"

    served = drive(client, base, root, "canary")
    assert set(served) == {"large"} and len(served) == 5  # min_samples, all served by the teacher
    assert len([s for s in student.seen if s.body["model"] == "small"]) == 5  # ... and mirrored to the student
    assert not any(s.body.get("stream") for s in student.seen)

    served = drive(client, base, root, "primary")
    assert len(served) == 5 and "small" in served  # half of them, by chance, served by the student
    assert all(ask(client, base) == "small" for _ in range(3))

    student.answer = "shipping"  # it starts to disagree: the audits catch it
    drive(client, base, root, "shadow")
    assert ask(client, base) == "large"
    state = rollout(root)
    assert [h["to"] for h in state["history"]] == ["canary[0]", "primary", "shadow"]
    assert state["history"][-1]["why"].startswith("score 0.")

    metrics = httpx.get(f"{root}/metrics").text
    assert 'nanoroute_rollout_stage{model="small",policy="triage",stage="shadow"} 1.0' in metrics
    assert 'nanoroute_rollout_transitions_total{model="small",policy="triage",stage="primary"} 1.0' in metrics
    assert 'nanoroute_rollout_comparisons_total{model="small",outcome="scored",policy="triage"}' in metrics
    assert 'nanoroute_route_decisions_total{model="small",policy="triage",reason="rollout"}' in metrics


def test_each_comparison_is_recorded_for_the_routing_dataset(servers: Servers, client: Client,
                                                             tmp_path: Path) -> None:
    """A scored comparison is a line of the capture's `comparisons` file set, keyed by the request whose
    answer it compared; with that request's capture, it makes a row of `nanoroute router dataset`."""
    teacher, student = servers.upstream("teacher", answer="billing"), servers.upstream("student", answer="returns")
    captured = config(teacher, student).replace("    rollout:", "    capture: {sample: 1.0}\n    rollout:")
    base = servers.gateway(captured, admin_key=ADMIN_KEY, data_dir=tmp_path)
    root = base.removesuffix("/v1")
    for _ in range(3):
        before = rollout(root)["scored_total"]
        assert ask(client, base) == "large"
        wait_until(lambda before=before: rollout(root)["scored_total"] > before)

    def lines(file_set: str) -> list[dict[str, Any]]:
        folder = tmp_path / "captures" / file_set
        return [json.loads(line) for f in files_in(folder) for line in f.read_text().splitlines()]

    wait_until(lambda: len(lines("comparisons")) == 3 and len(lines("tasks/triage")) == 3)
    compared = lines("comparisons")
    assert {r["request_id"] for r in compared} == {r["request_id"] for r in lines("tasks/triage")}
    assert all(set(r) == {"ts", "request_id", "client", "task", "policy", "model", "reference", "score", "evaluator",
                          "stage"} for r in compared)
    assert {(r["task"], r["policy"], r["model"], r["reference"], r["score"], r["evaluator"], r["stage"], r["client"])
            for r in compared} == {("triage", "triage", "small", "large", 0.0, "exact", "shadow", None)}

    stats = routing.build(tmp_path / "captures", tmp_path / "routing.jsonl")
    [row] = [json.loads(line) for line in (tmp_path / "routing.jsonl").read_text().splitlines()]
    assert row["scores"] == {"large": 1.0, "small": 0.0}  # one prompt, asked three times
    assert row["messages"] == [{"role": "user", "content": "I was charged twice"}]
    assert stats["comparisons"] == {"read": 3, "joined": 3, "unmatched": 0, "invalid": 0}


def test_the_measured_score_becomes_the_models_quality_for_other_policies(servers: Servers, client: Client,
                                                                          tmp_path: Path) -> None:
    teacher, student = servers.upstream("teacher", answer="billing"), servers.upstream("student", answer="billing")
    cheap = """  - {name: cheap, match: {model: [cheap]}, strategy: cheapest, candidates: [small, large],
     require: {min_quality: 0.9}}
"""
    base = servers.gateway(config(teacher, student).replace("policies:\n", "policies:\n" + cheap),
                           admin_key=ADMIN_KEY, data_dir=tmp_path)
    root = base.removesuffix("/v1")

    def explain() -> dict[str, Any]:
        body = {"model": "cheap", "messages": [{"role": "user", "content": "I was charged twice"}]}
        return httpx.post(f"{root}/admin/explain", headers={**ADMIN, "X-Nanoroute-Task": "triage"},
                          json=body).json()  # type: ignore[no-any-return]

    before = explain()
    assert (before["choice"], before["reason"]) == ("large", "quality_floor")  # no catalog quality for small
    drive(client, base, root, "canary")
    after = explain()
    assert (after["choice"], after["reason"]) == ("small", "cheapest")
    assert after["candidates"][0]["quality"] == 1.0


def test_operators_pin_stop_and_resume(servers: Servers, client: Client, tmp_path: Path) -> None:
    teacher, student = servers.upstream("teacher", answer="billing"), servers.upstream("student", answer="billing")
    base = servers.gateway(config(teacher, student), admin_key=ADMIN_KEY, data_dir=tmp_path)
    root = base.removesuffix("/v1")
    pinned = httpx.post(f"{root}/admin/rollouts/triage", headers=ADMIN, json={"action": "pin", "stage": "primary"})
    assert pinned.status_code == 200 and pinned.json()["stage"] == "primary" and not pinned.json()["auto"]
    assert ask(client, base) == "small"
    stopped = httpx.post(f"{root}/admin/rollouts/triage", headers=ADMIN, json={"action": "stop"}).json()
    assert stopped["stage"] == "stopped"
    mirrored = len(student.seen)
    assert ask(client, base) == "large"
    assert len(student.seen) == mirrored  # nothing mirrored while stopped
    resumed = httpx.post(f"{root}/admin/rollouts/triage", headers=ADMIN, json={"action": "resume"}).json()
    assert (resumed["stage"], resumed["auto"]) == ("shadow", True)

    bad = httpx.post(f"{root}/admin/rollouts/triage", headers=ADMIN, json={"action": "jump"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "action"
    missing = httpx.post(f"{root}/admin/rollouts/nope", headers=ADMIN, json={"action": "stop"})
    assert missing.status_code == 404
    assert httpx.get(f"{root}/admin/rollouts").status_code == 401


def judged(teacher: FakeUpstream, student: FakeUpstream, judge: FakeUpstream, price: str = "") -> str:
    """`config`, with the rollout scored by model `grader` (on upstream `judge`)."""
    return config(teacher, student).replace(
        "  small:", f"  grader: {{backend: grading, {price}}}\n  small:").replace(
        "  local:", f"  grading: {{type: openai, url: {judge.url}}}\n  local:").replace(
        "canary_steps: [0.5]}", "canary_steps: [0.5], evaluator: judge, judge: grader}")


def test_a_judge_grades_free_text_answers(servers: Servers, client: Client, tmp_path: Path) -> None:
    """Support replies differ in wording: a judge model, asked off the path, says whether the adapter's
    answer is as good as the one served. Its PASS moves the rollout on; its FAIL holds it back."""
    teacher = servers.upstream("teacher", answer="Sorry about the double charge: a refund is on its way.")
    student = servers.upstream("student", answer="We refunded the second charge; sorry for the trouble.")
    judge = servers.upstream("judge", answer="PASS-{nonce}")
    base = servers.gateway(judged(teacher, student, judge, "price: {input: 5, output: 15}"), admin_key=ADMIN_KEY,
                           data_dir=tmp_path)
    root = base.removesuffix("/v1")

    assert (rollout(root)["evaluator"], rollout(root)["judge"]) == ("judge", "grader")
    drive(client, base, root, "canary")
    assert rollout(root)["history"][-1]["why"].startswith("score 1.000")
    graded = [s.body for s in judge.seen]
    assert len(graded) == 5 and all(b["model"] == "grader" and b["temperature"] == 0 for b in graded)
    data = json.loads(graded[0]["messages"][-1]["content"])
    # The reference is the answer served (the teacher's); the one graded is the student's.
    assert (data["reference_answer"], data["answer_to_grade"]) == (teacher.answer, student.answer)
    assert "I was charged twice" in data["conversation"][-1]["content"]
    metrics = httpx.get(f"{root}/metrics").text
    assert 'nanoroute_rollout_mirror_cost_usd_total{model="grader",policy="triage"}' in metrics

    judge.answer = "FAIL-{nonce}: it promises a refund the reference does not."
    drive(client, base, root, "shadow")
    assert rollout(root)["history"][-1]["why"].startswith("score 0.")


def test_a_judge_that_cannot_be_reached_scores_nothing(servers: Servers, client: Client,
                                                      tmp_path: Path) -> None:
    teacher, student = servers.upstream("teacher", answer="a"), servers.upstream("student", answer="b")
    judge = servers.upstream("judge", behaviour="status:500")
    base = servers.gateway(judged(teacher, student, judge), admin_key=ADMIN_KEY, data_dir=tmp_path)
    root = base.removesuffix("/v1")
    for _ in range(3):
        assert ask(client, base) == "large"
    wait_until(lambda: 'outcome="error",policy="triage"} 3.0' in httpx.get(f"{root}/metrics").text)
    state = rollout(root)
    assert (state["scored_total"], state["score"], state["stage"]) == (0, None, "shadow")
