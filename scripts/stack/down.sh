#!/usr/bin/env bash
# Stop what scripts/stack/ started (vLLM and the gateway), by the pids in $STACK_DIR/run/: SIGTERM to each
# process group, SIGKILL after 30 s. Leaves the built venvs, model and adapter in place.
#
# usage: scripts/stack/down.sh [NAME...]   (NAME: a pid file's name, e.g. vllm-8000; default: all of them)
set -euo pipefail
# shellcheck source=scripts/stack/common.sh
source "$(dirname "$0")/common.sh"

stop() {
  local file=$1 name pid
  name=$(basename "$file" .pid)
  if ! pid=$(alive_pid "$file"); then
    rm -f "$file"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 60); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 -- "-$pid" 2>/dev/null; then
    log "$name did not stop in 30 s: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

if [ $# -gt 0 ]; then
  for name in "$@"; do stop "$RUN_DIR/$name.pid"; done
  exit 0
fi

shopt -s nullglob
files=("$RUN_DIR"/*.pid)
[ ${#files[@]} -gt 0 ] || { log "nothing running"; exit 0; }
# The gateway first, so that it is not sending to a vLLM that is going away.
for f in "$RUN_DIR"/gateway-*.pid; do stop "$f"; done
for f in "$RUN_DIR"/*.pid; do stop "$f"; done
log "stopped"
