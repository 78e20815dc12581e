"""Programs the tests run from Debian's packages (scripts/test.sh installs them): found on PATH; without
one, the test is skipped locally and fails under CI."""

from __future__ import annotations

import os
import shutil

import pytest


def program(command: str, package: str) -> str:
    path = shutil.which(command)
    if path is not None:
        return path
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{command} is not installed; scripts/test.sh installs Debian's `{package}` package")
    pytest.skip(f"{command} is not installed (Debian: apt-get install --no-install-recommends {package})")
