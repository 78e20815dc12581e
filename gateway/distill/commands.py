"""`nanoroute distill export|train|eval`: parse the arguments, call in, print what came of it.

Defaults follow the gateway's settings: captures from NANOROUTE_CAPTURE_DIR (DATA_DIR/captures),
datasets into DATA_DIR/datasets/<task>, adapters' weights into DATA_DIR/adapters/<name>, manifests
into ./adapters. Training and in-process evaluation run `python -m gateway.distill.trainer` in the
Python that has torch, transformers and peft (--python; default the local stack's vLLM venv when there
is one, else this Python).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gateway
from gateway.distill import dataset, evaluate, manifest
from gateway.distill import trainer as training
from gateway.distill.remote import Server, ask_all
from gateway.errors import DistillError
from gateway.settings import Settings


def add_parser(sub: Any) -> None:
    distill = sub.add_parser("distill", help="turn captured answers into a LoRA adapter: export, train, eval")
    steps = distill.add_subparsers(dest="step", required=True)

    ex = steps.add_parser("export", help="captures -> train.jsonl, eval.jsonl, stats.json")
    ex.add_argument("--task", required=True)
    ex.add_argument("--capture-dir", type=Path, help="default: NANOROUTE_CAPTURE_DIR (DATA_DIR/captures)")
    ex.add_argument("--out", type=Path, help="default: DATA_DIR/datasets/<task>")
    ex.add_argument("--eval-fraction", type=float, default=0.2, help="share of prompts held out (default 0.2)")
    ex.add_argument("--seed", type=int, default=0, help="changes which prompts are held out")
    ex.add_argument("--model", action="append", default=[], help="only answers from this model (repeatable)")
    ex.add_argument("--min-score", type=float, help="drop answers whose feedback score is below this")
    ex.add_argument("--drop-label", action="append", default=[], help="drop answers with this feedback label")

    tr = steps.add_parser("train", help="dataset -> LoRA adapter + adapters/<name>.yaml")
    tr.add_argument("--task", required=True, help="the task the adapter serves")
    tr.add_argument("--base", type=Path, required=True, help="the base model's folder (transformers format)")
    tr.add_argument("--base-name", help="the base model's served name in vLLM (default: the folder's name)")
    tr.add_argument("--data", type=Path, help="the exported dataset (default: DATA_DIR/datasets/<task>)")
    tr.add_argument("--name", help="the adapter's name (default: <task>-lora)")
    tr.add_argument("--adapters-dir", type=Path, default=Path("adapters"), help="where manifests go (./adapters)")
    tr.add_argument("--out", type=Path, help="where the weights go (default: DATA_DIR/adapters/<name>)")
    training.add_training_arguments(tr)
    tr.add_argument("--python", help="the Python with torch, transformers and peft")

    ev = steps.add_parser("eval", help="score the adapter on the held-out split; record it in the manifest")
    ev.add_argument("--adapter", required=True, help="the adapter's name (adapters/<name>.yaml)")
    ev.add_argument("--adapters-dir", type=Path, default=Path("adapters"))
    ev.add_argument("--data", type=Path, help="folder with eval.jsonl (default: the one it was trained from)")
    ev.add_argument("--evaluator", choices=("auto", *evaluate.EVALUATORS), default="auto",
                    help="auto: json_fields for JSON objects, exact for short labels, else judge")
    ev.add_argument("--fields", help="json_fields: the fields compared, comma-separated (default: all expected)")
    ev.add_argument("--url", help="an OpenAI-compatible server serving the adapter (vLLM or the gateway); "
                    "without it, transformers in-process")
    ev.add_argument("--model", help="the model name to ask at --url (default: the adapter's name)")
    ev.add_argument("--base-model", help="the base model's name at --url (default: the manifest's base_model)")
    ev.add_argument("--no-base", action="store_true", help="do not score the base model")
    ev.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="for --url (OPENAI_API_KEY)")
    ev.add_argument("--header", action="append", default=[], help="an extra header for --url, NAME:VALUE")
    ev.add_argument("--max-tokens", type=int, help="per answer (default: from the expected answer's length)")
    ev.add_argument("--concurrency", type=int, default=4)
    ev.add_argument("--judge-url", default="http://127.0.0.1:8080/v1", help="judge: where to ask (the gateway)")
    ev.add_argument("--judge-model", help="judge: the model that grades answers")
    ev.add_argument("--judge-api-key", default=os.environ.get("NANOROUTE_API_KEY"),
                    help="judge: the key (NANOROUTE_API_KEY)")
    ev.add_argument("--python", help="in-process: the Python with torch, transformers and peft")


def run(args: argparse.Namespace) -> int:
    try:
        if args.step == "export":
            return _export(args)
        if args.step == "train":
            return _train(args)
        return _eval(args)
    except DistillError as exc:
        print(f"nanoroute distill {args.step}: {exc.message}", file=sys.stderr)
        return 1


def _export(args: argparse.Namespace) -> int:
    settings = Settings()
    out = args.out or settings.data_dir / "datasets" / args.task
    stats = dataset.export(dataset.Export(
        task=args.task, capture_dir=args.capture_dir or settings.capture_path, out=out,
        eval_fraction=args.eval_fraction, seed=args.seed, models=frozenset(args.model),
        min_score=args.min_score, drop_labels=frozenset(args.drop_label)))
    dropped = ", ".join(f"{n} by {why}" for why, n in stats["dropped"].items()) or "none"
    print(f"{stats['records']} captures -> {stats['examples']} examples ({stats['duplicates']} duplicates, "
          f"{stats['no_answer'] + stats['unreadable']} without an answer, dropped: {dropped})")
    print(f"train: {stats['train']}, eval: {stats['eval']} -> {out}/{{train,eval}}.jsonl, {out}/stats.json")
    return 0


def _train(args: argparse.Namespace) -> int:
    settings = Settings()
    name = args.name or f"{args.task}-lora"
    data = args.data or settings.data_dir / "datasets" / args.task
    if not (data / "train.jsonl").is_file():
        raise DistillError(f"no {data / 'train.jsonl'}: run `nanoroute distill export --task {args.task}` first")
    if not (args.base / "config.json").is_file():
        raise DistillError(f"{args.base} is not a model folder (no config.json)")
    out = args.out or settings.data_dir / "adapters" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    target = manifest.path_for(args.adapters_dir, name)
    argv = ["train", "--model", str(args.base), "--data", str(data), "--out", str(out), "--manifest", str(target),
            "--task", args.task, *training.training_argv(args)]
    argv += ["--base-name", args.base_name] if args.base_name else []
    trainer(argv, args.python)
    print(f"manifest: {target}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    path = manifest.path_for(args.adapters_dir, args.adapter)
    try:
        found = manifest.read(path)
    except (OSError, ValueError) as exc:
        raise DistillError(f"cannot read the adapter's manifest: {exc}") from None
    data = args.data or _trained_on(found, path)
    examples = [json.loads(line) for line in (data / "eval.jsonl").read_text("utf-8").splitlines() if line.strip()] \
        if (data / "eval.jsonl").is_file() else []
    if not examples:
        raise DistillError(f"no held-out examples in {data / 'eval.jsonl'}")
    expected = [evaluate.answer_text(ex["messages"][-1]) for ex in examples]
    evaluator = evaluate.choose(expected) if args.evaluator == "auto" else args.evaluator
    if evaluator == "judge" and not args.judge_model:
        raise DistillError("the judge evaluator needs --judge-model (these answers are free text)")
    got = _answers(args, found, path, data, examples)
    fields = [f.strip() for f in args.fields.split(",")] if args.fields else None
    section: dict[str, Any] = {"data": manifest.relative(data / "eval.jsonl", path), "examples": len(examples),
                               "metric": evaluate.METRIC[evaluator]}
    for side, answers in got.items():
        section[side] = round(score(evaluator, examples, expected, answers, fields, _judge(args)), 3)
        failed = sum(a is None for a in answers)
        if failed:
            section[f"{side}_failed"] = failed
    section |= {"via": args.url or "transformers", "evaluated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if evaluator == "judge":
        section["judge"] = args.judge_model
    manifest.record_eval(path, section)
    base = f" (base model: {section['base']:.0%})" if "base" in section else ""
    print(f"{args.adapter}: {section['adapter']:.0%} {section['metric']} on {len(examples)} held-out examples{base}"
          f" -> {path}")
    return 0


def score(evaluator: str, examples: Sequence[dict[str, Any]], expected: Sequence[str],
          answers: Sequence[str | None], fields: Sequence[str] | None, judge: Server | None) -> float:
    """The mean score of `answers` against `expected`; an answer that failed (None) scores 0."""
    if evaluator == "exact":
        per = [evaluate.exact(e, a) if a is not None else 0.0 for e, a in zip(expected, answers, strict=True)]
    elif evaluator == "json_fields":
        per = [evaluate.json_fields(e, a, fields) if a is not None else 0.0
               for e, a in zip(expected, answers, strict=True)]
    else:
        assert judge is not None
        asked = [i for i, a in enumerate(answers) if a is not None]
        nonces = [evaluate.judge_nonce() for _ in asked]
        verdicts = ask_all(judge, [{"messages": evaluate.judge_messages(examples[i]["messages"][:-1], expected[i],
                                                                        answers[i] or "", nonce),
                                    "max_tokens": evaluate.JUDGE_MAX_TOKENS}
                                   for i, nonce in zip(asked, nonces, strict=True)])
        per = [0.0] * len(answers)
        for i, verdict, nonce in zip(asked, verdicts, nonces, strict=True):
            per[i] = evaluate.judge_verdict(verdict or "", nonce)
    return sum(per) / len(per)


def _judge(args: argparse.Namespace) -> Server | None:
    if not args.judge_model:
        return None
    return Server(args.judge_url, args.judge_model, args.judge_api_key, concurrency=args.concurrency)


def _answers(args: argparse.Namespace, found: dict[str, Any], path: Path, data: Path,
             examples: Sequence[dict[str, Any]]) -> dict[str, list[str | None]]:
    """The adapter's answers (and the base model's), from --url or in-process."""
    if args.url:
        headers = dict(_header(h) for h in args.header)
        requests = []
        for ex in examples:
            req: dict[str, Any] = {"messages": ex["messages"][:-1]}
            if ex.get("tools"):
                req["tools"] = ex["tools"]
            req["max_tokens"] = args.max_tokens or 16 + len(evaluate.answer_text(ex["messages"][-1])) // 2
            requests.append(req)
        models = {"adapter": args.model or found["name"]}
        if not args.no_base:
            models["base"] = args.base_model or found.get("base_model")
        return {side: ask_all(Server(args.url, m, args.api_key, headers, args.concurrency), requests)
                for side, m in models.items() if m}
    base_path = (found.get("training") or {}).get("base_path")
    if not base_path or not found.get("path"):
        raise DistillError(f"{path} has no training.base_path or path: evaluate it through a server with --url")
    with tempfile.TemporaryDirectory(prefix="nanoroute-eval-") as tmp:
        out = Path(tmp) / "answers.json"
        argv = ["generate", "--model", str(manifest.resolve(base_path, path)),
                "--adapter", str(manifest.resolve(found["path"], path)), "--data", str(data / "eval.jsonl"),
                "--out", str(out)] + ([] if args.no_base else ["--base"])
        trainer(argv, args.python)
        got = json.loads(out.read_text("utf-8"))
    return {side: list(answers) for side, answers in got.items() if answers}


def _trained_on(found: dict[str, Any], path: Path) -> Path:
    data = (found.get("training") or {}).get("data")
    if not isinstance(data, str):
        raise DistillError(f"{path} does not say what it was trained on (training.data): give --data")
    return manifest.resolve(data, path).parent


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise DistillError(f"--header takes NAME:VALUE, not {text!r}")
    return name.strip(), value.strip()


def default_python() -> str:
    """The local stack's vLLM venv Python when there is one (it has torch, transformers, peft), else this one."""
    repo = Path(gateway.__file__).resolve().parents[1]
    stack = Path(os.environ.get("NANOROUTE_STACK_DIR") or repo / ".stack")
    candidate = stack / "venv-vllm" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def trainer(argv: Sequence[str], python: str | None) -> None:
    """Run `python -m gateway.distill.trainer ARGV` in the ML Python, its output shown as it comes."""
    py = python or default_python()
    with _importable_gateway() as path:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (path, os.environ.get("PYTHONPATH")) if p)}
        try:
            done = subprocess.run([py, "-m", "gateway.distill.trainer", *argv], env=env, check=False)
        except OSError as exc:
            raise DistillError(f"cannot run {py}: {exc}") from None
    if done.returncode != 0:
        raise DistillError(f"the trainer failed (exit {done.returncode}) in {py}; it needs torch, transformers and "
                           "peft: give --python, or build the local stack's venv (scripts/stack/build.sh)")


@contextmanager
def _importable_gateway() -> Iterator[str]:
    """A folder holding only a link to this `gateway` package: on the other Python's path it makes the
    trainer importable without bringing this environment's other packages along."""
    with tempfile.TemporaryDirectory(prefix="nanoroute-trainer-") as tmp:
        (Path(tmp) / "gateway").symlink_to(Path(gateway.__file__).resolve().parent, target_is_directory=True)
        yield tmp
