"""The package's layers, as pyproject.toml's import-linter contracts state them (docs/architecture.md):
an import that points upwards, or a cycle between packages, fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_packages_import_only_downwards() -> None:
    # In a process of its own: import-linter configures logging, and would switch off the gateway's loggers.
    done = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                           "sys.exit(lint_imports(no_cache=True, no_logo=True))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout
