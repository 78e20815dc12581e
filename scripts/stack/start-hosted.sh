#!/usr/bin/env bash
# (g) Start the stand-in for a hosted large model on 127.0.0.1:$HOSTED_PORT: examples/flywheel/teacher.py,
# an OpenAI-compatible server that answers support tickets with their queue as a large model that knows the
# task would (the gateway prices it as gpt-4o-mini): the flywheel's tickets and the routing dataset's are
# the ones it knows. Already running (our pid file, process alive): only waits for it.
set -euo pipefail
# shellcheck source=scripts/stack/common.sh
source "$(dirname "$0")/common.sh"

pid_file="$RUN_DIR/hosted-$HOSTED_PORT.pid"
log_file="$LOG_DIR/hosted-$HOSTED_PORT.log"
mkdir -p "$RUN_DIR" "$LOG_DIR"

if pid=$(alive_pid "$pid_file"); then
  log "the stand-in hosted model is already running (pid $pid, port $HOSTED_PORT)"
else
  port_busy "$HOSTED_PORT" && die "port $HOSTED_PORT is taken by another process (not started by these scripts)"
  log "starting the stand-in hosted model (gpt-4o-mini) on 127.0.0.1:$HOSTED_PORT (log: $log_file)"
  setsid "$PROJECT_VENV/bin/python" "$REPO_DIR/examples/flywheel/teacher.py" --host 127.0.0.1 \
    --port "$HOSTED_PORT" --model gpt-4o-mini --know "$ROUTER_DATA" </dev/null >"$log_file" 2>&1 &
  pid=$!
  echo "$pid" >"$pid_file"
fi

if ! wait_http "http://127.0.0.1:$HOSTED_PORT/v1/models" 30 "$pid" "the stand-in hosted model (pid $pid)"; then
  tail -n 30 "$log_file" >&2
  die "the stand-in hosted model did not start; log: $log_file"
fi
log "stand-in hosted model ready on http://127.0.0.1:$HOSTED_PORT/v1 (pid $pid)"
