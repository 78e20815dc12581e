"""The interface every backend implements, and what it hands back.

A backend turns one attempt (an operation, a catalog model, the body to send) into either a complete
`Reply` or an open `ReplyStream`, or raises an `UpstreamError` subclass. Backends own their connection
pools; they classify every failure themselves, so nothing above them sees a foreign exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config.table import ModelRoute
from gateway.routing.request import Operation


@dataclass(slots=True)
class Reply:
    """A complete, successful upstream answer: its bytes, and the parsed body the gateway reads usage from."""

    body: bytes
    parsed: dict[str, Any]
    content_type: bytes = b"application/json"


class ReplyStream(Protocol):
    """An upstream event stream that answered 200; iterate its raw bytes, then `aclose()`."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Attempt:
    op: Operation
    model: ModelRoute
    body: bytes
    request_id: str


class Backend(Protocol):
    name: str

    async def start(self) -> None:
        """Open connection pools; called once from the app's lifespan."""

    async def close(self) -> None: ...

    async def call(self, attempt: Attempt) -> Reply: ...

    async def stream(self, attempt: Attempt) -> ReplyStream: ...
