"""`nanoroute adapters list | load | unload | sync`: adapters on running vLLM servers, by hand.

The servers are the replicas of the config's `vllm` backends, or the `--url`s given. Each command goes
through the same `VllmBackend` methods the gateway uses, so what works here works in the gateway.
Output is one line per replica and adapter; the exit status is 1 when any load or unload failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gateway.backends.vllm import VllmBackend
from gateway.config import manifest as manifest_mod
from gateway.config import schema
from gateway.config.loader import adapters_dir_of
from gateway.config.table import RoutingTable
from gateway.errors import AdapterLoadFailed


@dataclass(frozen=True, slots=True)
class Target:
    """Where the command acts: vLLM backends by name, the manifests, and what the config routes to."""

    backends: dict[str, schema.VllmBackend]
    adapters_dir: Path
    routed: dict[str, set[str]]
    """Backend name -> the adapters the config routes to on it."""


def target(table: RoutingTable | None, urls: Sequence[str], adapters_dir: Path | None) -> Target:
    if urls:
        backends = {"url": schema.VllmBackend(type="vllm", urls=list(urls))}
    else:
        assert table is not None
        backends = {n: b for n, b in table.config.backends.items() if isinstance(b, schema.VllmBackend)}
    routed: dict[str, set[str]] = {name: set() for name in backends}
    if table is not None and not urls:
        for m in table.models.values():
            if m.adapter_path is not None and m.backend in routed:
                routed[m.backend].add(m.upstream_name)
    if adapters_dir is None:
        adapters_dir = adapters_dir_of(table.config, table.source) if table is not None else Path("adapters")
    return Target(backends, adapters_dir, routed)


def run(command: str, t: Target, out: TextIO, name: str | None = None, prune: bool = False) -> int:
    manifests = manifest_mod.read_all(t.adapters_dir)
    if command == "list":
        return asyncio.run(_list(t, manifests, out))
    if command == "load" and name not in manifests:
        print(f"no manifest for adapter '{name}' in {t.adapters_dir}", file=out)
        return 1
    return asyncio.run(_change(command, t, manifests, out, name, prune))


async def _open(t: Target) -> dict[str, VllmBackend]:
    backends = {name: VllmBackend(name, spec) for name, spec in t.backends.items()}
    for b in backends.values():
        await b.start(poll=False)
    return backends


async def _close(backends: dict[str, VllmBackend]) -> None:
    for b in backends.values():
        await b.close()


async def _list(t: Target, manifests: dict[str, manifest_mod.Manifest], out: TextIO) -> int:
    print(f"manifests in {t.adapters_dir}:", file=out)
    for m in manifests.values():
        score = "-" if m.eval.adapter is None else f"{m.eval.adapter:.3f}"
        print(f"  {m.name}: base {m.base_model}, tasks {', '.join(m.tasks) or '-'}, rank {m.rank or '-'}, "
              f"eval {m.eval.metric or '-'} {score}, at {manifest_mod.location(m, t.adapters_dir)}", file=out)
    backends = await _open(t)
    try:
        for name, b in backends.items():
            for r in b.replicas:
                await b.refresh(r.index)
                state = "unreachable" if not r.reachable else f"adapters: {', '.join(sorted(r.loaded)) or '-'}"
                routed = sorted(t.routed.get(name, ()))
                missing = [a for a in routed if r.reachable and a not in r.loaded]
                note = f"; routed but not loaded: {', '.join(missing)}" if missing else ""
                print(f"{name}[{r.index}] {r.url}: {state}{note}", file=out)
    finally:
        await _close(backends)
    return 0


async def _change(command: str, t: Target, manifests: dict[str, manifest_mod.Manifest], out: TextIO,
                  name: str | None, prune: bool) -> int:
    failed = 0
    backends = await _open(t)
    try:
        for bname, b in backends.items():
            for r in b.replicas:
                await b.refresh(r.index)
                if not r.reachable:
                    print(f"{bname}[{r.index}] {r.url}: unreachable", file=out)
                    failed += 1
                    continue
                if command == "sync":
                    load = sorted(t.routed.get(bname, set()) - r.loaded)
                    drop = sorted(r.loaded - t.routed.get(bname, set())) if prune else []
                elif command == "load":
                    load, drop = [n for n in [name] if n and n not in r.loaded], []
                else:
                    load, drop = [], [n for n in [name] if n]
                for adapter in load:
                    failed += await _load(b, r.index, adapter, manifests, t.adapters_dir, out)
                for adapter in drop:
                    gone = await b.unload_adapter(r.index, adapter)
                    print(f"{bname}[{r.index}] {r.url}: {adapter} {'unloaded' if gone else 'was not loaded'}",
                          file=out)
                if not load and not drop:
                    print(f"{bname}[{r.index}] {r.url}: nothing to do "
                          f"(adapters: {', '.join(sorted(r.loaded)) or '-'})", file=out)
    finally:
        await _close(backends)
    return 1 if failed else 0


async def _load(b: VllmBackend, replica: int, adapter: str, manifests: dict[str, manifest_mod.Manifest],
                adapters_dir: Path, out: TextIO) -> int:
    r = b.replicas[replica]
    m = manifests.get(adapter)
    if m is None:
        print(f"{b.name}[{replica}] {r.url}: {adapter}: no manifest in {adapters_dir}", file=out)
        return 1
    try:
        await b.load_adapter(replica, adapter, manifest_mod.location(m, adapters_dir))
    except AdapterLoadFailed as exc:
        print(f"{b.name}[{replica}] {r.url}: {adapter} FAILED: {exc.message}", file=out)
        return 1
    print(f"{b.name}[{replica}] {r.url}: {adapter} loaded", file=out)
    return 0
