"""`nanoroute adapters list | load | unload | sync` against fake vLLM servers on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from tests.fakes.servers import Servers
from tests.fakes.vllm import FakeVllm


def setup(tmp_path: Path, *fakes: FakeVllm) -> Path:
    for name in ("triage", "extract"):
        (tmp_path / "weights" / name).mkdir(parents=True)
    (tmp_path / "adapters").mkdir()
    (tmp_path / "adapters" / "triage.yaml").write_text(
        "name: triage\nbase_model: base-model\ntasks: [triage]\npath: weights/triage\nrank: 8\n"
        "eval: {metric: exact_match, adapter: 0.9}\n")
    (tmp_path / "adapters" / "extract.yaml").write_text(
        "name: extract\nbase_model: base-model\ntasks: [extract]\npath: weights/extract\n")
    config = tmp_path / "gateway.yaml"
    urls = ", ".join(f.url for f in fakes)
    config.write_text(f"backends:\n  local: {{type: vllm, urls: [{urls}]}}\n"
                      "models:\n  base: {backend: local, name: base-model}\n"
                      "  triage: {backend: local, adapter: triage}\n")
    return config


def test_sync_loads_what_the_config_routes_on_every_replica_and_prune_drops_the_rest(
        servers: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fakes = [servers.vllm(), servers.vllm()]
    config = setup(tmp_path, *fakes)
    fakes[1].adapters["stale"] = str(tmp_path)
    assert main(["adapters", "sync", "--config", str(config)]) == 0
    assert [f.adapters for f in fakes] == [{"triage": str(tmp_path / "weights" / "triage")},
                                           {"stale": str(tmp_path), "triage": str(tmp_path / "weights" / "triage")}]
    assert "local[0]" in capsys.readouterr().out
    assert main(["adapters", "sync", "--config", str(config), "--prune"]) == 0
    assert [set(f.adapters) for f in fakes] == [{"triage"}, {"triage"}]
    out = capsys.readouterr().out
    assert "stale unloaded" in out and "nothing to do" in out


def test_list_shows_manifests_and_what_each_replica_serves(servers: Servers, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    fake = servers.vllm()
    config = setup(tmp_path, fake)
    assert main(["adapters", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "triage: base base-model, tasks triage, rank 8, eval exact_match 0.900" in out
    assert f"local[0] {fake.url}: adapters: -; routed but not loaded: triage" in out


def test_load_and_unload_by_name_on_given_urls(servers: Servers, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    fake = servers.vllm()
    setup(tmp_path, fake)
    folder = str(tmp_path / "adapters")
    assert main(["adapters", "load", "extract", "--url", fake.url, "--dir", folder]) == 0
    assert fake.adapters == {"extract": str(tmp_path / "weights" / "extract")}
    assert main(["adapters", "unload", "extract", "--url", fake.url, "--dir", folder]) == 0
    assert fake.adapters == {}
    assert "extract unloaded" in capsys.readouterr().out


def test_a_load_that_fails_says_why_and_exits_1(servers: Servers, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    fake = servers.vllm()
    setup(tmp_path, fake)
    (tmp_path / "weights" / "extract").rmdir()
    folder = str(tmp_path / "adapters")
    assert main(["adapters", "load", "extract", "--url", fake.url, "--dir", folder]) == 1
    out = capsys.readouterr().out
    assert "extract FAILED" in out and "No adapter found for" in out and fake.adapters == {}
    assert main(["adapters", "load", "nope", "--url", fake.url, "--dir", folder]) == 1
    assert "no manifest for adapter 'nope'" in capsys.readouterr().out


def test_an_unreachable_server_fails_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "adapters").mkdir()
    assert main(["adapters", "sync", "--url", "http://127.0.0.1:9/v1", "--dir", str(tmp_path / "adapters")]) == 1
    assert "unreachable" in capsys.readouterr().out
