"""`nanoroute distill eval --url` against a real OpenAI-compatible server on loopback (the fake upstream
standing in for vLLM serving the adapter, and for the gateway asking a judge): what is asked, how it is
scored, and what the manifest records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.distill import manifest
from tests.fakes.servers import Servers

SYSTEM = {"role": "system", "content": "Reply with one queue name only."}


def setup(tmp_path: Path, answers: list[str]) -> Path:
    """A trained adapter's manifest and its held-out examples, as `distill train` leaves them."""
    data = tmp_path / "datasets" / "triage"
    data.mkdir(parents=True)
    rows = [{"messages": [SYSTEM, {"role": "user", "content": f"ticket {i}"}, {"role": "assistant", "content": a}]}
            for i, a in enumerate(answers)]
    (data / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "train.jsonl").write_text("")
    path = manifest.path_for(tmp_path / "adapters", "triage-lora")
    manifest.write(path, {"name": "triage-lora", "base_model": "smol", "tasks": ["triage"], "path": "w",
                          "training": {"data": "datasets/triage/train.jsonl", "examples": 10}})
    return path


def test_exact_labels_through_a_server(servers: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = setup(tmp_path, ["billing", "returns", "Billing", "account"])
    up = servers.upstream(answer="billing.")
    assert main(["distill", "eval", "--adapter", "triage-lora", "--adapters-dir", str(tmp_path / "adapters"),
                 "--url", up.url, "--api-key", "sk-test", "--header", "X-Nanoroute-Task: triage"]) == 0
    section = yaml.safe_load(path.read_text())["eval"]
    assert (section["metric"], section["examples"], section["adapter"], section["base"]) == ("exact_match", 4, 0.5, 0.5)
    assert (section["data"], section["via"]) == ("datasets/triage/eval.jsonl", up.url)
    assert yaml.safe_load(path.read_text())["training"]["examples"] == 10  # the rest of the manifest is kept
    assert sorted(s.body["model"] for s in up.seen) == ["smol"] * 4 + ["triage-lora"] * 4
    seen = up.seen[0]
    assert seen.body["temperature"] == 0 and seen.body["max_tokens"] >= 16
    assert seen.body["messages"][0] == SYSTEM and seen.body["messages"][-1]["role"] == "user"  # no answer sent
    assert seen.headers["authorization"] == "Bearer sk-test" and seen.headers["x-nanoroute-task"] == "triage"
    assert "triage-lora: 50% exact_match on 4 held-out examples (base model: 50%)" in capsys.readouterr().out


def test_json_answers_are_scored_by_field(servers: Servers, tmp_path: Path) -> None:
    path = setup(tmp_path, ['{"queue": "billing", "urgent": true}', '{"queue": "billing", "urgent": false}'])
    up = servers.upstream(answer='{"queue": "billing", "urgent": false}')
    assert main(["distill", "eval", "--adapter", "triage-lora", "--adapters-dir", str(tmp_path / "adapters"),
                 "--url", up.url, "--no-base"]) == 0
    section = yaml.safe_load(path.read_text())["eval"]
    assert (section["metric"], section["adapter"]) == ("json_fields", 0.75)
    assert "base" not in section


def test_free_text_is_graded_by_a_judge(servers: Servers, tmp_path: Path) -> None:
    path = setup(tmp_path, ["Your refund was sent.\nIt takes 3 days.", "We have reset your password.\nCheck mail."])
    student, judge = servers.upstream(answer="Refund on its way."), servers.upstream(answer="PASS-{nonce}")
    args = ["distill", "eval", "--adapter", "triage-lora", "--adapters-dir", str(tmp_path / "adapters"),
            "--url", student.url, "--no-base", "--judge-url", judge.url, "--judge-model", "gpt-4o-mini"]
    assert main(args) == 0
    section = yaml.safe_load(path.read_text())["eval"]
    assert (section["metric"], section["adapter"], section["judge"]) == ("judge", 1.0, "gpt-4o-mini")
    asked = judge.seen[0].body
    assert asked["model"] == "gpt-4o-mini"
    assert json.loads(asked["messages"][1]["content"])["answer_to_grade"] == "Refund on its way."
    judge.answer = "FAIL-{nonce}"
    assert main(args) == 0
    assert yaml.safe_load(path.read_text())["eval"]["adapter"] == 0.0


def test_a_server_that_fails_every_request(servers: Servers, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    setup(tmp_path, ["billing"])
    up = servers.upstream(behaviour="status:500")
    assert main(["distill", "eval", "--adapter", "triage-lora", "--adapters-dir", str(tmp_path / "adapters"),
                 "--url", up.url, "--no-base"]) == 1
    assert "every request to" in capsys.readouterr().err


def test_the_judge_needs_a_model(servers: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup(tmp_path, ["A long answer\nin two lines."])
    assert main(["distill", "eval", "--adapter", "triage-lora", "--adapters-dir", str(tmp_path / "adapters"),
                 "--url", servers.upstream().url]) == 1
    assert "needs --judge-model" in capsys.readouterr().err
