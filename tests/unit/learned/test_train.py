from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.learned import data
from gateway.learned.model import load
from tests.unit.learned.routers import rows, write

pytest.importorskip("sklearn")
from gateway.learned.train import Options, train


def test_the_same_data_and_seed_give_the_same_artifact(router_data: Path, router_artifact: Path,
                                                       tmp_path: Path) -> None:
    again = tmp_path / "again"
    train(Options(router_data, again, seed=3))
    for name in ("weights.json", "heldout.jsonl", "calibration.json"):
        assert (again / name).read_bytes() == (router_artifact / name).read_bytes(), name
    first, second = (json.loads((d / "manifest.json").read_text()) for d in (router_artifact, again))
    for m in (first, second):
        del m["created_at"], m["training"]["seconds"]
    assert first == second


def test_another_seed_holds_out_other_prompts(router_data: Path, router_artifact: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    train(Options(router_data, other, seed=4))
    assert (other / "heldout.jsonl").read_bytes() != (router_artifact / "heldout.jsonl").read_bytes()


def test_the_manifest_records_the_data_split_and_metrics(router_data: Path, router_artifact: Path) -> None:
    m = load(router_artifact).manifest
    assert m["format"] == "nanoroute-router/1" and m["models"] == ["cheap", "strong"]
    assert m["data"]["digest"] == data.digest(router_data)
    assert m["data"]["rows"] == 300 and m["data"]["train"] + m["data"]["heldout"] == 300
    assert 30 < m["data"]["heldout"] < 90
    held = {json.loads(line)["id"] for line in (router_artifact / "heldout.jsonl").read_text().splitlines()}
    assert len(held) == m["data"]["heldout"]
    assert all(data.held_out(r, 3, 0.2) == (r.body["id"] in held) for r in data.read(router_data))
    metrics = m["metrics"]
    assert metrics["cheap"] == "cheap" and metrics["strong"] == "strong"
    assert metrics["learned"]["apgr"] > 0.85  # the easy prompts are easy to tell
    assert metrics["random"] == {"apgr": 0.5, "cpt50": 0.5, "cpt80": 0.8}


def test_a_model_scored_the_same_everywhere_is_predicted_as_that_score(tmp_path: Path) -> None:
    data_rows = rows(60)
    for r in data_rows:
        r["scores"] = {**r["scores"], "oracle": 1.0}  # type: ignore[dict-item]
    out = tmp_path / "r"
    train(Options(write(tmp_path / "d.jsonl", data_rows), out))
    router = load(out)
    assert router.predict_text("anything at all")[router.models.index("oracle")] == pytest.approx(0.999)


def test_fractional_scores_train(tmp_path: Path) -> None:
    data_rows = rows(80)
    for i, r in enumerate(data_rows):
        r["scores"] = {"a": (i % 5) / 4, "b": 1.0 - (i % 3) / 2}
    out = tmp_path / "r"
    train(Options(write(tmp_path / "d.jsonl", data_rows), out))
    assert load(out).models == ("a", "b")


@pytest.mark.parametrize(("line", "message"), [
    ('{"messages": [{"role": "user", "content": "x"}], "scores": {"a": 1}}', "two or more models"),
    ('{"messages": [], "scores": {"a": 1, "b": 0}}', "needs 'messages'"),
    ('{"prompt": "x", "scores": {"a": 1.5, "b": 0}}', "score of 'a' must be a number from 0 to 1"),
    ('{"prompt": "x", "scores": {"a": true, "b": 0}}', "score of 'a'"),
    ("[1, 2]", "JSON object"),
    ("{not json", "unexpected character"),
])
def test_a_bad_row_is_named_by_its_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "fine", "scores": {"a": 1, "b": 0}}\n' + line + "\n")
    with pytest.raises(data.DataError, match=rf"d.jsonl:2: .*{message}"):
        train(Options(path, tmp_path / "out"))


def test_a_group_field_keeps_each_group_on_one_side(tmp_path: Path) -> None:
    data_rows = rows(200)
    for i, r in enumerate(data_rows):
        r["template"] = f"t{i % 20}"
    path = write(tmp_path / "d.jsonl", data_rows)
    out = tmp_path / "r"
    manifest = train(Options(path, out, seed=1, group="template"))
    held = {json.loads(line)["template"] for line in (out / "heldout.jsonl").read_text().splitlines()}
    trained = {r["template"] for r in data_rows} - held
    assert held and trained and len(held) + len(trained) == 20
    assert manifest["data"]["split_by"] == "template"
    assert manifest["data"]["heldout"] == 10 * len(held)  # every row of a held-out template, none of the others
    assert all(data.held_out(r, 1, 0.2, "template") == (r.body["template"] in held) for r in data.read(path))
