"""gateway/cli.py: `nanoroute check` and the command line's exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import __version__
from gateway.cli import main

REPO = Path(__file__).resolve().parents[2]
ISSUE_EXAMPLE = REPO / "tests" / "fixtures" / "issue_example.yaml"
NANOROUTE = Path(sys.executable).parent / "nanoroute"

BAD = """\
backends:
  a: {type: openai, url: http://127.0.0.1:9/v1}
models:
  m: {backend: b}
policies:
  - {name: direct, candidates: [m]}
"""


def test_check_a_valid_file(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert main(["check", str(ISSUE_EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{ISSUE_EXAMPLE}: valid (version ")
    assert out.endswith("): 3 backends, 3 models, 2 policies\n")
    assert not [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert "OPENAI_API_KEY" not in err


def test_check_prints_warnings_on_stderr(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert main(["check", str(ISSUE_EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert "warning: backend 'openai': environment variable OPENAI_API_KEY is not set" in err.splitlines()
    assert ": valid (version " in out


def test_check_an_invalid_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    assert main(["check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}: 2 problem(s)",
        "  models.m.backend (line 4): unknown backend 'b'; expected one of: a",
        "  policies[0].name (line 6): 'direct' is reserved for requests that name a catalog model and match no policy",
    ]


def test_check_a_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read the file" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"nanoroute {__version__}\n"


@pytest.mark.parametrize("argv", [[], ["check"], ["frobnicate"]])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: nanoroute" in capsys.readouterr().err


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert NANOROUTE.exists(), f"{NANOROUTE} is not installed; run pip install -e ."
    return subprocess.run([str(NANOROUTE), *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})}, check=False)


def test_the_installed_command_checks_a_file(tmp_path: Path) -> None:
    ok = _run("check", str(ISSUE_EXAMPLE), env={"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "x"})
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.endswith("): 3 backends, 3 models, 2 policies\n")
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    bad = _run("check", str(path))
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert "models.m.backend (line 4): unknown backend 'b'" in bad.stderr


def test_serve_refuses_a_bad_config_before_listening(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    result = _run("serve", "--config", str(path), "--port", "1")
    assert result.returncode == 2
    assert f"{path}: 2 problem(s)" in result.stderr
