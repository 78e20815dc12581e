"""Fixtures for the API tests: SDK and raw HTTP clients, closed after each test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.api.support import Client


@pytest.fixture
def client() -> Iterator[Client]:
    """Make official SDK clients; no SDK retries, so a test sees exactly what the gateway answered."""
    made: list[openai.OpenAI] = []

    def make(base_url: str, api_key: str = "sk-client") -> openai.OpenAI:
        c = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=10)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain HTTP client for raw bodies and headers the SDK would not send."""
    with httpx.Client(timeout=10) as c:
        yield c
