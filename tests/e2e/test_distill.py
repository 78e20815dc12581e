"""The distill loop for real, on the local stack's model and ML venv: captures -> `nanoroute distill export`
-> `train` (peft on transformers, CPU) -> `eval` in-process, each as a user runs it.

The captures are the demo adapter's tickets (adapters/ticket-triage/) written as the gateway writes them;
capture itself is tested through the gateway in tests/api/test_capture.py. About 3 minutes on 2 cores.
Like the other stack tests, it needs the stack built (scripts/stack/build.sh), and builds it under CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_vllm_stack import REPO, STACK_DIR, built  # noqa: F401  (the session fixture that builds)
from tests.unit.distill.captures import write_captures

pytestmark = pytest.mark.e2e

NANOROUTE = REPO / ".venv" / "bin" / "nanoroute"


def nanoroute(*args: str, cwd: Path, timeout: float = 900) -> str:
    env = {**os.environ, "NANOROUTE_DATA_DIR": str(cwd / "data"), "NANOROUTE_STACK_DIR": str(STACK_DIR)}
    done = subprocess.run([str(NANOROUTE), "distill", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


def tickets() -> list[dict[str, Any]]:
    chats = [json.loads(line)["messages"] for name in ("train.jsonl", "eval.jsonl")
             for line in (REPO / "adapters" / "ticket-triage" / name).read_text().splitlines()]
    return [{"request_id": f"r{i}", "task": "triage", "policy": "triage", "model": "teacher",
             "upstream_model": "gpt-4o-mini", "request": {"model": "gpt-4o-mini", "messages": chat[:-1]},
             "answer": chat[-1], "finish_reason": "stop"} for i, chat in enumerate(chats)]


def test_export_train_eval(built: None, tmp_path: Path) -> None:  # noqa: F811
    write_captures(tmp_path / "data" / "captures", tickets())
    said = nanoroute("export", "--task", "triage", "--eval-fraction", "0.25", cwd=tmp_path)
    assert "60 captures -> 60 examples" in said
    stats = json.loads((tmp_path / "data" / "datasets" / "triage" / "stats.json").read_text())
    assert stats["train"] + stats["eval"] == 60 and stats["eval"] >= 8

    nanoroute("train", "--task", "triage", "--base", str(STACK_DIR / "models" / "smollm2-135m-instruct"),
              "--base-name", "smollm2-135m-instruct", "--threads", "2", cwd=tmp_path)
    path = tmp_path / "adapters" / "triage-lora.yaml"
    trained = yaml.safe_load(path.read_text())
    assert (trained["name"], trained["tasks"]) == ("triage-lora", ["triage"])
    assert trained["path"] == "data/adapters/triage-lora"
    assert (tmp_path / trained["path"] / "adapter_model.safetensors").is_file()
    training = trained["training"]
    assert training["examples"] == stats["train"] and training["device"] == "cpu"
    assert training["loss"]["last_epoch"] < training["loss"]["first_epoch"] / 2
    assert "eval" not in trained

    said = nanoroute("eval", "--adapter", "triage-lora", cwd=tmp_path)
    section = yaml.safe_load(path.read_text())["eval"]
    assert (section["metric"], section["examples"], section["via"]) == ("exact_match", stats["eval"], "transformers")
    assert section["data"] == "data/datasets/triage/eval.jsonl"
    assert section["adapter"] >= 0.5 > section["base"], section  # the base model answers in prose
    assert f"triage-lora: {section['adapter']:.0%} exact_match" in said
