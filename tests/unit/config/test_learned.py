"""gateway/config/loader.py for `learned` policies: the router artifact, its candidates in price order, the
threshold calibrated for the policy's floor or cost target, and what is wrong with one, said at load."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from gateway.config.loader import artifact_path, fingerprint, load_file
from gateway.config.table import LearnedRoute, RoutingTable
from gateway.errors import ConfigError
from gateway.learned.model import load

# strong's input is the cheapest, but input plus output it is the dearest priced model; mid has no price.
PRICES = """\
  cheap:  {backend: b, price: {input: 1, output: 1}}
  mid:    {backend: b}
  strong: {backend: b, price: {input: 0.5, output: 10}}
"""


def config(router: Path | str, spec: str = "candidates: [strong, cheap], require: {min_quality: 0.9}",
           prices: str = PRICES) -> str:
    """Four models and a `learned` policy `triage` (policies[1], line 10) on `router`."""
    return f"""\
backends:
  b: {{type: openai, url: http://127.0.0.1:9/v1}}
models:
{prices}  other:  {{backend: b, price: {{input: 1, output: 1}}}}
policies:
  - {{name: first, match: {{task: other}}, candidates: [other]}}
  - {{name: triage, strategy: learned, router: {router}, {spec}}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nanoroute.yaml"
    path.write_text(text)
    return path


def learned(table: RoutingTable) -> LearnedRoute:
    [route] = [p.learned for p in table.policies if p.learned is not None]
    return route


def problems(tmp_path: Path, text: str) -> tuple[tuple[str, str], ...]:
    with pytest.raises(ConfigError) as info:
        load_file(write(tmp_path, text))
    return info.value.problems


def copy(artifact: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(artifact, tmp_path / "routers" / "triage"))


def test_a_learned_policy_loads_its_router_and_threshold(router_artifact: Path, tmp_path: Path) -> None:
    table = load_file(write(tmp_path, config(router_artifact)))
    route = learned(table)
    assert route.router.path == router_artifact
    assert route.router.version == load(router_artifact).version
    assert (route.order, route.columns) == (("cheap", "strong"), (0, 1))
    t = route.threshold
    assert t.meets and 0.0 < t.value < 1.0
    assert t.quality >= 0.9 and t.rows > 20
    assert sum(t.shares) == pytest.approx(1.0) and 0.0 < t.shares[0] < 1.0
    assert not [w for w in table.warnings if w.startswith("policy ")]


@pytest.mark.parametrize(("prices", "candidates", "order", "columns"), [
    (PRICES, "[strong, mid, cheap]", ("cheap", "strong", "mid"), (0, 2, 1)),  # input + output; unpriced last
    ("  cheap: {backend: b}\n  mid: {backend: b}\n", "[mid, cheap]", ("mid", "cheap"), (1, 0)),  # ties: as listed
])
def test_candidates_are_ordered_by_price_unpriced_last(three_artifact: Path, tmp_path: Path, prices: str,
                                                      candidates: str, order: tuple[str, ...],
                                                      columns: tuple[int, ...]) -> None:
    route = learned(load_file(write(tmp_path, config(three_artifact, f"candidates: {candidates}, max_share: 0.5",
                                                     prices))))
    assert (route.order, route.columns) == (order, columns)
    assert route.router.models == ("cheap", "mid", "strong")
    assert [route.rank(m) for m in order] == list(range(len(order)))


def test_a_candidate_the_router_does_not_predict_is_a_problem(router_artifact: Path, tmp_path: Path) -> None:
    found = problems(tmp_path, config(router_artifact, "candidates: [cheap, other], max_share: 0.3"))
    assert found == (("policies[1].router (line 10)",
                      f"the router at {router_artifact} predicts cheap, strong, not other: train it on data that "
                      "scores every candidate"),)


def test_an_unknown_candidate_is_reported_once(router_artifact: Path, tmp_path: Path) -> None:
    found = problems(tmp_path, config(router_artifact, "candidates: [cheap, nope], max_share: 0.3"))
    assert [where for where, _ in found] == ["policies[1].candidates[1] (line 10)"]
    assert found[0][1].startswith("unknown model 'nope'")


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: shutil.rmtree(d), "manifest.json: No such file or directory"),
    (lambda d: (d / "manifest.json").write_text("{not json"), "manifest.json: not valid JSON"),
    (lambda d: (d / "weights.json").write_text("{}"), "does not match the manifest's weights_sha256"),
    # a router too little held out to calibrate a threshold on
    (lambda d: (d / "calibration.json").write_text(json.dumps({"models": ["cheap", "strong"],
                                                               "predicted": [[0.5, 0.9]] * 5,
                                                               "scores": [[1, 1]] * 5})),
     "calibrating needs at least 20"),
])
def test_a_missing_or_damaged_artifact_is_a_problem(router_artifact: Path, tmp_path: Path, damage,  # type: ignore[no-untyped-def]
                                                    message: str) -> None:
    folder = copy(router_artifact, tmp_path)
    damage(folder)
    [(where, why)] = problems(tmp_path, config(folder))
    assert where == "policies[1].router (line 10)"
    assert message in why


def test_a_relative_router_is_taken_from_the_config_files_folder(router_artifact: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder = copy(router_artifact, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    table = load_file(write(tmp_path, config("routers/triage")))
    assert learned(table).router.path == folder
    assert artifact_path("routers/triage", str(tmp_path / "nanoroute.yaml")) == folder
    assert artifact_path(str(folder), "/etc/nanoroute/nanoroute.yaml") == folder
    assert artifact_path("routers/triage", "<config>") == Path("routers/triage")  # text: the working folder


def test_the_manifest_is_an_input_so_a_new_artifact_is_a_new_version(router_artifact: Path, three_artifact: Path,
                                                                      tmp_path: Path) -> None:
    folder = copy(router_artifact, tmp_path)
    path = write(tmp_path, config("routers/triage"))
    before = load_file(path)
    assert before.inputs == (str(folder / "manifest.json"),)
    assert load_file(path).version == before.version  # the same files: the same version

    shutil.copytree(three_artifact, folder, dirs_exist_ok=True)  # a new artifact, in the same folder
    after = load_file(path)
    assert after.version != before.version
    assert fingerprint(path.read_bytes(), before.inputs) == after.version  # what the watcher compares
    assert learned(after).router.version == load(three_artifact).version != learned(before).router.version
    assert learned(after).columns == (0, 2)  # cheap and strong of cheap, mid, strong


def test_a_floor_even_the_dearest_misses_is_a_warning_and_sends_it_everything(router_artifact: Path,
                                                                             tmp_path: Path) -> None:
    table = load_file(write(tmp_path, config(router_artifact, "candidates: [cheap, strong], "
                                                              "require: {min_quality: 0.99}")))
    t = learned(table).threshold
    assert math.isinf(t.value) and not t.meets
    assert t.shares == (0.0, 1.0) and t.quality < 0.99
    assert (f"policy 'triage': on the router's held-out rows even strong alone scores {t.quality:.3f}, below "
            "min_quality; it gets every request") in table.warnings


def test_max_share_bounds_the_dearest_candidates_share(router_artifact: Path, tmp_path: Path) -> None:
    def threshold(share: float) -> tuple[float, tuple[float, ...]]:
        t = learned(load_file(write(tmp_path, config(router_artifact, f"candidates: [strong, cheap], "
                                                                      f"max_share: {share}")))).threshold
        assert t.meets and not math.isinf(t.value)
        return t.value, t.shares

    low, low_shares = threshold(0.2)
    high, high_shares = threshold(0.5)
    assert 0.0 < low_shares[1] <= 0.2 < high_shares[1] <= 0.5
    assert low < high  # a larger share for the dearest: a higher bar for the cheap one
