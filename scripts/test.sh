#!/usr/bin/env bash
# Set up the development venv (first run only, then just refresh the install) and run the tests.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not e2e"` to skip the slow end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# ensure_package COMMAND PACKAGE: install Debian's PACKAGE when COMMAND is missing and we may (root, apt-get);
# otherwise say so: the tests that need it are skipped (and fail under CI).
APT_UPDATED=
ensure_package() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing Debian's $2 package" >&2
    export DEBIAN_FRONTEND=noninteractive
    [ -n "$APT_UPDATED" ] || apt-get update -q
    APT_UPDATED=1
    apt-get install -y -q --no-install-recommends "$2"
  else
    echo "scripts/test.sh: $1 is not installed; its tests will be skipped (and fail under CI)." >&2
    echo "  Install it, e.g.: sudo apt-get install --no-install-recommends $2" >&2
  fi
}

# The dashboard and end-to-end tests run the real Prometheus (`prometheus`, `promtool`).
ensure_prometheus() { ensure_package prometheus prometheus; }

# The Redis store's tests run the real Redis (`redis-server`): tests/fakes/redis.py starts one per test on a free
# port; the package's own service, where an init system starts it, is not used.
ensure_redis() { ensure_package redis-server redis-server; }

# The console's browser tests (tests/e2e/test_console.py) drive Debian's headless Chromium with Playwright, which
# pip installs with its driver only: no browser is downloaded.
ensure_chromium() { ensure_package chromium chromium; }

if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
ensure_prometheus
ensure_redis
ensure_chromium
exec .venv/bin/python -m pytest "$@"
