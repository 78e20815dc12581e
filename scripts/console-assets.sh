#!/usr/bin/env bash
# The third-party files the console serves (gateway/console/static/vendor/) and the accessibility checker its
# browser tests inject (tests/e2e/vendor/), taken from the npm registry at pinned versions. They are committed,
# so installing the gateway needs no build step, no npm and no CDN; this script is how they were made and how
# they are refreshed.
#
#   scripts/console-assets.sh           fetch each pinned package with `npm pack`, check the tarball against its
#                                       pinned integrity (sha512, as the registry publishes it), copy the files
#                                       out and check each one's sha256: on a clean tree `git diff` shows nothing
#   scripts/console-assets.sh --check   check the committed files' sha256 only (offline; tests/unit/console runs it)
#
# To move to a new version: change its line below, run `NEW_PINS=1 scripts/console-assets.sh` (it prints the new
# integrity and hashes instead of failing on them), paste them here, and review the diff of the files.
set -euo pipefail
cd "$(dirname "$0")/.."

# package@version  the tarball's integrity (`npm view PACKAGE@VERSION dist.integrity`)
PACKAGES=(
  "htmx.org@2.0.11 sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA=="
  "uplot@1.6.32 sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="
  "axe-core@4.14.1 sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
)
# package  the file in its tarball  where it goes  its sha256
FILES=(
  "htmx.org package/dist/htmx.min.js gateway/console/static/vendor/htmx.min.js d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
  "htmx.org package/LICENSE gateway/console/static/vendor/htmx.LICENSE d3d2456f76414f2456104660ebd65aff1c04cd7966b942bdabd63f3cdb316a38"
  "uplot package/dist/uPlot.iife.min.js gateway/console/static/vendor/uPlot.iife.min.js 19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f"
  "uplot package/dist/uPlot.min.css gateway/console/static/vendor/uPlot.min.css df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04"
  "uplot package/LICENSE gateway/console/static/vendor/uPlot.LICENSE 8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd"
  "axe-core package/axe.min.js tests/e2e/vendor/axe.min.js 29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
  "axe-core package/LICENSE tests/e2e/vendor/axe-core.LICENSE af175b9d96ee93c21a036152e1b905b0b95304d4ae8c2c921c7609100ba8df7e"
  "axe-core package/LICENSE-3RD-PARTY.txt tests/e2e/vendor/axe-core.LICENSE-3RD-PARTY.txt 4f8563870d0fca38bbc3e00b6f670cb7fa9f380ba9f26a7f7d1184a6b18b1653"
)

failed=0
check_file() {  # path, expected sha256
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    if [ -n "${NEW_PINS:-}" ]; then echo "new sha256 of $1: $got"; else echo "$1: sha256 $got, pinned $2" >&2; fi
    failed=1
  fi
}

if [ "${1:-}" = "--check" ]; then
  for entry in "${FILES[@]}"; do
    read -r _ _ dest sha <<<"$entry"
    if [ -f "$dest" ]; then check_file "$dest" "$sha"; else echo "$dest is missing" >&2; failed=1; fi
  done
  [ "$failed" -eq 0 ] && echo "console assets: every file matches its pin"
  exit "$failed"
fi

command -v npm >/dev/null || { echo "npm is needed to fetch the assets (Debian: apt-get install npm)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for entry in "${PACKAGES[@]}"; do
  read -r spec integrity <<<"$entry"
  name=${spec%@*}
  (cd "$work" && npm pack --silent "$spec" >"$work/$name.name")
  tarball="$work/$(cat "$work/$name.name")"
  # npm's integrity is "sha512-" and the base64 of the tarball's SHA-512 digest.
  got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
  if [ "$got" != "$integrity" ]; then
    if [ -n "${NEW_PINS:-}" ]; then echo "new integrity of $spec: $got"; else
      echo "$spec: integrity $got, pinned $integrity" >&2; exit 1; fi
  fi
  mkdir -p "$work/$name"
  tar -xzf "$tarball" -C "$work/$name"
done
for entry in "${FILES[@]}"; do
  read -r name inner dest sha <<<"$entry"
  mkdir -p "$(dirname "$dest")"
  cp "$work/$name/$inner" "$dest"
  check_file "$dest" "$sha"
done
[ "$failed" -eq 0 ] && echo "console assets: fetched, every file matches its pin"
exit "$failed"
