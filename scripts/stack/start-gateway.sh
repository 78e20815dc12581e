#!/usr/bin/env bash
# (f) Start the gateway (`nanoroute serve`) on 127.0.0.1:$GATEWAY_PORT with $STACK_CONFIG
# (scripts/stack/local-stack.yaml) and an admin key generated once into $STACK_DIR/admin-key.
# Already running (our pid file, process alive): only waits for it to be ready.
set -euo pipefail
# shellcheck source=scripts/stack/common.sh
source "$(dirname "$0")/common.sh"

pid_file="$RUN_DIR/gateway-$GATEWAY_PORT.pid"
log_file="$LOG_DIR/gateway-$GATEWAY_PORT.log"
mkdir -p "$RUN_DIR" "$LOG_DIR"

if [ ! -s "$ADMIN_KEY_FILE" ]; then
  (umask 077 && "$PYTHON" -c "import secrets; print(secrets.token_urlsafe(24))" >"$ADMIN_KEY_FILE")
fi

if pid=$(alive_pid "$pid_file"); then
  log "gateway already running (pid $pid, port $GATEWAY_PORT)"
else
  port_busy "$GATEWAY_PORT" && die "port $GATEWAY_PORT is taken by another process (not started by these scripts)"
  "$PROJECT_VENV/bin/nanoroute" check "$STACK_CONFIG" >/dev/null
  log "starting the gateway on 127.0.0.1:$GATEWAY_PORT with ${STACK_CONFIG#"$REPO_DIR"/} (log: $log_file)"
  NANOROUTE_ADMIN_KEY="$(cat "$ADMIN_KEY_FILE")" \
    setsid "$PROJECT_VENV/bin/nanoroute" serve --config "$STACK_CONFIG" --host 127.0.0.1 --port "$GATEWAY_PORT" \
    </dev/null >"$log_file" 2>&1 &
  pid=$!
  echo "$pid" >"$pid_file"
fi

if ! wait_http "http://127.0.0.1:$GATEWAY_PORT/readyz" 60 "$pid" "the gateway (pid $pid)"; then
  tail -n 30 "$log_file" >&2
  die "the gateway did not start; log: $log_file"
fi
log "gateway ready on http://127.0.0.1:$GATEWAY_PORT/v1 (pid $pid)"
