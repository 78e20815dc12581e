#!/usr/bin/env bash
# STOPGAP until the gateway's vllm backend loads adapters itself: load the demo adapter into the vLLM on
# $VLLM_PORT through vLLM's runtime API (POST /v1/load_lora_adapter), unless /v1/models lists it already.
# Harmless once the gateway does it: an adapter that is already loaded is left as it is.
set -euo pipefail
# shellcheck source=scripts/stack/common.sh
source "$(dirname "$0")/common.sh"

base="http://127.0.0.1:$VLLM_PORT/v1"
[ -f "$ADAPTER_DIR/adapter_config.json" ] || die "no adapter in $ADAPTER_DIR: run scripts/stack/build.sh first"
if curl -fsS --max-time 5 "$base/models" | grep -q "\"id\":\"$ADAPTER_NAME\""; then
  log "adapter $ADAPTER_NAME already loaded in vLLM (port $VLLM_PORT)"
  exit 0
fi
body=$(printf '{"lora_name": "%s", "lora_path": "%s"}' "$ADAPTER_NAME" "$ADAPTER_DIR")
reply=$(curl -sS --max-time 60 -w '\n%{http_code}' -H 'Content-Type: application/json' -d "$body" \
  "$base/load_lora_adapter")
code=${reply##*$'\n'}
if [ "$code" = 200 ] || grep -qi "already" <<<"$reply"; then
  log "adapter $ADAPTER_NAME loaded into vLLM at run time (stopgap in scripts/stack/load-adapter.sh)"
else
  die "loading adapter $ADAPTER_NAME failed (HTTP $code): ${reply%$'\n'*}"
fi
