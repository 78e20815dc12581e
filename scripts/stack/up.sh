#!/usr/bin/env bash
# Set up and start the local stack, then show it working:
#   build (first run only: venvs, model, adapter; minutes)  -> scripts/stack/build.sh
#   vLLM with LoRA on 127.0.0.1:8000                        -> scripts/stack/start-vllm.sh
#   a stand-in hosted model (gpt-4o-mini) on 127.0.0.1:8090  -> scripts/stack/start-hosted.sh
#   the gateway on 127.0.0.1:8080, which loads the adapter  -> scripts/stack/start-gateway.sh
#   a few requests through the openai SDK                   -> scripts/stack/demo.py
# A second run reuses what the first built and starts only what is not running (seconds).
# scripts/stack/down.sh stops it all. State: .stack/ (git-ignored), or $NANOROUTE_STACK_DIR.
set -euo pipefail
# shellcheck source=scripts/stack/common.sh
source "$(dirname "$0")/common.sh"
here="$REPO_DIR/scripts/stack"

started=$(date +%s)
bash "$here/build.sh"
bash "$here/start-vllm.sh"
bash "$here/start-hosted.sh"
bash "$here/start-gateway.sh"
log "stack up in $(( $(date +%s) - started ))s: gateway http://127.0.0.1:$GATEWAY_PORT/v1, vLLM http://127.0.0.1:$VLLM_PORT/v1"

if [ "${1:-}" != "--no-demo" ]; then
  "$PROJECT_VENV/bin/python" "$here/demo.py" --url "http://127.0.0.1:$GATEWAY_PORT/v1" \
    --admin-key-file "$ADMIN_KEY_FILE"
fi
