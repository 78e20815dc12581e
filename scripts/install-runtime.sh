#!/bin/sh
# Builds the gateway's runtime environment: a virtual environment holding the nanoroute wheel and its runtime
# dependencies, and nothing else (no pip, no setuptools, no test or training packages).
#
# usage: scripts/install-runtime.sh SOURCE_DIR VENV_DIR
#
# The Dockerfile's build stage runs this script, and tests/deploy/test_dockerfile.py runs the same script into
# a fresh venv, so the image's install steps and the tested ones cannot drift apart. PYTHON picks the
# interpreter (default python3); it needs pip 22.3 or later for `pip --python`.
set -eu

if [ "$#" -ne 2 ]; then
    echo "usage: $0 SOURCE_DIR VENV_DIR" >&2
    exit 64
fi
src=$1
venv=$2
python=${PYTHON:-python3}

wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT

# The project's own wheel (non-editable), built in an isolated build environment.
"$python" -m pip wheel --no-cache-dir --no-deps --disable-pip-version-check --wheel-dir "$wheels" "$src"

# A venv without pip, filled by the outer pip: only the wheel and what it requires at run time.
"$python" -m venv --without-pip "$venv"
"$python" -m pip --python "$venv/bin/python" install --no-cache-dir --disable-pip-version-check \
    "$wheels"/nanoroute-*.whl

"$venv/bin/nanoroute" --version
