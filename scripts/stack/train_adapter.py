"""Train the demo LoRA adapter with peft, score it on held-out examples, and write its manifest.

usage: python train_adapter.py --model MODEL_DIR --data DATA_DIR --out ADAPTER_DIR --manifest FILE
       (run with the vLLM venv's python, which has torch, transformers and peft)

DATA_DIR holds train.jsonl and eval.jsonl: one chat per line, OpenAI's fine-tuning format
({"messages": [system, user, assistant]}). Only the assistant's answer is learnt (the prompt's tokens are
masked out of the loss). The held-out score is exact match of the whole answer, compared with the base
model's on the same prompts (peft's adapter switched off), greedy decoding both.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

RANK, ALPHA, TARGETS = 8, 16, ["q_proj", "v_proj"]


def read_chats(path: Path) -> list[list[dict[str, str]]]:
    return [json.loads(line)["messages"] for line in path.read_text().splitlines() if line.strip()]


def encode(tok: PreTrainedTokenizerBase, chat: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids of the whole chat, and labels that keep only the answer (and its end-of-turn token)."""
    prompt = tok.apply_chat_template(chat[:-1], add_generation_prompt=True, tokenize=False)
    answer = chat[-1]["content"] + tok.eos_token
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tok(answer, add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def batches(rows: list[tuple[list[int], list[int]]], size: int, pad: int) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(0, len(rows), size):
        chunk = rows[i:i + size]
        width = max(len(ids) for ids, _ in chunk)
        ids = [r[0] + [pad] * (width - len(r[0])) for r in chunk]
        labels = [r[1] + [-100] * (width - len(r[1])) for r in chunk]
        mask = [[1] * len(r[0]) + [0] * (width - len(r[0])) for r in chunk]
        out.append({"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                    "attention_mask": torch.tensor(mask)})
    return out


def answer_loss(model: PeftModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy on the answer's tokens only. The output layer (49k words wide) runs on those few
    positions instead of every position of the batch: about a quarter less work per step."""
    causal_lm = model.get_base_model()
    hidden = causal_lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = causal_lm.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def train(model: Any, tok: PreTrainedTokenizerBase, chats: list[list[dict[str, str]]],
          epochs: int, batch_size: int, lr: float) -> list[float]:
    rows = [encode(tok, c) for c in chats]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng = random.Random(0)
    losses = []
    model.train()
    for epoch in range(epochs):
        rng.shuffle(rows)
        total = 0.0
        steps = batches(rows, batch_size, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        for batch in steps:
            loss = answer_loss(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            total += loss.item()
        losses.append(total / len(steps))
        print(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}", flush=True)
    model.eval()
    return losses


def normalise(text: str) -> str:
    return text.strip().strip(".!\"'`").strip().lower()


def answer(model: Any, tok: PreTrainedTokenizerBase, chat: list[dict[str, str]]) -> str:
    prompt = tok.apply_chat_template(chat[:-1], add_generation_prompt=True, tokenize=False)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.eos_token_id)
    return str(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))


def evaluate(model: PeftModel, tok: PreTrainedTokenizerBase, chats: list[list[dict[str, str]]]) -> dict[str, Any]:
    """Exact match of the adapter's and the base model's answers on held-out chats."""
    hits = {"adapter": 0, "base": 0}
    for chat in chats:
        expected = normalise(chat[-1]["content"])
        got_adapter = answer(model, tok, chat)
        with model.disable_adapter():
            got_base = answer(model, tok, chat)
        hits["adapter"] += normalise(got_adapter) == expected
        hits["base"] += normalise(got_base) == expected
        print(f"  {expected:>10} | adapter: {got_adapter!r:24.24} | base: {got_base!r:.48}", flush=True)
    n = len(chats)
    return {"examples": n, "metric": "exact_match",
            "adapter": round(hits["adapter"] / n, 3), "base": round(hits["base"] / n, 3)}


def relative(path: Path, repo: Path) -> str:
    try:
        return str(path.resolve().relative_to(repo))
    except ValueError:
        return str(path.resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the converted base model folder")
    parser.add_argument("--base-name", default="smollm2-135m-instruct", help="the base model's served name")
    parser.add_argument("--data", type=Path, required=True, help="folder with train.jsonl and eval.jsonl")
    parser.add_argument("--out", type=Path, required=True, help="where the adapter is written")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--task", action="append", help="task(s) the adapter serves (default: its name)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()

    repo = Path(__file__).resolve().parents[2]
    name = args.out.name
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    tok = AutoTokenizer.from_pretrained(args.model)
    base = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0, task_type="CAUSAL_LM")
    model = get_peft_model(base, config)

    train_chats, eval_chats = read_chats(args.data / "train.jsonl"), read_chats(args.data / "eval.jsonl")
    started = time.monotonic()
    losses = train(model, tok, train_chats, args.epochs, args.batch_size, args.lr)
    seconds = time.monotonic() - started
    print(f"trained on {len(train_chats)} examples x {args.epochs} epochs in {seconds:.0f}s", flush=True)

    partial = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    shutil.rmtree(args.out, ignore_errors=True)
    partial.rename(args.out)

    print(f"held-out eval ({len(eval_chats)} examples): expected | adapter | base", flush=True)
    scores = evaluate(model, tok, eval_chats)
    print(f"exact match: adapter {scores['adapter']:.0%}, base model {scores['base']:.0%}", flush=True)

    manifest = {
        "name": name,
        "base_model": args.base_name,
        "tasks": args.task or [name],
        "path": relative(args.out, repo),
        "rank": RANK,
        "alpha": ALPHA,
        "target_modules": TARGETS,
        "training": {
            "data": relative(args.data / "train.jsonl", repo),
            "examples": len(train_chats),
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "seconds": round(seconds, 1),
            "loss": {"first_epoch": round(losses[0], 4), "last_epoch": round(losses[-1], 4)},
            "trained_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "eval": {"data": relative(args.data / "eval.jsonl", repo), **scores},
    }
    header = "# Written by scripts/stack/train_adapter.py; the format is described in docs/adapters.md.\n"
    args.manifest.write_text(header + yaml.safe_dump(manifest, sort_keys=False))
    print(f"adapter -> {args.out}; manifest -> {args.manifest}")


if __name__ == "__main__":
    main()
