"""`nanoroute distill ...` (gateway/distill/commands.py) as a user runs it: defaults from the settings, the
trainer run in another Python, and the errors a user can fix."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from tests.unit.distill.captures import read_jsonl, row, write_captures

FAKE_TRAINER = """#!{python}
# Stands in for the ML Python: records how it was called, and writes a manifest as the trainer would.
import json, os, sys
from pathlib import Path
argv = sys.argv[1:]
Path(os.environ["FAKE_LOG"]).write_text(json.dumps({{"argv": argv, "pythonpath": os.environ["PYTHONPATH"]}}))
if os.environ.get("FAKE_FAIL"):
    sys.exit(3)
manifest = Path(argv[argv.index("--manifest") + 1])
manifest.parent.mkdir(parents=True, exist_ok=True)
manifest.write_text("name: " + manifest.stem + "\\n")
"""


@pytest.fixture
def fake_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "fake-python"
    path.write_text(FAKE_TRAINER.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "fake.json"))
    return path


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NANOROUTE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("NANOROUTE_CAPTURE_DIR", raising=False)
    return tmp_path / "data"


def test_export_reads_and_writes_where_the_settings_say(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_captures(data_dir / "captures", [row(f"t{i}", "billing", request_id=f"r{i}") for i in range(20)]
                   + [row("t0", "returns", request_id="again")])
    assert main(["distill", "export", "--task", "triage", "--eval-fraction", "0.3"]) == 0
    out = data_dir / "datasets" / "triage"
    assert len(read_jsonl(out / "train.jsonl")) + len(read_jsonl(out / "eval.jsonl")) == 20
    assert json.loads((out / "stats.json").read_text())["duplicates"] == 1
    said = capsys.readouterr().out
    assert "21 captures -> 20 examples (1 duplicates" in said


def test_export_without_captures_is_an_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["distill", "export", "--task", "triage"]) == 1
    assert "no captures for task 'triage'" in capsys.readouterr().err


def test_train_runs_the_trainer_in_the_given_python(data_dir: Path, tmp_path: Path, fake_python: Path) -> None:
    dataset = data_dir / "datasets" / "triage"
    dataset.mkdir(parents=True)
    (dataset / "train.jsonl").write_text("{}\n")
    base = tmp_path / "models" / "smol"
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}")
    assert main(["distill", "train", "--task", "triage", "--base", str(base), "--epochs", "2", "--eval",
                 "--target-modules", "q_proj", "o_proj", "--python", str(fake_python)]) == 0
    called = json.loads((tmp_path / "fake.json").read_text())
    argv = called["argv"]
    assert argv[:3] == ["-m", "gateway.distill.trainer", "train"]
    assert argv[argv.index("--target-modules") + 1:][:2] == ["q_proj", "o_proj"]
    argv = argv[:argv.index("--target-modules")] + argv[argv.index("--target-modules") + 3:]
    opts = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert opts["--model"] == str(base) and opts["--epochs"] == "2" and opts["--task"] == "triage"
    assert opts["--data"] == str(dataset)
    assert opts["--out"] == str(data_dir / "adapters" / "triage-lora")
    assert opts["--manifest"] == os.path.join("adapters", "triage-lora.yaml")
    assert "--eval" in argv
    # Only the gateway package is put on the other Python's path, through a link.
    linked = Path(called["pythonpath"].split(os.pathsep)[0]) / "gateway"
    assert not linked.exists()  # the temporary folder is gone once the trainer has finished
    assert (tmp_path / "adapters" / "triage-lora.yaml").is_file()


def test_train_reports_a_failed_trainer(data_dir: Path, tmp_path: Path, fake_python: Path,
                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (data_dir / "datasets" / "triage").mkdir(parents=True)
    (data_dir / "datasets" / "triage" / "train.jsonl").write_text("{}\n")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    monkeypatch.setenv("FAKE_FAIL", "1")
    assert main(["distill", "train", "--task", "triage", "--base", str(tmp_path / "base"),
                 "--python", str(fake_python)]) == 1
    assert "the trainer failed (exit 3)" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "words"), [
    (["train", "--task", "triage", "--base", "nowhere"], "distill export --task triage` first"),
    (["eval", "--adapter", "missing"], "cannot read the adapter's manifest"),
])
def test_errors_say_what_to_do(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["distill", *argv]) == 1
    assert words in capsys.readouterr().err
