"""Distill: from captured answers to a LoRA adapter that earns its traffic.

    export   captures (+ feedback) -> a chat SFT dataset: train.jsonl, eval.jsonl, stats.json   dataset.py
    train    the dataset -> a LoRA adapter with peft, and its manifest adapters/<name>.yaml      trainer.py
    eval     the adapter's answers on the held-out split, scored, into the manifest             evaluate.py

`trainer.py`, `evaluate.py` and `manifest.py` import only the standard library and PyYAML at module level
(torch, transformers and peft inside the functions that need them), because the trainer runs in another
Python: the local stack's vLLM venv, which has the ML packages the gateway's own venv does not.
`commands.py` is what `nanoroute distill ...` calls.
"""
