#!/usr/bin/env python3
"""Write the lock files that the image installs from, from pyproject.toml.

usage: python scripts/lock.py [--extra NAME]... [--upgrade | --upgrade-package NAME...]

Each lock pins exact versions with the sha256 of every file of each pinned version (all wheels and the
sdist), resolved once for every platform and Python the project supports (`uv pip compile --universal`),
so the same file serves x86_64 and aarch64, Python 3.11 and 3.12:

    requirements/runtime.lock        [project] dependencies, transitively: what the image runs
    requirements/build.lock          [build-system] requires: what builds the project's own wheel
    requirements/runtime-NAME.lock   the runtime dependencies plus the extra NAME, one whole set

Every run refreshes the locks already in requirements/; `--extra NAME` adds an extra's lock. Pins that
pyproject.toml still allows are kept (a refresh after editing pyproject.toml moves only what it must);
`--upgrade` moves every pin to the newest allowed release, `--upgrade-package NAME` only NAME's.

With requirements/runtime-litellm.lock, a run then runs scripts/litellm_data.py, which takes the cost map
and tiktoken's cl100k_base file from the litellm wheel that lock pins (the default image reads them without
litellm).

uv is a development tool (`pip install -e '.[dev]'`), taken from this interpreter's environment or PATH.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LOCKS = REPO / "requirements"
COMMAND = "python scripts/lock.py"  # what the locks' headers tell a reader to run


def _uv() -> list[str]:
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    found = shutil.which("uv")
    if found is None:
        sys.exit("scripts/lock.py: uv is missing: pip install -e '.[dev]'")
    return [found]


def _oldest_python(pyproject: dict[str, Any]) -> str:
    """The X.Y that requires-python starts at: the universal resolution covers it and every later one."""
    found = re.search(r">=\s*(\d+\.\d+)", pyproject["project"]["requires-python"])
    if found is None:
        sys.exit("scripts/lock.py: requires-python needs a lower bound (>=X.Y)")
    return found[1]


def _existing_extras() -> list[str]:
    return sorted(p.name.removeprefix("runtime-").removesuffix(".lock") for p in LOCKS.glob("runtime-*.lock"))


def _compile(uv: list[str], source: str, output: Path, options: list[str], stdin: str | None = None) -> None:
    command = [*uv, "pip", "compile", source, "--output-file", str(output.relative_to(REPO)),
               "--universal", "--generate-hashes", "--no-config", "--quiet",
               "--custom-compile-command", COMMAND, *options]
    subprocess.run(command, cwd=REPO, input=stdin, text=True, check=True)
    print(f"wrote {output.relative_to(REPO)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra", action="append", default=[], metavar="NAME",
                        help="also write requirements/runtime-NAME.lock (runtime dependencies plus the extra)")
    upgrade = parser.add_mutually_exclusive_group()
    upgrade.add_argument("--upgrade", action="store_true", help="move every pin to the newest allowed release")
    upgrade.add_argument("--upgrade-package", action="append", default=[], metavar="NAME",
                         help="move NAME's pin to the newest allowed release (others only where it needs)")
    args = parser.parse_args(argv)

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    unknown = set(args.extra) - set(pyproject["project"].get("optional-dependencies", {}))
    if unknown:
        parser.error(f"pyproject.toml has no extra {', '.join(sorted(unknown))}")

    options = ["--python-version", _oldest_python(pyproject)]
    if args.upgrade:
        options.append("--upgrade")
    for name in args.upgrade_package:
        options += ["--upgrade-package", name]

    uv = _uv()
    LOCKS.mkdir(exist_ok=True)
    build_requires = "\n".join(pyproject["build-system"]["requires"]) + "\n"
    _compile(uv, "-", LOCKS / "build.lock", options, stdin=build_requires)
    _compile(uv, "pyproject.toml", LOCKS / "runtime.lock", options)
    for extra in sorted({*_existing_extras(), *args.extra}):
        _compile(uv, "pyproject.toml", LOCKS / f"runtime-{extra}.lock", [*options, "--extra", extra])
    if (LOCKS / "runtime-litellm.lock").exists():
        subprocess.run([sys.executable, str(REPO / "scripts" / "litellm_data.py")], check=True)


if __name__ == "__main__":
    main()
