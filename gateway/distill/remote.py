"""Asking an OpenAI-compatible server (vLLM serving the adapter, or the gateway) for chat answers.

Greedy (`temperature: 0`), a few requests at a time, each answer's text as `evaluate.answer_text` gives
it. A request that fails counts as a wrong answer (None) rather than ending the run: a run where every
request fails raises DistillError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from gateway.distill.evaluate import answer_text
from gateway.errors import DistillError


@dataclass(frozen=True)
class Server:
    url: str
    """The API's base URL, with /v1."""
    model: str
    api_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    concurrency: int = 4
    timeout_s: float = 300.0


def ask_all(server: Server, requests: Sequence[dict[str, Any]]) -> list[str | None]:
    """Each request (`messages`, optional `tools` and `max_tokens`) answered, in order."""
    return asyncio.run(_ask_all(server, requests))


async def _ask_all(server: Server, requests: Sequence[dict[str, Any]]) -> list[str | None]:
    headers = {**server.headers}
    if server.api_key:
        headers["Authorization"] = f"Bearer {server.api_key}"
    gate = asyncio.Semaphore(server.concurrency)
    errors: list[str] = []

    async def one(client: httpx.AsyncClient, body: dict[str, Any]) -> str | None:
        async with gate:
            try:
                resp = await client.post("/chat/completions", json={"model": server.model, "temperature": 0, **body})
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return None
        if resp.status_code != 200:
            errors.append(f"HTTP {resp.status_code}: {resp.text[:300]}")
            return None
        try:
            return answer_text(resp.json()["choices"][0]["message"])
        except (ValueError, KeyError, IndexError, TypeError):
            errors.append(f"not a chat completion: {resp.text[:300]}")
            return None

    async with httpx.AsyncClient(base_url=server.url.rstrip("/"), headers=headers, timeout=server.timeout_s) as c:
        got = await asyncio.gather(*(one(c, dict(r)) for r in requests))
    if requests and all(g is None for g in got):
        raise DistillError(f"every request to {server.url} (model '{server.model}') failed; the first: {errors[0]}")
    return list(got)
