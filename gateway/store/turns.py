"""The Responses API's conversation state: each stored response's items, read back by `previous_response_id`.

A response is kept (when the request says `store`, OpenAI's default) with the input it was given, the
earlier turns' items included: `{"input": [...], "response": {...}}`. The next request that names it as
`previous_response_id` starts from its input items, then its output; `GET /v1/responses/{id}` reads it
back, `DELETE` removes it (`gateway.api.responses`). Entries are scoped to the client key that made them
(another key cannot read them, even with the id) and kept for `NANOROUTE_RESPONSES_TTL_S`. An entry kept
before the response itself was (a list of items) still continues a conversation, but cannot be read back.

A write is queued as the answer goes out, not awaited on the request path; a read that misses waits a
little for a write on its way (`Turns.load`), so the next turn finds it on any worker or replica.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.store.base import Store

log = logging.getLogger("nanoroute")

NAMESPACE = "responses"
MISS_RETRIES_S = (0.05, 0.1, 0.2)
"""Waits before asking again for a response not found (see `Turns.load`)."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A stored response and the input items it was given (earlier turns' included)."""

    input: list[dict[str, Any]]
    response: dict[str, Any] | None
    """None for an entry kept before responses were (its items continue a conversation all the same)."""

    @property
    def items(self) -> list[dict[str, Any]]:
        """What the next turn starts from: the input, then the response's output."""
        output = self.response.get("output") if self.response is not None else None
        return [*self.input, *output] if isinstance(output, list) else self.input


@dataclass(frozen=True, slots=True)
class Turn:
    """A request whose response is to be stored: who may read it back, and its input items."""

    key_id: str | None
    items: list[dict[str, Any]]


class Turns:
    def __init__(self, store: Store, ttl_s: float) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._writes: set[asyncio.Task[None]] = set()

    async def load(self, key_id: str | None, response_id: str) -> list[dict[str, Any]] | None:
        """The items of a stored response (its input, then its output), or None when there is none for this key."""
        stored = await self.get(key_id, response_id)
        return stored.items if stored is not None else None

    async def get(self, key_id: str | None, response_id: str) -> StoredResponse | None:
        """A stored response, or None when there is none for this key.

        A response is written as its answer goes out: a client that sends the next turn at once, to another
        worker or replica, may ask before the write landed. A miss is asked again a few times (0.35 s in
        all) before it counts: only an unknown or expired id waits."""
        key = _key(key_id, response_id)
        value = await self.store.get(NAMESPACE, key)
        for delay in MISS_RETRIES_S:
            if value is not None:
                break
            await asyncio.sleep(delay)
            value = await self.store.get(NAMESPACE, key)
        if value is None:
            return None
        kept = orjson.loads(value)
        if isinstance(kept, list):  # kept as items alone
            return StoredResponse(kept, None)
        return StoredResponse(kept["input"], kept["response"])

    async def delete(self, key_id: str | None, response_id: str) -> bool:
        """Remove a stored response; True when this key had one under that id."""
        return await self.store.delete(NAMESPACE, _key(key_id, response_id))

    def save(self, turn: Turn, response: dict[str, Any]) -> None:
        """Queue the write of a response's turn (see the module's docstring); a failure is logged."""
        response_id, output = response.get("id"), response.get("output")
        if not isinstance(response_id, str) or not isinstance(output, list):
            return
        value = orjson.dumps({"input": turn.items, "response": response})
        task = asyncio.get_running_loop().create_task(self._put(_key(turn.key_id, response_id), value))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _put(self, key: str, value: bytes) -> None:
        try:
            await self.store.put(NAMESPACE, key, value, self.ttl_s)
        except Exception as exc:  # the answer went out already: the next turn will say the id is unknown
            log.error("could not store a Responses API answer: %s", exc)

    async def drain(self) -> None:
        """Wait for the writes queued so far (at shutdown, before the store closes)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)


def _key(key_id: str | None, response_id: str) -> str:
    return f"{key_id or '-'}:{response_id}"
