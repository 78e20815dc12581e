"""The interface every backend implements, and what it hands back.

A backend turns one attempt (an operation, a catalog model, the body to send) into either a complete
`Reply` or an open `ReplyStream`, or raises an `UpstreamError` subclass. Backends own their connection
pools; they classify every failure themselves, so nothing above them sees a foreign exception.

A stream is returned only once the upstream has sent its first content (a token, a tool call, the end):
whatever fails before that is raised by `stream()`, while another model may still answer invisibly.
Every wait is bounded: the attempt's `deadline`, the backend's `timeouts` (connect, first token, idle
between chunks, total).
"""

from __future__ import annotations

import enum
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.backends.replica import Replica
from gateway.config.table import ModelRoute, RoutingTable


class Operation(enum.Enum):
    """An endpoint the gateway routes; the value is its path below the API's base URL.

    CHAT, COMPLETIONS and EMBEDDINGS are OpenAI's, and every backend takes them. RESPONSES (OpenAI's
    Responses API) and MESSAGES (Anthropic's Messages API) are routed as chat completions and go as such
    to a backend, unless it speaks that API itself (`Backend.native`).
    """

    CHAT = "/chat/completions"
    COMPLETIONS = "/completions"
    EMBEDDINGS = "/embeddings"
    RESPONSES = "/responses"
    MESSAGES = "/messages"
    COUNT_TOKENS = "/messages/count_tokens"
    """Anthropic's token count: routed like MESSAGES (the model must exist and the key may use it), then
    answered by the gateway itself with its estimate; never sent to a backend."""

    @property
    def required(self) -> str:
        """The body field this operation cannot go without."""
        return _REQUIRED[self]


_REQUIRED = {Operation.CHAT: "messages", Operation.COMPLETIONS: "prompt", Operation.EMBEDDINGS: "input",
             Operation.RESPONSES: "input", Operation.MESSAGES: "messages", Operation.COUNT_TOKENS: "messages"}


@dataclass(slots=True)
class Reply:
    """A complete, successful upstream answer: its bytes, and the parsed body the gateway reads usage from."""

    body: bytes
    parsed: dict[str, Any]


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
    replica: int | None = None
    """Which of the backend's replicas to call (an index); None: the backend takes them in turn."""
    deadline: float | None = None
    """The request's deadline on the event loop's clock; the attempt ends with it at the latest."""
    headers: tuple[tuple[str, str], ...] = ()
    """The client's headers of the API a native attempt speaks (Anthropic's `anthropic-version` and
    `anthropic-beta`), sent upstream with the backend's own."""


class Backend(Protocol):
    name: str
    replicas: tuple[Replica, ...]
    """Its replicas (base URLs), each built once; the health checks and the attempt chain read the same."""
    stream_usage: bool
    """Whether the gateway may ask this backend for usage in streams the client did not ask it for."""
    native: frozenset[Operation]
    """The APIs beyond chat completions it speaks itself (RESPONSES, MESSAGES): a request that came in by
    one of them goes to it as the client sent it, and its answer back as the upstream gave it."""

    async def start(self) -> None:
        """Open connection pools (and background work, such as vLLM's poll); called from the app's lifespan."""

    async def close(self) -> None: ...

    def configure(self, table: RoutingTable) -> None:
        """Take what `table` routes to this backend (vLLM: the adapters to load); at start and each reload."""

    async def call(self, attempt: Attempt) -> Reply: ...

    async def stream(self, attempt: Attempt) -> ReplyStream: ...

    def prefer(self, model: ModelRoute) -> list[int] | None:
        """Replica indexes, best first, for a request to `model`; None: no preference (taken in turn)."""

    async def probe(self, replica: int, path: str, timeout_s: float) -> bytes | None:
        """An active health check of one replica: returns (the body, for backends that read one) when it
        answers `path` with 2xx/3xx; else raises an `UpstreamError`."""

    async def queue_length(self, replica: int, timeout_s: float) -> float | None:
        """The requests waiting in the replica's own queue, read now; None when the backend cannot tell."""

    def describe(self) -> list[dict[str, Any]] | None:
        """What the gateway knows of each replica beyond health, for /admin/backends; None: nothing more."""


def attempt_limit(start: float, total_s: float, deadline: float | None) -> tuple[float, str]:
    """One attempt's hard limit on the loop clock: the backend's `total_s` from `start`, or the request's
    deadline when that comes first; and which of the two it is (`total` or `deadline`)."""
    total = start + total_s
    if deadline is not None and deadline < total:
        return deadline, "deadline"
    return total, "total"


def read_key(env: str | None, path: os.PathLike[str] | None) -> str | None:
    """A backend's provider key: from the file `api_key_file` names (a mounted secret), else from the
    variable `api_key_env` names; None when neither gives one."""
    if path is not None:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    return os.environ.get(env) if env else None
