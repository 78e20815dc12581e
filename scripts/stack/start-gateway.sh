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

# The config is checked only when the gateway is to be started here (a busy port is start_service's to refuse).
if ! alive_pid "$pid_file" >/dev/null && ! port_busy "$GATEWAY_PORT"; then
  "$PROJECT_VENV/bin/nanoroute" check "$STACK_CONFIG" >/dev/null
fi
# The admin key reaches the gateway through its environment, never its command line.
NANOROUTE_ADMIN_KEY="$(cat "$ADMIN_KEY_FILE")" \
  start_service "the gateway" "$pid_file" "$log_file" "http://127.0.0.1:$GATEWAY_PORT/readyz" 60 \
  "gateway already running" \
  "starting the gateway on 127.0.0.1:$GATEWAY_PORT with ${STACK_CONFIG#"$REPO_DIR"/} (log: $log_file)" \
  -- "$PROJECT_VENV/bin/nanoroute" serve --config "$STACK_CONFIG" --host 127.0.0.1 --port "$GATEWAY_PORT"
log "gateway ready on http://127.0.0.1:$GATEWAY_PORT/v1 (pid $pid)"
