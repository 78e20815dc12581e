#!/bin/sh
# Builds the gateway's runtime environment: a virtual environment holding the nanoroute wheel and its runtime
# dependencies, and nothing else (no pip, no setuptools, no test or training packages).
#
# usage: scripts/install-runtime.sh SOURCE_DIR VENV_DIR [EXTRA]
#
# EXTRA (one of pyproject.toml's optional dependencies, e.g. litellm) installs requirements/runtime-EXTRA.lock,
# the runtime dependencies with that extra's, instead of requirements/runtime.lock.
#
# The Dockerfile's build stage runs this script, and tests/deploy/test_dockerfile.py runs the same script into
# a fresh venv, so the image's install steps and the tested ones cannot drift apart. PYTHON picks the
# interpreter (default python3), which needs only the standard library's venv and ensurepip: the pip that
# fills the runtime venv is the one ensurepip puts in the throwaway build venv (22.3 or later, for `--python`).
#
# Every file fetched from the index is one that SOURCE_DIR/requirements/*.lock names by version and sha256
# (written by scripts/lock.py): the dependencies and the build backend are installed with --require-hashes
# and from wheels only (an sdist would run its own build, fetching build tools that no lock pins).
set -eu

if [ "$#" -lt 2 ] || [ "$#" -gt 3 ]; then
    echo "usage: $0 SOURCE_DIR VENV_DIR [EXTRA]" >&2
    exit 64
fi
src=$1
venv=$2
extra=${3:-}
python=${PYTHON:-python3}
locks=$src/requirements
runtime_lock="$locks/runtime.lock"
if [ -n "$extra" ]; then
    runtime_lock="$locks/runtime-$extra.lock"
    if [ ! -f "$runtime_lock" ]; then
        echo "$0: no lock for the extra '$extra': python scripts/lock.py --extra $extra" >&2
        exit 65
    fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# install_locked LOCK PIP...: install exactly LOCK's pins, each from a wheel whose sha256 LOCK names. A lock
# is a whole closure, so nothing is resolved (--no-deps): the ensurepip pip of some Pythons (23.0) otherwise
# takes a package's extra (litellm's httpx[http2]) for an unpinned requirement once a newer release of it
# exists, and refuses the lock. `pip check` below still fails a lock that misses a dependency.
install_locked() {
    lock=$1
    shift
    "$@" install --no-cache-dir --disable-pip-version-check --only-binary :all: --require-hashes --no-deps \
        --requirement "$lock"
}

# The project's own wheel (non-editable), built without build isolation in a throwaway venv that holds the
# locked build backend, so that the build fetches nothing the lock does not pin.
"$python" -m venv "$work/build"
install_locked "$locks/build.lock" "$work/build/bin/python" -m pip
"$work/build/bin/python" -m pip wheel --no-cache-dir --disable-pip-version-check --no-index --no-deps \
    --no-build-isolation --wheel-dir "$work/wheels" "$src"

# A venv without pip, filled by the build venv's pip: the locked runtime dependencies, then the wheel alone.
venv_pip() {
    "$work/build/bin/python" -m pip --python "$venv/bin/python" "$@"
}
"$python" -m venv --without-pip "$venv"
install_locked "$runtime_lock" venv_pip
venv_pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps "$work/wheels"/nanoroute-*.whl
# --no-deps skipped the wheel's own requirements: a lock that misses one fails here, not at run time.
venv_pip check --disable-pip-version-check

"$venv/bin/nanoroute" --version
