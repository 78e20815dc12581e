"""A started OpenAIBackend for a URL, closed after the test (for the backend module tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from gateway.backends.openai import OpenAIBackend
from gateway.config.loader import load_text
from tests.fakes.servers import Servers

Make = Callable[..., OpenAIBackend]


@pytest.fixture
def make(servers: Servers) -> Iterator[Make]:
    """`make(url, extra="")`: a backend `b` serving model `m`; `extra` adds YAML keys to the backend."""
    started: list[OpenAIBackend] = []

    def build(url: str, extra: str = "") -> OpenAIBackend:
        table = load_text(f"backends:\n  b: {{type: openai, url: {url}{extra}}}\nmodels:\n  m: {{backend: b}}\n")
        backend = OpenAIBackend("b", table.config.backends["b"])  # type: ignore[arg-type]
        servers.loop.run(backend.start())
        started.append(backend)
        return backend

    yield build
    for backend in started:
        servers.loop.run(backend.close())
