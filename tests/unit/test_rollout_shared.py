"""gateway/rollout.py with a store: several `Rollouts` (processes) on one SQLite file, each with a store of its
own on it, as two processes of one host have. The changes race through compare and set and none is lost; a
rollout stored for another model is left alone unless a config has just set the model; without the store,
each process goes on alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from gateway.config.loader import load_text
from gateway.config.table import RoutingTable
from gateway.rollout import NAMESPACE, Rollouts
from gateway.routing.signals import Signals
from gateway.store import SqliteStore
from tests.unit.test_rollout import CONFIG, table

SYNC_S = 0.02


def other_model() -> RoutingTable:
    text = (CONFIG % "").replace("model: small,", "model: small2,")
    return load_text(text.replace("models:\n", "models:\n  small2: {backend: local}\n"))


@contextlib.asynccontextmanager
async def process(path: Path, config: RoutingTable | None = None) -> AsyncIterator[tuple[Rollouts, SqliteStore]]:
    """One gateway process's rollouts, on a store of its own on the file at `path`."""
    store = SqliteStore(path)
    await store.start()
    rollouts = Rollouts(Signals(exact_tokens=False), store=store, sync_s=SYNC_S)
    rollouts.configure(config or table(), {})
    await rollouts.start()
    try:
        yield rollouts, store
    finally:
        await rollouts.stop()
        await store.close()


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def view(r: Rollouts) -> dict[str, object]:
    return r.describe()[0]


async def stored(store: SqliteStore) -> dict[str, object]:
    value = await store.get(NAMESPACE, "triage")
    assert value is not None
    return orjson.loads(value)  # type: ignore[no-any-return]


def test_scores_racing_from_two_processes_are_all_counted_once(tmp_path: Path) -> None:
    async def run() -> None:
        async with process(tmp_path / "state.db") as (a, store), process(tmp_path / "state.db") as (b, _):
            for _ in range(40):
                a.record(a._states["triage"], 0.5, "triage")
                b.record(b._states["triage"], 0.5, "triage")
                await asyncio.sleep(0)  # let either write while the other queues
            await eventually(lambda: view(a)["scored_total"] == view(b)["scored_total"] == 80)
            state = await stored(store)
            assert (state["total"], state["stage"], state["window"]) == (80, "shadow", [0.5] * 8)

    asyncio.run(run())


def test_the_same_move_made_in_two_processes_at_once_is_made_once(tmp_path: Path) -> None:
    async def run() -> None:
        async with process(tmp_path / "state.db") as (a, store), process(tmp_path / "state.db") as (b, _):
            for _ in range(2):  # 2 + 2 scores of 1: min_samples (4) between them, canary once
                a.record(a._states["triage"], 1.0, "triage")
                b.record(b._states["triage"], 1.0, "triage")
            await eventually(lambda: view(a)["scored_total"] == view(b)["scored_total"] == 4)
            await eventually(lambda: view(a)["history"] == view(b)["history"])
            assert [h["to"] for h in (await stored(store))["history"]] == ["canary[0]"]
            assert view(a)["stage"] == view(b)["stage"] == "canary"

    asyncio.run(run())


def test_another_models_rollout_is_left_alone_unless_a_config_has_just_set_the_model(tmp_path: Path) -> None:
    async def run() -> None:
        path = tmp_path / "state.db"
        async with process(path) as (old, store), process(path) as (old2, _):
            assert (await stored(store))["model"] == "small" and view(old)["shared"] and view(old2)["shared"]
            # A process started on a config that rolls out another model: its model starts afresh, over it.
            async with process(path, other_model()) as (new, _):
                assert (await stored(store))["model"] == "small2" and view(new)["shared"]
                # The old ones (the first wrote the state, the second read it) go on alone ...
                await eventually(lambda: view(old)["shared"] is False and view(old2)["shared"] is False)
                for _ in range(4):
                    old.record(old._states["triage"], 1.0, "triage")
                assert view(old)["stage"] == "canary"
                await asyncio.sleep(SYNC_S * 5)
                assert (await stored(store))["model"] == "small2"  # ... and writes nothing over it
                assert view(new)["stage"] == "shadow"
                old.configure(other_model(), {})  # its config catches up: it follows the stored state
                await eventually(lambda: view(old)["shared"] is True)
                assert (view(old)["model"], view(old)["stage"]) == ("small2", "shadow")

    asyncio.run(run())


def test_a_stored_value_that_is_not_a_rollouts_state_is_replaced(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        path = tmp_path / "state.db"
        seed = SqliteStore(path)
        await seed.start()
        await seed.put(NAMESPACE, "triage", b'{"model": "small", "stage": "live"}', None)
        await seed.close()
        async with process(path) as (r, store):
            assert ((await stored(store))["stage"], view(r)["shared"]) == ("shadow", True)

    with caplog.at_level(logging.ERROR, "nanoroute"):
        asyncio.run(run())
    assert "rollout triage: the stored state is replaced: not a rollout's state: unknown stage 'live'" in caplog.text


def test_without_its_store_a_process_moves_its_rollout_alone(tmp_path: Path) -> None:
    async def run() -> None:
        store = SqliteStore(tmp_path / "state.db")  # never started: every call fails with StorageUnavailable
        r = Rollouts(Signals(exact_tokens=False), store=store, sync_s=SYNC_S)
        r.configure(table(), {})
        await r.start()
        try:
            assert view(r)["shared"] is False
            for _ in range(4):
                r.record(r._states["triage"], 1.0, "triage")
            assert view(r)["stage"] == "canary"
            pinned = r.act("triage", "pin", "primary")
            assert (pinned["stage"], pinned["shared"]) == ("primary", False)
            await asyncio.sleep(SYNC_S * 5)  # its tries to write the pin fail, and change nothing here
            assert [h["to"] for h in view(r)["history"]] == ["canary[0]", "primary"]  # type: ignore[attr-defined]
        finally:
            await r.stop()

    asyncio.run(run())
