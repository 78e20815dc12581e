"""Train a LoRA adapter with peft on transformers, and generate answers with it in-process.

Runs in the Python that has torch, transformers and peft (the local stack's `.stack/venv-vllm`), as
`python -m gateway.distill.trainer train|generate ...`; `nanoroute distill train|eval` start it so.
torch and friends are imported inside the functions: the module itself imports with the standard library.

train     DATA_DIR/train.jsonl (OpenAI's fine-tuning format, one chat a line) -> the adapter in OUT and
          its manifest; only the assistant's answer is learnt (the prompt's tokens are masked out of the
          loss); with --eval, the adapter and the base model are also scored on DATA_DIR/eval.jsonl (exact
          match, greedy decoding, the adapter switched off for the base model)
generate  the answers of the adapter (and, with --base, of the base model) to DATA (a JSONL of chats
          whose last message is the expected answer), written to OUT as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.distill import evaluate, manifest

Chat = list[dict[str, Any]]


@dataclass(frozen=True)
class Hyper:
    epochs: int = 3
    batch_size: int = 8
    lr: float = 3e-3
    rank: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0
    schedule: str = "linear"
    """The learning rate over the run: `linear` decays it to 0 by the last step (as transformers' Trainer
    does by default), `constant` keeps it."""


@dataclass
class Trained:
    examples: int
    skipped: int
    losses: list[float]
    seconds: float
    device: str
    extra: dict[str, Any] = field(default_factory=dict)


def read_chats(path: Path) -> list[Chat]:
    return [json.loads(line)["messages"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _plain(chat: Chat) -> Chat:
    """Messages as chat templates take them: content as a string (text parts joined)."""
    return [{**m, "content": evaluate.content_text(m)} for m in chat]


def trainable(chat: Chat) -> bool:
    """An example whose answer is text (answers that are only tool calls are not learnt here)."""
    return bool(chat) and chat[-1].get("role") == "assistant" and bool(evaluate.content_text(chat[-1]))


def encode(tok: Any, chat: Chat) -> tuple[list[int], list[int]]:
    """Token ids of the whole chat, and labels that keep only the answer (and its end-of-turn token)."""
    plain = _plain(chat)
    prompt = tok.apply_chat_template(plain[:-1], add_generation_prompt=True, tokenize=False)
    answer = plain[-1]["content"] + tok.eos_token
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tok(answer, add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def batches(rows: list[tuple[list[int], list[int]]], size: int, pad: int, device: Any) -> list[dict[str, Any]]:
    import torch

    out = []
    for i in range(0, len(rows), size):
        chunk = rows[i:i + size]
        width = max(len(ids) for ids, _ in chunk)
        ids = [r[0] + [pad] * (width - len(r[0])) for r in chunk]
        labels = [r[1] + [-100] * (width - len(r[1])) for r in chunk]
        mask = [[1] * len(r[0]) + [0] * (width - len(r[0])) for r in chunk]
        out.append({"input_ids": torch.tensor(ids, device=device), "labels": torch.tensor(labels, device=device),
                    "attention_mask": torch.tensor(mask, device=device)})
    return out


def answer_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Cross-entropy on the answer's tokens only. The output layer (49k words wide) runs on those few
    positions instead of every position of the batch: about a quarter less work per step."""
    import torch

    causal_lm = model.get_base_model()
    hidden = causal_lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = causal_lm.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def load(model_dir: Path, threads: int | None) -> tuple[Any, Any, Any]:
    """The tokenizer, the float32 base model on the GPU when torch sees one, and that device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    return tok, base, device


def train(model: Any, tok: Any, chats: list[Chat], hyper: Hyper, device: Any) -> list[float]:
    import torch

    rows = [encode(tok, c) for c in chats]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=hyper.lr)
    total_steps = hyper.epochs * -(-len(rows) // hyper.batch_size)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / total_steps) \
        if hyper.schedule == "linear" else None
    rng = random.Random(hyper.seed)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    losses = []
    model.train()
    for epoch in range(hyper.epochs):
        rng.shuffle(rows)
        total = 0.0
        steps = batches(rows, hyper.batch_size, pad, device)
        for batch in steps:
            loss = answer_loss(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if decay is not None:
                decay.step()
            total += loss.item()
        losses.append(total / len(steps))
        print(f"epoch {epoch + 1}/{hyper.epochs}: loss {losses[-1]:.4f}", flush=True)
    model.eval()
    return losses


def answer(model: Any, tok: Any, chat: Chat, device: Any) -> str:
    """The model's greedy answer to a chat's prompt (all but its last message), about as long as the
    expected answer allows."""
    import torch

    plain = _plain(chat)
    prompt = tok.apply_chat_template(plain[:-1], add_generation_prompt=True, tokenize=False)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt").to(device)
    expected = len(tok(plain[-1]["content"] or "", add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max(8, expected + 4), do_sample=False,
                             pad_token_id=tok.eos_token_id)
    return str(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))


def answers(model: Any, tok: Any, chats: list[Chat], device: Any, base: bool) -> dict[str, list[str]]:
    """The adapter's answers, and with `base` the base model's (the adapter switched off)."""
    out: dict[str, list[str]] = {"adapter": [], "base": []}
    for chat in chats:
        out["adapter"].append(answer(model, tok, chat, device))
        if base:
            with model.disable_adapter():
                out["base"].append(answer(model, tok, chat, device))
        shown = out["base"][-1] if base else ""
        print(f"  {evaluate.answer_text(chat[-1])[:24]!r:>26} | adapter: {out['adapter'][-1][:24]!r:28} | "
              f"base: {shown[:40]!r}", flush=True)
    return out


def exact_scores(chats: list[Chat], got: dict[str, list[str]]) -> dict[str, Any]:
    expected = [evaluate.answer_text(c[-1]) for c in chats]
    n = len(chats)
    scores = {side: round(sum(evaluate.exact(e, g) for e, g in zip(expected, got[side], strict=True)) / n, 3)
              for side in ("adapter", "base") if got[side]}
    return {"examples": n, "metric": evaluate.METRIC["exact"], **scores}


def run_train(args: argparse.Namespace) -> None:
    from peft import LoraConfig, get_peft_model

    hyper = Hyper(args.epochs, args.batch_size, args.lr, args.rank, args.alpha, tuple(args.target_modules), args.seed,
                  args.lr_schedule)
    import torch

    torch.manual_seed(hyper.seed)
    all_chats = read_chats(args.data / "train.jsonl")
    chats = [c for c in all_chats if trainable(c)]
    if not chats:
        sys.exit(f"no example with a text answer in {args.data / 'train.jsonl'}")
    tok, base, device = load(args.model, args.threads)
    config = LoraConfig(r=hyper.rank, lora_alpha=hyper.alpha, target_modules=list(hyper.target_modules),
                        lora_dropout=0.0, task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    started = time.monotonic()
    losses = train(model, tok, chats, hyper, device)
    seconds = time.monotonic() - started
    print(f"trained on {len(chats)} examples x {hyper.epochs} epochs in {seconds:.0f}s on {device.type}", flush=True)

    partial = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    shutil.rmtree(args.out, ignore_errors=True)
    partial.rename(args.out)

    eval_section = None
    if args.eval:
        eval_chats = read_chats(args.data / "eval.jsonl")
        print(f"held-out eval ({len(eval_chats)} examples): expected | adapter | base", flush=True)
        eval_section = {"data": manifest.relative(args.data / "eval.jsonl", args.manifest),
                        **exact_scores(eval_chats, answers(model, tok, eval_chats, device, base=True))}
        print(f"exact match: adapter {eval_section['adapter']:.0%}, base model {eval_section['base']:.0%}",
              flush=True)
    trained = Trained(len(chats), len(all_chats) - len(chats), losses, seconds, device.type)
    manifest.write(args.manifest, training_manifest(args, hyper, trained, eval_section))
    print(f"adapter -> {args.out}; manifest -> {args.manifest}")


def training_manifest(args: argparse.Namespace, hyper: Hyper, trained: Trained,
                      eval_section: dict[str, Any] | None) -> dict[str, Any]:
    name = args.manifest.stem
    data: dict[str, Any] = {
        "name": name,
        "base_model": args.base_name or args.model.resolve().name,
        "tasks": args.task or [name],
        "path": manifest.relative(args.out, args.manifest),
        "rank": hyper.rank,
        "alpha": hyper.alpha,
        "target_modules": list(hyper.target_modules),
        "training": {
            "data": manifest.relative(args.data / "train.jsonl", args.manifest),
            "examples": trained.examples,
            "epochs": hyper.epochs,
            "batch_size": hyper.batch_size,
            "learning_rate": hyper.lr,
            "lr_schedule": hyper.schedule,
            "seconds": round(trained.seconds, 1),
            "loss": {"first_epoch": round(trained.losses[0], 4), "last_epoch": round(trained.losses[-1], 4)},
            "trained_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "base_path": manifest.relative(args.model, args.manifest),
            "device": trained.device,
            "seed": hyper.seed,
        },
    }
    if trained.skipped:
        data["training"]["skipped"] = trained.skipped
    if eval_section is not None:
        data["eval"] = eval_section
    return data


def run_generate(args: argparse.Namespace) -> None:
    from peft import PeftModel

    chats = read_chats(args.data)
    tok, base, device = load(args.model, args.threads)
    model = PeftModel.from_pretrained(base, args.adapter).to(device)
    model.eval()
    got = answers(model, tok, chats, device, base=args.base)
    args.out.write_text(json.dumps(got), encoding="utf-8")


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """The hyperparameters and how training runs: declared once, for this module and `nanoroute distill
    train`, which passes them on (`training_argv`)."""
    p.add_argument("--epochs", type=int, default=Hyper.epochs)
    p.add_argument("--batch-size", type=int, default=Hyper.batch_size)
    p.add_argument("--lr", type=float, default=Hyper.lr)
    p.add_argument("--rank", type=int, default=Hyper.rank)
    p.add_argument("--alpha", type=int, default=Hyper.alpha)
    p.add_argument("--target-modules", nargs="+", metavar="MODULE", default=list(Hyper.target_modules),
                   help="the layers LoRA adapts, by module name (default: q_proj v_proj)")
    p.add_argument("--seed", type=int, default=Hyper.seed)
    p.add_argument("--lr-schedule", choices=("linear", "constant"), default=Hyper.schedule,
                   help="linear: decay the learning rate to 0 by the last step (default); constant: keep it")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    p.add_argument("--eval", action="store_true", help="score exact match on eval.jsonl, with the base model's")


def training_argv(args: argparse.Namespace) -> list[str]:
    """The arguments of `add_training_arguments`, as given, for this module's command line."""
    argv = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
            "--rank", str(args.rank), "--alpha", str(args.alpha), "--seed", str(args.seed),
            "--lr-schedule", args.lr_schedule, "--target-modules", *args.target_modules]
    argv += ["--threads", str(args.threads)] if args.threads else []
    return argv + (["--eval"] if args.eval else [])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gateway.distill.trainer", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an adapter and write its manifest")
    t.add_argument("--model", type=Path, required=True, help="the base model's folder (transformers format)")
    t.add_argument("--base-name", help="the base model's served name (default: its folder's name)")
    t.add_argument("--data", type=Path, required=True, help="folder with train.jsonl (and eval.jsonl for --eval)")
    t.add_argument("--out", type=Path, required=True, help="where the adapter is written")
    t.add_argument("--manifest", type=Path, required=True, help="adapters/<name>.yaml")
    t.add_argument("--task", action="append", help="task(s) the adapter serves (default: its name)")
    add_training_arguments(t)
    g = sub.add_parser("generate", help="answer held-out chats with an adapter (and the base model)")
    g.add_argument("--model", type=Path, required=True)
    g.add_argument("--adapter", type=Path, required=True)
    g.add_argument("--data", type=Path, required=True, help="a JSONL of chats")
    g.add_argument("--out", type=Path, required=True, help="the answers, as JSON")
    g.add_argument("--base", action="store_true", help="also the base model's answers")
    g.add_argument("--threads", type=int)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on a hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.command == "train":
        run_train(args)
    else:
        run_generate(args)


if __name__ == "__main__":
    main()
