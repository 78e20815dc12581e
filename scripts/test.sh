#!/usr/bin/env bash
# Set up the development venv (first run only, then just refresh the install) and run the tests.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not e2e"` to skip the slow end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# The dashboard and end-to-end tests run the real Prometheus (`prometheus`, `promtool`).
ensure_prometheus() {
  command -v prometheus >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing Debian's prometheus package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends prometheus
  else
    echo "scripts/test.sh: prometheus is not installed; its tests will be skipped (and fail under CI)." >&2
    echo "  Install it, e.g.: sudo apt-get install --no-install-recommends prometheus" >&2
  fi
}

if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
ensure_prometheus
exec .venv/bin/python -m pytest "$@"
