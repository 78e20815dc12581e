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

start_service "the stand-in hosted model" "$pid_file" "$log_file" "http://127.0.0.1:$HOSTED_PORT/v1/models" 30 \
  "the stand-in hosted model is already running" \
  "starting the stand-in hosted model (gpt-4o-mini) on 127.0.0.1:$HOSTED_PORT (log: $log_file)" \
  -- "$PROJECT_VENV/bin/python" "$REPO_DIR/examples/flywheel/teacher.py" --host 127.0.0.1 \
  --port "$HOSTED_PORT" --model gpt-4o-mini --know "$ROUTER_DATA"
log "stand-in hosted model ready on http://127.0.0.1:$HOSTED_PORT/v1 (pid $pid)"
