"""The image installs only what requirements/*.lock pins by version and sha256, and the locks match pyproject.toml.

Offline: the locks are read as text and compared with pyproject.toml, nothing is resolved. A lock goes stale
when pyproject.toml changes (a new dependency, a raised minimum, a removed package) and nobody runs
scripts/lock.py; these tests name what to run.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "requirements"
INSTALL_SCRIPT = REPO / "scripts" / "install-runtime.sh"
REFRESH = "run `python scripts/lock.py` (pip install -e '.[dev]' first) and review the diff"

# Where the image is built: the Dockerfile's glibc python:3.11-slim, or a 3.12 one as PYTHON_IMAGE, on x86_64 and
# aarch64. A pin whose marker leaves out one of these would leave that image without the package.
TARGETS = [
    {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "platform_machine": machine,
     "implementation_name": "cpython", "platform_python_implementation": "CPython",
     "python_version": version, "python_full_version": f"{version}.0", "extra": ""}
    for machine in ("x86_64", "aarch64") for version in ("3.11", "3.12")
]


@dataclass
class Pin:
    name: str  # canonical
    version: str
    marker: Marker | None
    hashes: list[str]
    via: set[str] = field(default_factory=set)  # what asked for it, as the lock's annotations say


def read_lock(path: Path) -> dict[str, list[Pin]]:
    """The pins of a `uv pip compile --generate-hashes` output, by canonical name (one per marker fork)."""
    pins: dict[str, list[Pin]] = {}
    entry = ""
    last: Pin | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not entry and line.startswith("#"):
            via = line.lstrip("#").strip().removeprefix("via").strip()
            if last is not None and via:  # an annotation of the last pin (the header comes before any)
                last.via.add(via)
            continue
        entry = " ".join([entry, line.removesuffix("\\")]).strip()
        if entry and not line.endswith("\\"):  # the pin's last line
            last = _pin(entry)
            pins.setdefault(last.name, []).append(last)
            entry = ""
    assert not entry, f"{path.name} ends inside a continued line"
    return pins


def _pin(entry: str) -> Pin:
    words = shlex.split(entry)
    hashes = [w.removeprefix("--hash=") for w in words if w.startswith("--hash=")]
    req = Requirement(entry.split(" --hash=")[0])
    [spec] = req.specifier
    assert spec.operator == "==", f"{req} is not pinned to one version"
    return Pin(canonicalize_name(req.name), spec.version, req.marker, hashes)


def _required_by(lock: str) -> list[Requirement]:
    """The requirements of pyproject.toml that a lock must satisfy, by the lock's file name."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    runtime = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    if lock == "build.lock":
        return [Requirement(r) for r in pyproject["build-system"]["requires"]]
    if lock == "runtime.lock":
        return runtime
    extra = lock.removeprefix("runtime-").removesuffix(".lock")
    extras = pyproject["project"].get("optional-dependencies", {})
    assert extra in extras, f"{lock}: pyproject.toml has no extra {extra!r}: delete the lock"
    return runtime + [Requirement(r) for r in extras[extra]]


# The locks the image installs from, and one per extra that scripts/lock.py --extra NAME added.
LOCK_NAMES = ["build.lock", "runtime.lock", *sorted(p.name for p in LOCKS.glob("runtime-*.lock"))]


@pytest.mark.parametrize("lock", LOCK_NAMES)
def test_every_requirement_is_pinned_by_a_version_it_allows(lock: str) -> None:
    pins = read_lock(LOCKS / lock)
    for req in _required_by(lock):
        for env in TARGETS:
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            name = canonicalize_name(req.name)
            applying = [p for p in pins.get(name, []) if p.marker is None or p.marker.evaluate(env)]
            where = f"{env['platform_machine']}, Python {env['python_version']}"
            assert applying, f"{lock} does not pin {req.name} on {where}: {REFRESH}"
            for pin in applying:
                assert req.specifier.contains(pin.version, prereleases=True), (
                    f"{lock} pins {req.name}=={pin.version}, which `{req}` does not allow: {REFRESH}")


@pytest.mark.parametrize("lock", LOCK_NAMES)
def test_every_pin_has_hashes(lock: str) -> None:
    pins = [pin for forks in read_lock(LOCKS / lock).values() for pin in forks]
    assert pins
    for pin in pins:
        assert pin.hashes, f"{lock}: {pin.name}=={pin.version} has no hash"
        for digest in pin.hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{lock}: {pin.name}: {digest}"


@pytest.mark.parametrize("lock", [n for n in LOCK_NAMES if n.startswith("runtime")])
def test_the_lock_asks_for_nothing_that_pyproject_no_longer_requires(lock: str) -> None:
    # The annotations say which pins pyproject.toml asked for itself; the rest come in through another pin.
    pins = read_lock(LOCKS / lock)
    asked = {name for name, forks in pins.items() for pin in forks if "nanoroute (pyproject.toml)" in pin.via}
    unasked = asked - {canonicalize_name(r.name) for r in _required_by(lock)}
    assert not unasked, f"{lock} pins {sorted(unasked)} for pyproject.toml, which no longer asks for them: {REFRESH}"
    for name, forks in pins.items():
        for pin in forks:
            assert pin.via, f"{lock}: nothing asks for {name}: {REFRESH}"
            assert {canonicalize_name(v.split()[0]) for v in pin.via} <= {*pins, "nanoroute"}, (
                f"{lock}: {name} comes in through {sorted(pin.via)}, which the lock does not pin: {REFRESH}")


def test_the_data_taken_from_litellms_wheel_comes_from_the_locked_release() -> None:
    # The default image reads prices from gateway/config/costmap.json, without litellm: a refresh that moves
    # litellm's pin and not the file (scripts/lock.py runs scripts/litellm_data.py) would leave them behind.
    source = json.loads((REPO / "gateway" / "config" / "costmap.json").read_text())["source"]
    [pin] = read_lock(LOCKS / "runtime-litellm.lock")["litellm"]
    assert (source["package"], source["version"]) == ("litellm", pin.version), REFRESH


def _install_commands() -> list[list[str]]:
    """The script's commands, continuations joined, as words (the install_locked function's body included)."""
    lines = INSTALL_SCRIPT.read_text().replace("\\\n", " ").splitlines()
    return [words for line in lines if (words := shlex.split(line, comments=True))]


def _option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None


def test_the_install_script_installs_only_hashed_wheels_and_its_own_wheel_without_dependencies() -> None:
    installs = [words for words in _install_commands() if "install" in words]
    locked = [words for words in installs if "--requirement" in words or "-r" in words]
    assert locked, "install-runtime.sh installs nothing from a lock"
    for words in locked:
        assert "--require-hashes" in words, " ".join(words)
        # An sdist would run its own build, in an environment filled with whatever the index has.
        assert _option(words, "--only-binary") == ":all:", " ".join(words)
    for words in installs:
        if words not in locked:  # the project's own wheel: no index, and none of its requirements
            assert {"--no-deps", "--no-index"} <= set(words), " ".join(words)
    # The wheel's build backend comes from the lock too, not from a build-isolation environment.
    [build] = [words for words in _install_commands() if "wheel" in words]
    assert {"--no-build-isolation", "--no-index"} <= set(build), " ".join(build)


def test_the_install_script_reads_the_locks_this_test_checks() -> None:
    text = INSTALL_SCRIPT.read_text()
    assert "locks=$src/requirements" in text
    for lock in ("build.lock", "runtime.lock", "runtime-$extra.lock"):  # the last: an extra's, e.g. the litellm image
        assert f'"$locks/{lock}"' in text
