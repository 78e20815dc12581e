"""`nanoroute router train|eval` (gateway/cli.py wires them; `router dataset` is gateway/distill/routing.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from gateway.learned import data
from gateway.learned.model import HELDOUT, ArtifactError, load


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="the routing dataset (JSONL, docs/router.md)")
    p.add_argument("--out", type=Path, required=True, help="the artifact folder to write")
    p.add_argument("--seed", type=int, default=0, help="seeds the held-out split and the folds (default 0)")
    p.add_argument("--heldout", type=float, default=0.2, help="the share of prompts held out (default 0.2)")
    p.add_argument("--group", help="hold out (and cross-validate) by this field of the rows, e.g. template, "
                   "instead of by prompt: every row of a group on one side")
    p.add_argument("--model", action="append", default=[], dest="models",
                   help="train for this model (repeatable; default: every model the data scores)")


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--router", type=Path, required=True, help="the artifact folder")
    p.add_argument("--data", type=Path, help="a routing dataset (default: the rows the router held out)")
    p.add_argument("--all", action="store_true",
                   help="evaluate on every row of --data (default: the rows its split holds out)")
    p.add_argument("--cheap", help="the cheap model (default: the one with the lowest mean score)")
    p.add_argument("--strong", help="the strong model (default: the one with the highest mean score)")
    p.add_argument("--plot", type=Path, help="draw the quality-against-cost curve to this PNG file")


def run_train(args: argparse.Namespace) -> int:
    from gateway.learned.train import Options, train

    if not 0.0 <= args.heldout < 1.0:
        return _fail("--heldout must be at least 0 and below 1")
    try:
        manifest = train(Options(args.data, args.out, args.seed, args.heldout, tuple(args.models), args.group))
    except (data.DataError, ArtifactError) as exc:
        return _fail(str(exc))
    except ImportError as exc:
        return _fail(f"router train needs scikit-learn ({exc.name} is missing): pip install 'nanoroute[router]'")
    _print({"out": str(args.out), **{k: manifest[k] for k in ("version", "models", "data", "training", "metrics")}})
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from gateway.learned.evaluate import evaluate

    try:
        router = load(args.router)
        split = router.manifest["data"]
        seed, fraction = int(router.manifest["seed"]), float(split["heldout_fraction"])
        group = None if split.get("split_by", "prompt") == "prompt" else str(split["split_by"])
        if args.data is None:
            rows, source = data.read(args.router / HELDOUT), "heldout"
        else:
            rows = data.read(args.data)
            source = str(args.data)
            if not args.all:
                rows = [r for r in rows if data.held_out(r, seed, fraction, group)]
                source += " (held-out split)"
                if not rows:
                    return _fail(f"{args.data}: no row falls in the router's held-out split; --all evaluates "
                                 "on every row")
        _print(evaluate(router, rows, source, cheap=args.cheap, strong=args.strong, plot=args.plot))
    except (data.DataError, ArtifactError) as exc:
        return _fail(str(exc))
    except ImportError as exc:
        return _fail(f"--plot needs matplotlib ({exc.name} is missing): pip install 'nanoroute[router]'")
    return 0


def _print(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def _fail(message: str) -> int:
    print(f"nanoroute router: {message}", file=sys.stderr)
    return 1
