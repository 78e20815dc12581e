"""The `nanoroute` command: parse arguments and call in; no logic of its own."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__
from gateway.distill import commands as distill
from gateway.distill import routing
from gateway.errors import ConfigError
from gateway.governance import cli as governance
from gateway.learned import commands as learned


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nanoroute", description="OpenAI-compatible routing gateway")
    parser.add_argument("--version", action="version", version=f"nanoroute {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="config file (NANOROUTE_CONFIG; default: the embedded default)")
    serve.add_argument("--host", help="address to listen on (NANOROUTE_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (NANOROUTE_PORT; default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (NANOROUTE_WORKERS; default 1)")

    check = sub.add_parser("check", help="validate a config file offline; exit 0 when valid")
    check.add_argument("file")

    adapters = sub.add_parser("adapters", help="LoRA adapters on running vLLM servers (docs/adapters.md)")
    adapters.add_argument("action", choices=["list", "load", "unload", "sync"],
                          help="list manifests and what each replica serves; load/unload NAME on every replica; "
                               "sync: load what the config routes to")
    adapters.add_argument("name", nargs="?", help="the adapter (load, unload)")
    adapters.add_argument("--config", help="config whose vllm backends to use (NANOROUTE_CONFIG; default: embedded)")
    adapters.add_argument("--url", action="append", default=[], help="a vLLM base URL (…/v1) instead of the config's")
    adapters.add_argument("--dir", type=Path, help="the manifests' folder (default: the config's adapters_dir)")
    adapters.add_argument("--prune", action="store_true", help="sync: also unload adapters the config does not route")

    distill.add_parser(sub)  # `nanoroute distill export|train|eval`: gateway/distill/commands.py
    governance.add_parser(sub)  # `nanoroute keys ...`, `nanoroute spend`: gateway/governance/cli.py

    router = sub.add_parser("router", help="the learned per-prompt router: data, train, evaluate (docs/router.md)")
    steps = router.add_subparsers(dest="step", required=True)
    routing.add_dataset_arguments(steps.add_parser(
        "dataset", help="a routing dataset from captures, rollout comparisons and feedback"))
    learned.add_train_arguments(steps.add_parser("train", help="train a router artifact on a routing dataset"))
    learned.add_eval_arguments(steps.add_parser("eval", help="a router's APGR and CPT on held-out prompts"))

    args = parser.parse_args(argv)
    if args.command == "distill":
        return distill.run(args)
    if args.command in governance.COMMANDS:
        return governance.run(args)
    if args.command == "router":
        run = {"dataset": routing.run_dataset, "train": learned.run_train, "eval": learned.run_eval}[args.step]
        return run(args)
    if args.command == "check":
        return _check(args.file)
    if args.command == "adapters":
        return _adapters(parser, args)
    return _serve(args)


def _check(path: str) -> int:
    from gateway.config.loader import load_file

    try:
        table = load_file(path)
    except ConfigError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    for warning in table.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: valid (version {table.version}): {len(table.config.backends)} backends, "
          f"{len(table.models)} models, {len(table.policies)} policies")
    return 0


def _adapters(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from gateway.adapters import manage
    from gateway.config.loader import load_file
    from gateway.config.manifest import ManifestError
    from gateway.settings import Settings

    if args.action in ("load", "unload") and not args.name:
        parser.error(f"adapters {args.action} needs the adapter's name")
    try:
        table = None if args.url else load_file(args.config or Settings().config_path)
        return manage.run(args.action, manage.target(table, args.url, args.dir), sys.stdout, args.name, args.prune)
    except (ConfigError, ManifestError) as exc:
        print(getattr(exc, "message", str(exc)), file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    # CLI flags override the environment; they are passed on through it so that every worker process,
    # which builds its own Settings, sees the same values.
    for flag, env in (("config", "CONFIG"), ("host", "HOST"), ("port", "PORT"), ("workers", "WORKERS")):
        value = getattr(args, flag)
        if value is not None:
            os.environ[f"NANOROUTE_{env}"] = str(value)
    from gateway.server import run

    try:
        run()
    except ConfigError as exc:
        logging.getLogger("nanoroute").error("%s", exc.message)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
