#!/usr/bin/env bash
# The static checks CI enforces before the tests: ruff on every Python file, mypy --strict on the package
# (with the pydantic plugin, pyproject.toml's [tool.mypy]). Any finding fails it. Sets up the development
# venv like scripts/test.sh, with the dev tools too.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,dev]'
.venv/bin/ruff check gateway tests bench examples scripts
.venv/bin/mypy --strict gateway
