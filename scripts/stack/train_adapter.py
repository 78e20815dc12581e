"""Train the demo LoRA adapter with peft, score it on held-out examples, and write its manifest.

usage: python train_adapter.py --model MODEL_DIR --data DATA_DIR --out ADAPTER_DIR --manifest FILE
       [--base-name NAME] [--task TASK] [--epochs N] [--batch-size N] [--lr LR]
       (run with the vLLM venv's python, which has torch, transformers and peft)

The stack's entry to the one trainer, gateway/distill/trainer.py (`nanoroute distill train` runs the same
code): trains on DATA_DIR/train.jsonl, then scores exact match of the adapter and of the base model on
DATA_DIR/eval.jsonl (--eval), on at most two CPU threads as the stack's build always has.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for the gateway package

from gateway.distill import trainer


def main() -> None:
    argv = sys.argv[1:]
    if "--base-name" not in argv:
        argv += ["--base-name", "smollm2-135m-instruct"]
    trainer.main(["train", *argv, "--eval", "--threads", str(min(2, os.cpu_count() or 1))])


if __name__ == "__main__":
    main()
