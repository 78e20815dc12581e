#!/usr/bin/env bash
# The gateway-overhead benchmark: Nanoroute (one worker pinned to CPU 1) against going direct to a fast
# mock upstream, side by side with LiteLLM's proxy, with the shared peerbench harness.
#
#   bench/run.sh [nanoroute|nometrics|governed|governed-redis|litellm|console|all] [extra run_peer.py args]
#
# nanoroute: metrics and access log on (the defaults); nometrics: both off (the cost of observability);
# governed: a client key with limits, a budget and a team (bench/governed.yaml.tmpl), in the embedded SQLite
# store; governed-redis: the same in a redis-server started here (Debian's package); litellm: LiteLLM's
# proxy on the same mock (installed into bench/.venv-litellm on first use).
# console (not in all): the operators' console on, as an admin key turns it on: its series read the metrics
# every 10 s, off the request path.
# Results (JSON and logs) go to bench/results/; docs/performance.md records the figures.
# Elsewhere than in this checkout's .venv: PEERBENCH (the harness), PY (a Python with the gateway's
# packages), NANOROUTE (the command that runs the gateway) and BENCH_OUT (where results go).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
harness=${PEERBENCH:-$root/../shared/bench}
py=${PY:-$root/.venv/bin/python}
nanoroute=${NANOROUTE:-$root/.venv/bin/nanoroute}
out=${BENCH_OUT:-$root/bench/results}
mkdir -p "$out"
command -v "$py" >/dev/null || { echo "run scripts/test.sh (or pip install -e .) first: no .venv" >&2; exit 1; }
command -v wrk >/dev/null || echo "note: wrk not installed (apt-get install wrk); using the Python load engine" >&2
engine=$(command -v wrk >/dev/null && echo wrk || echo py)
which=${1:-all}; shift || true
common=(--concurrency 1,16,64 --modes nonstream,stream --duration 10 --warmup 5
        --cpus-gateway 1 --cpus-load 0 --cpus-mock 0 --engine "$engine" --mock-python "$py")

extra=("$@")

run_nanoroute() {  # name, then KEY=VALUE settings for the gateway
  local name=$1; shift
  local envs=()
  for kv in "$@"; do envs+=(--gateway-env "$kv"); done
  "$py" "$harness/run_peer.py" --name "$name" "${common[@]}" "${envs[@]}" \
    --gateway-config "${config:-$root/bench/nanoroute.yaml.tmpl}" ${header:+-H "$header"} \
    --gateway-cmd "$nanoroute serve --config {config} --port {port}" \
    --out "$out/$name.json" "${extra[@]}" 2>"$out/$name.log"
}

if [[ $which == nanoroute || $which == all ]]; then
  run_nanoroute nanoroute NANOROUTE_ACCESS_LOG=true NANOROUTE_LOG_LEVEL=warning
fi
if [[ $which == nometrics || $which == all ]]; then
  run_nanoroute nanoroute-nometrics NANOROUTE_METRICS=false NANOROUTE_ACCESS_LOG=false NANOROUTE_LOG_LEVEL=warning
fi
if [[ $which == governed || $which == governed-redis || $which == all ]]; then
  data=$(mktemp -d)
  export config=$root/bench/governed.yaml.tmpl header="Authorization: Bearer sk-bench-governed-0123456789abcdef"
  if [[ $which != governed-redis ]]; then
    run_nanoroute nanoroute-governed NANOROUTE_ACCESS_LOG=true NANOROUTE_LOG_LEVEL=warning NANOROUTE_DATA_DIR="$data"
  fi
  if [[ $which != governed ]]; then
    command -v redis-server >/dev/null || { echo "governed-redis needs redis-server (apt-get install redis-server)" >&2; exit 1; }
    redis-server --port 18121 --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec --dir "$data" \
      --daemonize yes --pidfile "$data/redis.pid" --logfile "$data/redis.log"
    trap 'kill "$(cat "$data/redis.pid")" 2>/dev/null || true' EXIT
    run_nanoroute nanoroute-governed-redis NANOROUTE_ACCESS_LOG=true NANOROUTE_LOG_LEVEL=warning \
      NANOROUTE_DATA_DIR="$data" NANOROUTE_REDIS_URL=redis://127.0.0.1:18121/0
  fi
  unset config header
fi
if [[ $which == console ]]; then
  run_nanoroute nanoroute-console NANOROUTE_ACCESS_LOG=true NANOROUTE_LOG_LEVEL=warning \
    NANOROUTE_ADMIN_KEY=bench-admin-key-0123456789 NANOROUTE_DATA_DIR="$(mktemp -d)"
fi
if [[ $which == litellm || $which == all ]]; then
  venv=$root/bench/.venv-litellm
  if [ ! -x "$venv/bin/litellm" ]; then
    python3 -m venv "$venv" && "$venv/bin/pip" install -q 'litellm[proxy]'
  fi
  key=$(cat "$harness/gateways/litellm/master_key.txt")
  LITELLM_VENV=$venv "$py" "$harness/run_peer.py" --name litellm "${common[@]}" \
    --gateway-config "$harness/gateways/litellm/config.yaml.tmpl" -H "Authorization: Bearer $key" \
    --gateway-cmd "$harness/gateways/litellm/run.sh {config} {port}" \
    --out "$out/litellm.json" "${extra[@]}" 2>"$out/litellm.log"
fi
"$py" "$harness/summarize.py" "$out"/*.json
