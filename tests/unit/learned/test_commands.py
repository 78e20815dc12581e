"""`nanoroute router train|eval|dataset` through gateway/cli.py's `main`: what they print, and how they fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.learned import data
from gateway.learned.curve import RANDOM
from gateway.learned.model import load
from tests.unit.distill.captures import row, write_captures, write_comparisons
from tests.unit.learned.routers import rows, write

PNG = b"\x89PNG\r\n\x1a\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, Any, str]:
    """`nanoroute router ...`'s exit code, its stdout as JSON (None when empty) and its stderr."""
    code = main(["router", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out else None, err


def test_train_then_eval(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    dataset, out = write(tmp_path / "d.jsonl", rows(150)), tmp_path / "router"
    code, trained, _ = run(capsys, "train", "--data", dataset, "--out", out, "--seed", "1", "--heldout", "0.3")
    assert code == 0
    assert set(trained) == {"out", "version", "models", "data", "training", "metrics"}
    assert (trained["out"], trained["version"], trained["models"]) == (str(out), load(out).version,
                                                                         ["cheap", "strong"])
    assert trained["data"]["rows"] == 150 and trained["data"]["heldout_fraction"] == 0.3

    code, evaluated, _ = run(capsys, "eval", "--router", out)
    assert code == 0
    assert (evaluated["router"], evaluated["version"], evaluated["data"]) == (str(out), trained["version"], "heldout")
    assert (evaluated["cheap"], evaluated["strong"]) == ("cheap", "strong")
    assert evaluated["rows"] == trained["data"]["heldout"]
    assert set(evaluated["learned"]) == {"apgr", "cpt50", "cpt80"} and evaluated["learned"]["apgr"] > 0.7
    assert evaluated["random"] == RANDOM
    assert set(evaluated["mean_scores"]) == {"cheap", "strong"}
    assert evaluated["mean_scores"]["cheap"] < evaluated["mean_scores"]["strong"]
    assert {k: evaluated[k] for k in ("learned", "mean_scores")} == {k: trained["metrics"][k]
                                                                     for k in ("learned", "mean_scores")}


def test_eval_plots_the_curve(capsys: pytest.CaptureFixture[str], router_artifact: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "curve.png"
    code, evaluated, _ = run(capsys, "eval", "--router", router_artifact, "--plot", plot)
    assert code == 0 and evaluated["learned"]["apgr"] is not None
    assert plot.read_bytes()[:8] == PNG


def test_eval_on_a_file_takes_its_held_out_split_or_every_row(capsys: pytest.CaptureFixture[str],
                                                              router_artifact: Path, router_data: Path) -> None:
    everything = data.read(router_data)
    held = [r for r in everything if data.held_out(r, 3, 0.2)]
    code, split, _ = run(capsys, "eval", "--router", router_artifact, "--data", router_data)
    assert code == 0
    assert (split["rows"], split["data"]) == (len(held), f"{router_data} (held-out split)")
    code, every, _ = run(capsys, "eval", "--router", router_artifact, "--data", router_data, "--all")
    assert code == 0
    assert (every["rows"], every["data"]) == (len(everything), str(router_data)) and len(held) < len(everything)
    _, default, _ = run(capsys, "eval", "--router", router_artifact)
    assert default["rows"] == split["rows"] and default["learned"] == split["learned"]


def test_eval_on_a_file_none_of_whose_rows_is_held_out(capsys: pytest.CaptureFixture[str], router_artifact: Path,
                                                       router_data: Path, tmp_path: Path) -> None:
    trained = [r for r in data.read(router_data) if not data.held_out(r, 3, 0.2)][:5]
    path = write(tmp_path / "trained.jsonl", [r.body for r in trained])
    code, out, err = run(capsys, "eval", "--router", router_artifact, "--data", path)
    assert (code, out) == (1, None)
    assert err == (f"nanoroute router: {path}: no row falls in the router's held-out split; --all evaluates on "
                   "every row\n")


@pytest.mark.parametrize("flag", ["--cheap", "--strong"])
def test_eval_names_an_unknown_model(capsys: pytest.CaptureFixture[str], router_artifact: Path, flag: str) -> None:
    code, out, err = run(capsys, "eval", "--router", router_artifact, flag, "nope")
    assert (code, out) == (1, None)
    assert err == "nanoroute router: 'nope' is not one of the router's models (cheap, strong)\n"


def test_eval_of_a_folder_that_is_no_router(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "eval", "--router", tmp_path)
    assert (code, out) == (1, None)
    assert err.startswith(f"nanoroute router: {tmp_path / 'manifest.json'}: No such file")


@pytest.mark.parametrize(("lines", "args", "message"), [
    ('{"prompt": "fine", "scores": {"a": 1, "b": 0}}\n{"prompt": "x", "scores": {"a": 2, "b": 0}}\n', (),
     "d.jsonl:2: the score of 'a' must be a number from 0 to 1"),
    ("\n{not json\n", (), "d.jsonl:2: unexpected character"),
    ('{"prompt": "fine", "scores": {"a": 1, "b": 0}}\n', ("--heldout", "1"),
     "--heldout must be at least 0 and below 1"),
])
def test_train_on_bad_input_exits_1_and_says_where(capsys: pytest.CaptureFixture[str], tmp_path: Path, lines: str,
                                                   args: tuple[str, ...], message: str) -> None:
    (tmp_path / "d.jsonl").write_text(lines)
    code, out, err = run(capsys, "train", "--data", tmp_path / "d.jsonl", "--out", tmp_path / "r", *args)
    assert (code, out) == (1, None)
    assert err.startswith("nanoroute router: ") and message in err
    assert not (tmp_path / "r").exists()


def test_dataset_joins_captures_and_comparisons(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    captures = tmp_path / "captures"
    write_captures(captures, [{**row("charged twice", "billing", request_id="r1"), "client": None}])
    write_comparisons(captures, [{"ts": "2026-11-25T00:00:01.000Z", "request_id": "r1", "client": None,
                                  "task": "triage", "policy": "triage", "model": "small", "reference": "teacher",
                                  "score": 0.0, "evaluator": "exact", "stage": "shadow"}])
    out = tmp_path / "routing.jsonl"
    code, stats, _ = run(capsys, "dataset", "--captures", captures, "--out", out)
    assert code == 0
    assert stats["comparisons"]["joined"] == 1
    [written] = [json.loads(line) for line in out.read_text().splitlines()]
    assert written["scores"] == {"small": 0.0, "teacher": 1.0}
    assert data.parse(written).scores == written["scores"]  # a row `router train` reads
