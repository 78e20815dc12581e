"""Providers with their own protocols (Anthropic, Gemini, Bedrock...), through litellm.

This version accepts `type: litellm` backends in the config so that a file written for them loads and
validates, but does not call them yet: every attempt fails as unavailable, which moves the request on
down its fallback chain, and the start-up log says so once. Translation through litellm's async API
is the next step for this module.
"""

from __future__ import annotations

import logging

from gateway.backends.base import Attempt, Reply, ReplyStream
from gateway.config import schema
from gateway.errors import UpstreamConnectError

log = logging.getLogger("nanoroute")


class LitellmBackend:
    def __init__(self, name: str, spec: schema.LitellmBackend) -> None:
        self.name = name
        self.spec = spec

    async def start(self) -> None:
        log.warning("backend '%s' (litellm, %s): litellm backends are not served by this version; "
                    "requests routed to it fall back to the next model", self.name, self.spec.provider)

    async def close(self) -> None:
        return None

    def _unavailable(self, attempt: Attempt) -> UpstreamConnectError:
        return UpstreamConnectError(
            f"litellm backend '{self.name}' ({self.spec.provider}) is not served by this version",
            model=attempt.model.name,
            backend=self.name,
        )

    async def call(self, attempt: Attempt) -> Reply:
        raise self._unavailable(attempt)

    async def stream(self, attempt: Attempt) -> ReplyStream:
        raise self._unavailable(attempt)
