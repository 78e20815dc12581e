"""Turns: a stored response with its input, read back per client key; entries kept as items alone still continue
a conversation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from gateway.store import SqliteStore
from gateway.store.turns import NAMESPACE, Turn, Turns

INPUT = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]
OUTPUT = [{"type": "message", "id": "msg_1", "role": "assistant",
           "content": [{"type": "output_text", "text": "hello", "annotations": []}]}]
RESPONSE = {"id": "resp_1", "object": "response", "status": "completed", "output": OUTPUT}


def test_a_response_is_kept_with_its_input_for_its_key_until_deleted(tmp_path: Path) -> None:
    async def run() -> None:
        store = SqliteStore(tmp_path / "state.db")
        await store.start()
        turns = Turns(store, ttl_s=60)
        turns.save(Turn("alice", INPUT), RESPONSE)
        await turns.drain()
        stored = await turns.get("alice", "resp_1")
        assert stored is not None and (stored.input, stored.response) == (INPUT, RESPONSE)
        assert await turns.load("alice", "resp_1") == [*INPUT, *OUTPUT]
        assert await turns.get("bob", "resp_1") is None  # another key's
        assert not await turns.delete("bob", "resp_1")
        assert await turns.delete("alice", "resp_1")
        assert await turns.load("alice", "resp_1") is None
        await store.close()

    asyncio.run(run())


def test_an_entry_kept_as_items_alone_continues_but_has_no_response(tmp_path: Path) -> None:
    async def run() -> None:
        store = SqliteStore(tmp_path / "state.db")
        await store.start()
        await store.put(NAMESPACE, "alice:resp_0", orjson.dumps([*INPUT, *OUTPUT]), 60)
        turns = Turns(store, ttl_s=60)
        assert await turns.load("alice", "resp_0") == [*INPUT, *OUTPUT]
        stored = await turns.get("alice", "resp_0")
        assert stored is not None and stored.response is None
        await store.close()

    asyncio.run(run())
