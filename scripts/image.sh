#!/usr/bin/env bash
# Build the gateway image from the repository's Dockerfile, run it, and smoke-test it, with Debian's buildah
# (no Docker daemon needed). docs/deploy.md, "Building and testing the image", has the figures.
#
# usage: scripts/image.sh base                  print the base image, making or reusing it (below)
#        scripts/image.sh build [--tag IMAGE] [EXTRA]
#                                               build IMAGE (default localhost/nanoroute:dev, or :dev-EXTRA with
#                                               an extra: litellm); prints the image's name
#        scripts/image.sh run [OPTIONS] IMAGE [-- ARGS...]
#                                               run IMAGE in the foreground as a pod runs it: its ENTRYPOINT
#                                               with ARGS (default: its CMD), on the host's network; SIGTERM
#                                               stops it as the kubelet does
#        scripts/image.sh smoke [PYTEST ARGS]   tests/deploy/test_image.py: both images built, each started the
#                                               way the Helm chart's Deployment starts it, a chat request
#                                               through it to a fake upstream, its user and HEALTHCHECK
#
# run OPTIONS, each a field of a Kubernetes container (tests/deploy/pod.py reads them from the chart's
# rendered Deployment):
#   --user UID:GID          runAsUser:runAsGroup (default: the image's USER, which must be numeric)
#   --group-add GID         a supplementary group: the pod's fsGroup
#   --env NAME=VALUE        env
#   --volume SRC:DST[:ro]   volumeMounts (a ConfigMap or an emptyDir laid out in a host folder)
#   --entrypoint PROGRAM    command (replaces ENTRYPOINT; ARGS then replace CMD)
#   --read-only             readOnlyRootFilesystem: the root is mounted read-only
#   --no-new-privileges     allowPrivilegeEscalation: false
#   --cap-drop ALL          capabilities: {drop: [ALL]}
#
# The base image (the Dockerfile's PYTHON_IMAGE build argument): $PYTHON_IMAGE when set; otherwise
# python:3.11-slim-bookworm when this machine has it or can pull it; otherwise a Debian bookworm base with
# Python, made here with debootstrap from the Debian mirror apt uses (about a minute, once), kept in the local
# image store (/var/lib/containers) as localhost/nanoroute-base:bookworm-KEY, KEY a hash of the recipe below
# and its inputs: a changed recipe makes a new base, an unchanged one is reused by every later run on the
# machine, from any clone.
#
# Containers run with `buildah run --isolation chroot` (on machines where `podman run` cannot start one:
# crun's setrlimit is refused), which shares the host's network namespace: bind the gateway to 127.0.0.1
# (NANOROUTE_HOST) on a free port (NANOROUTE_PORT). Runs as root; installs podman, buildah and debootstrap
# with apt when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SLIM=docker.io/library/python:3.11-slim-bookworm
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv
REPO_NAME=localhost/nanoroute

say() { echo "scripts/image.sh: $*" >&2; }

ensure_tools() {
  command -v buildah >/dev/null 2>&1 && command -v podman >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 \
    && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "needs buildah, podman and debootstrap (apt-get install podman buildah debootstrap), as root"
    exit 69
  fi
  say "installing Debian's podman, buildah and debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q podman buildah debootstrap >&2  # with their recommends, as measured (docs/deploy.md)
}

# The mirror apt uses here (deb822 or one-line sources), so that debootstrap reaches what apt reaches.
debian_mirror() {
  local uri
  uri=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*debian\)[[:space:]]*$/\1/p' /etc/apt/sources.list.d/*.sources \
          2>/dev/null | head -n 1 || true)
  if [ -z "$uri" ]; then
    uri=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\(http[^[:space:]]*debian\)[[:space:]].*/\2/p' \
            /etc/apt/sources.list 2>/dev/null | head -n 1 || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

# A Debian bookworm base with Python 3.11, slimmed the way debian:bookworm-slim is (no docs, man pages,
# locales or apt lists), with python:3.11-slim's LANG. Its KEY hashes this function and its inputs.
make_base() {
  local tag=$1 mirror=$2 root
  root=$(mktemp -d /var/tmp/nanoroute-base.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -rf '$root'" RETURN
  say "making the Debian base $tag from $mirror (debootstrap, about a minute, once per machine and recipe)"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$root" "$mirror" >&2
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log "$root"/var/cache/debconf/*-old
  find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  tar -C "$root" --numeric-owner -c . | podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
}

base_image() {
  if [ -n "${PYTHON_IMAGE:-}" ]; then
    echo "$PYTHON_IMAGE"
    return
  fi
  if podman image exists "$SLIM" || timeout 120 podman pull -q "$SLIM" >/dev/null 2>&1; then
    echo "$SLIM"
    return
  fi
  local mirror key tag
  mirror=$(debian_mirror)
  key=$( { declare -f make_base; echo "$SUITE $BASE_PACKAGES $mirror $(dpkg --print-architecture)"; } \
         | sha256sum | cut -c1-12)
  tag=$REPO_NAME-base:$SUITE-$key
  if ! podman image exists "$tag"; then
    make_base "$tag" "$mirror"
  fi
  echo "$tag"
}

# This machine's CA bundle, mounted into the build: outbound TLS may be re-signed by a local CA that a fresh
# base does not trust, and pip would fail with CERTIFICATE_VERIFY_FAILED. Mounted, never copied in.
ca_volume() {
  local bundle=/etc/ssl/certs/ca-certificates.crt
  [ -f "$bundle" ] && echo "--volume=$bundle:$bundle:ro"
  return 0
}

build() {
  local extras="" base tag="" old new
  while [ "$#" -gt 0 ]; do
    case $1 in
      --tag) tag=$2; shift 2 ;;
      -*) say "unknown option $1"; exit 64 ;;
      *) extras=$1; shift ;;
    esac
  done
  [ -n "$tag" ] || tag=$REPO_NAME:dev${extras:+-$extras}
  base=$(base_image)
  say "building $tag on $base${extras:+ with the extra $extras}"
  old=$(buildah inspect --type image --format '{{.FromImageID}}' "$tag" 2>/dev/null || true)
  # Docker's format, not OCI's: OCI image configs have no HEALTHCHECK, and buildah would drop it.
  # shellcheck disable=SC2046
  buildah bud --isolation chroot --format docker --layers=false $(ca_volume) --build-arg "PYTHON_IMAGE=$base" \
    --build-arg "EXTRAS=$extras" --tag "$tag" . >&2
  new=$(buildah inspect --type image --format '{{.FromImageID}}' "$tag")
  if [ -n "$old" ] && [ "$old" != "$new" ]; then
    buildah rmi "$old" >/dev/null 2>&1 || true  # the previous build of this tag, now untagged
  fi
  echo "$tag"
}

# The image's config field FIELD (Entrypoint, Cmd, User...), one line per list item.
image_config() {
  buildah inspect --type image --format "{{range \$v := .Docker.Config.$1}}{{println \$v}}{{end}}" "$2"
}

# The container's own process under `buildah run`'s helpers (buildah-chroot-runtime, buildah-chroot-exec: the
# buildah binary again, run from a memfd copy), the one a container runtime would signal: the first
# descendant of PID that is none of them.
container_process() {
  local pid=$1 child buildah
  buildah=$(readlink -f "$(command -v buildah)")
  while [ -d "/proc/$pid" ]; do
    # Any thread may have started the child (buildah is a Go program): read every thread's list.
    child=$(cat /proc/"$pid"/task/*/children 2>/dev/null | tr ' ' '\n' | sed -n '/./{p;q}')
    [ -n "$child" ] || return 1
    pid=$child
    case $(readlink "/proc/$pid/exe" 2>/dev/null) in
      "$buildah" | /memfd:buildah*) ;;
      *) echo "$pid"; return 0 ;;
    esac
  done
  return 1
}

run() {
  local user="" groups="" readonly=0 nnp=0 capdrop=0 entrypoint="" image ctr child status
  local -a opts=() entry=() args=() priv=()
  while [ "$#" -gt 0 ]; do
    case $1 in
      --user) user=$2; shift 2 ;;
      --group-add) groups=${groups:+$groups,}$2; shift 2 ;;
      --env) opts+=(--env "$2"); shift 2 ;;
      --volume) opts+=(--volume "$2"); shift 2 ;;
      --entrypoint) entrypoint=$2; shift 2 ;;
      --read-only) readonly=1; shift ;;
      --no-new-privileges) nnp=1; shift ;;
      --cap-drop) [ "$2" = ALL ] || { say "--cap-drop takes ALL only"; exit 64; }; capdrop=1; shift 2 ;;
      -*) say "unknown option $1"; exit 64 ;;
      *) break ;;
    esac
  done
  [ "$#" -ge 1 ] || { say "usage: scripts/image.sh run [OPTIONS] IMAGE [-- ARGS...]"; exit 64; }
  image=$1
  shift
  [ "${1:-}" != "--" ] || shift
  # Kubernetes' rules: `command` replaces ENTRYPOINT, `args` replaces CMD.
  if [ -n "$entrypoint" ]; then entry=("$entrypoint"); else mapfile -t entry < <(image_config Entrypoint "$image"); fi
  if [ "$#" -gt 0 ]; then args=("$@"); elif [ -z "$entrypoint" ]; then mapfile -t args < <(image_config Cmd "$image"); fi
  [ -n "$user" ] || user=$(buildah inspect --type image --format '{{.Docker.Config.User}}' "$image")
  [[ $user =~ ^[0-9]+:[0-9]+$ ]] || { say "--user (or the image's USER) must be numeric UID:GID, not '$user'"; exit 64; }

  # buildah run cannot mount the root read-only, nor start as a user without capabilities and then stay so:
  # it starts a root shell from the image with CAP_SYS_ADMIN, which remounts / read-only (a bind mount
  # in the container's own mount namespace: the volumes under it stay as mounted) and then becomes the user
  # with setpriv (util-linux, in every Debian-based image), dropping what was asked, before it execs the
  # entry point. The gateway is that process (exec), so it gets the signals.
  priv=(--reuid="${user%:*}" --regid="${user#*:}")
  if [ -n "$groups" ]; then priv+=(--groups="$groups"); else priv+=(--clear-groups); fi
  [ "$nnp" = 0 ] || priv+=(--no-new-privs)
  [ "$capdrop" = 0 ] || priv+=(--inh-caps=-all --bounding-set=-all)
  local remount=""
  [ "$readonly" = 0 ] || remount='mount -o remount,bind,ro / && '

  ctr=$(buildah from --pull-never --name "nanoroute-run-$$" "$image")
  buildah run --isolation chroot --user 0:0 --cap-add CAP_SYS_ADMIN "${opts[@]}" "$ctr" -- \
    sh -c "${remount}exec setpriv \"\$@\"" sh "${priv[@]}" -- "${entry[@]}" "${args[@]}" &
  child=$!
  # SIGTERM or SIGINT go to the container's process, as `docker stop` and the kubelet send them (buildah run
  # itself would kill it outright); then the working container is removed.
  trap 'kill -TERM "$(container_process "$child")" 2>/dev/null || kill -TERM "$child"' TERM INT
  status=0
  wait "$child" || status=$?
  while kill -0 "$child" 2>/dev/null; do
    wait "$child" || status=$?
  done
  buildah rm "$ctr" >/dev/null
  return "$status"
}

main() {
  local command=${1:-}
  shift || true
  case $command in
    base) ensure_tools; base_image ;;
    build) ensure_tools; build "$@" ;;
    run) ensure_tools; run "$@" ;;
    smoke)
      ensure_tools
      [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
      .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
      exec .venv/bin/python -m pytest tests/deploy/test_image.py -p no:cacheprovider -s "$@" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 64 ;;
  esac
}

main "$@"
