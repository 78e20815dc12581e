#!/usr/bin/env bash
# Set up the development venv (first run only, then just refresh the install) and run the tests.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not e2e"` to skip the slow end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"
