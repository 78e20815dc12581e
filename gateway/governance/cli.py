"""`nanoroute keys create|list|show|update|revoke` and `nanoroute spend`: a running gateway's admin API
(`gateway/api/keys.py`) from the command line.

The gateway is `--url` (NANOROUTE_URL; default http://127.0.0.1:8080); the admin key is read from
`--admin-key-file`, else NANOROUTE_ADMIN_KEY, never from an argument (which `ps` would show). Answers are
printed as JSON on stdout; `spend` prints a table unless `--json`. Exit codes: 0 done; 1 the gateway refused
(its message on stderr); 2 the gateway could not be reached, or no admin key was given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

COMMANDS = ("keys", "spend")
DEFAULT_URL = "http://127.0.0.1:8080"
LIMIT_FLAGS = ("rpm", "tpm", "max_in_flight")
CLEARABLE = ("team", "models", "policies", "limits", *LIMIT_FLAGS, "budget", "expires_at", "metadata")
NUMBERS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd")
TIMEOUT_S = 30.0


class Failed(Exception):
    """The command cannot go on: `message` on stderr, exit with `code`."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def add_parser(sub: Any) -> None:
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--url", default=os.environ.get("NANOROUTE_URL", DEFAULT_URL),
                      help=f"the gateway (NANOROUTE_URL; default {DEFAULT_URL})")
    conn.add_argument("--admin-key-file", type=Path, help="a file holding the admin key (default: NANOROUTE_ADMIN_KEY)")

    keys = sub.add_parser("keys", help="client keys on a running gateway (its admin API)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", parents=[conn], help="make a key; its secret is printed this once")
    create.add_argument("--name", required=True)
    _settings_flags(create)
    listed = actions.add_parser("list", parents=[conn], help="every key: declared (env, config) and made here")
    listed.add_argument("--revoked", action="store_true", help="also the revoked keys")
    show = actions.add_parser("show", parents=[conn], help="one key, with its usage now")
    show.add_argument("id")
    update = actions.add_parser("update", parents=[conn], help="change a key: only the flags given")
    update.add_argument("id")
    update.add_argument("--name")
    _settings_flags(update)
    update.add_argument("--clear", action="append", default=[], metavar="FIELD",
                        choices=[*CLEARABLE, *(f.replace("_", "-") for f in CLEARABLE if "_" in f)],
                        help=f"unset a field (repeatable): {', '.join(CLEARABLE)}")
    revoke = actions.add_parser("revoke", parents=[conn], help="revoke a key, on every replica within a second")
    revoke.add_argument("id")

    spend = sub.add_parser("spend", parents=[conn], help="the spend ledger, summed (a running gateway's admin API)")
    spend.add_argument("--group-by", default="key,team,model,day",
                       help="comma-separated, among key, team, model, day (default: all)")
    spend.add_argument("--since", help="first day, YYYY-MM-DD (UTC; default: 30 days before --until)")
    spend.add_argument("--until", help="last day, YYYY-MM-DD (UTC; default: today)")
    spend.add_argument("--json", action="store_true", help="print the gateway's JSON rather than a table")


def _settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--team")
    p.add_argument("--models", type=_names, help="comma-separated catalog models it may use ('' for none)")
    p.add_argument("--policies", type=_names, help="comma-separated policies it may match ('' for none)")
    p.add_argument("--rpm", type=int, help="requests per minute")
    p.add_argument("--tpm", type=int, help="tokens per minute")
    p.add_argument("--max-in-flight", type=int, help="requests at once")
    p.add_argument("--budget-usd", type=float, help="dollars per --budget-period")
    p.add_argument("--budget-period", choices=("day", "week", "month", "total"), help="default month")
    p.add_argument("--expires-at", help="ISO 8601 with a time zone: 2026-12-31T00:00:00Z")
    p.add_argument("--metadata", action="append", type=_pair, metavar="K=V",
                   help="repeatable; on update, replaces the key's metadata")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected K=V, not '{text}'")
    return key, value


def run(args: argparse.Namespace) -> int:
    try:
        with _client(args) as http:
            if args.command == "spend":
                return _spend(http, args)
            return _keys(http, args)
    except Failed as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.code


def _keys(http: httpx.Client, args: argparse.Namespace) -> int:
    action = args.action
    if action == "create":
        created = _call(http, "POST", "/admin/keys", json=_create_body(args))
        _print(created)
        print("The key above is shown only this once: store it now (the gateway keeps only its digest).",
              file=sys.stderr)
    elif action == "list":
        _print(_call(http, "GET", "/admin/keys", params={"revoked": "true"} if args.revoked else None))
    elif action == "show":
        _print(_call(http, "GET", f"/admin/keys/{args.id}"))
    elif action == "update":
        _print(_call(http, "PATCH", f"/admin/keys/{args.id}", json=_update_body(http, args)))
    else:
        _print(_call(http, "DELETE", f"/admin/keys/{args.id}"))
    return 0


def _create_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"name": args.name}
    for field in ("team", "models", "policies", "expires_at"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    limits = {f: getattr(args, f) for f in LIMIT_FLAGS if getattr(args, f) is not None}
    if limits:
        body["limits"] = limits
    if args.budget_usd is not None:
        body["budget"] = {"usd": args.budget_usd, "period": args.budget_period or "month"}
    elif args.budget_period is not None:
        raise Failed("--budget-period needs --budget-usd", 2)
    if args.metadata is not None:
        body["metadata"] = dict(args.metadata)
    return body


def _update_body(http: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    """The fields the flags change. The limits and the budget are objects the gateway replaces whole, so a
    flag for one of their fields is merged into the key's current values (read first)."""
    clear = {c.replace("-", "_") for c in args.clear}
    body: dict[str, Any] = {}
    for field in ("name", "team", "models", "policies", "expires_at"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    if args.metadata is not None:
        body["metadata"] = dict(args.metadata)
    limits = {f: getattr(args, f) for f in LIMIT_FLAGS if getattr(args, f) is not None}
    budget_given = args.budget_usd is not None or args.budget_period is not None
    given = {*body, *limits, *(("limits",) if limits else ()), *(("budget",) if budget_given else ())}
    if clear & given:
        raise Failed(f"--clear {min(clear & given)} and a new value for it: give one or the other", 2)
    limits |= {f: None for f in LIMIT_FLAGS if f in clear}
    current = _call(http, "GET", f"/admin/keys/{args.id}") if limits or budget_given else {}
    if limits:
        body["limits"] = {**(current.get("limits") or {}), **limits}
    if budget_given:
        old = current.get("budget") or {}
        usd = args.budget_usd if args.budget_usd is not None else old.get("usd")
        if usd is None:
            raise Failed("the key has no budget yet: --budget-period needs --budget-usd", 2)
        body["budget"] = {"usd": usd, "period": args.budget_period or old.get("period", "month")}
    body |= {field: None for field in clear if field not in LIMIT_FLAGS}
    if not body:
        raise Failed("nothing to change: give a flag (--name, --team, --rpm, ..., --clear FIELD)", 2)
    return body


def _spend(http: httpx.Client, args: argparse.Namespace) -> int:
    params = {"group_by": args.group_by}
    params |= {name: value for name in ("since", "until") if (value := getattr(args, name)) is not None}
    answer = _call(http, "GET", "/admin/spend", params=params)
    if args.json:
        _print(answer)
    else:
        sys.stdout.write(spend_table(answer))
    return 0


def spend_table(answer: dict[str, Any]) -> str:
    """`GET /admin/spend`'s answer as aligned text: a row per group, dearest first, then the total."""
    dims = list(answer["group_by"])
    if "key" in dims:
        dims.insert(dims.index("key") + 1, "name")
    header = [*dims, *NUMBERS]
    rows = [[_cell(row.get(col)) for col in header] for row in answer["data"]]
    total = answer["total"]
    rows.append(["TOTAL", *([""] * (len(dims) - 1)), *(_cell(total[n]) for n in NUMBERS)] if dims
                else [_cell(total[n]) for n in NUMBERS])
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    numeric = [False] * len(dims) + [True] * len(NUMBERS)

    def line(cells: Sequence[str]) -> str:
        out = (c.rjust(w) if right else c.ljust(w) for c, w, right in zip(cells, widths, numeric, strict=True))
        return "  ".join(out).rstrip() + "\n"

    title = f"spend {answer['since']} .. {answer['until']} (UTC)\n"
    return title + line(header) + "".join(line(r) for r in rows)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


# -- the HTTP side -------------------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> httpx.Client:
    if args.admin_key_file is not None:
        try:
            key = args.admin_key_file.read_text().strip()
        except OSError as exc:
            raise Failed(f"cannot read --admin-key-file {args.admin_key_file}: {exc.strerror}", 2) from None
    else:
        key = os.environ.get("NANOROUTE_ADMIN_KEY", "").strip()
    if not key:
        raise Failed("no admin key: set NANOROUTE_ADMIN_KEY or give --admin-key-file", 2)
    base = args.url.rstrip("/").removesuffix("/v1")
    return httpx.Client(base_url=base, headers={"authorization": f"Bearer {key}"}, timeout=TIMEOUT_S)


def _call(http: httpx.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """The gateway's JSON answer; Failed with its error message (1), or when it cannot be reached (2)."""
    try:
        resp = http.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise Failed(f"cannot reach the gateway at {http.base_url}: {str(exc) or type(exc).__name__} "
                     "(is it running? --url or NANOROUTE_URL)", 2) from None
    try:
        data = resp.json()
    except ValueError:
        data = None
    if resp.is_error:
        error = data.get("error") if isinstance(data, dict) else None
        message = error.get("message") if isinstance(error, dict) else resp.text[:500] or resp.reason_phrase
        raise Failed(f"{resp.status_code}: {message}", 1)
    if not isinstance(data, dict):
        raise Failed(f"the gateway answered {method} {path} with something that is not a JSON object", 1)
    return data


def _print(data: dict[str, Any]) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")
