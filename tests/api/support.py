"""Helpers for the API tests: configs in front of fake upstreams, and a bounded poll."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai

from tests.fakes.upstream import FakeUpstream

Client = Callable[..., openai.OpenAI]

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES: Any = [{"role": "user", "content": "hi"}]


def single_model(up: FakeUpstream, model: str = "m", name: str | None = None, backend_extra: str = "") -> str:
    """A config with one backend `b` in front of `up` serving one catalog model."""
    served = f", name: {name}" if name else ""
    return f"""\
backends:
  b: {{type: openai, url: {up.url}{backend_extra}}}
models:
  {model}: {{backend: b{served}}}
"""


def envelope(resp: httpx.Response) -> dict[str, Any]:
    """The OpenAI error envelope of a raw response, checked for shape."""
    assert resp.headers["content-type"] == "application/json"
    data = json.loads(resp.content)
    assert list(data) == ["error"]
    assert set(data["error"]) == {"message", "type", "param", "code"}
    return data["error"]  # type: ignore[no-any-return]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.01)


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    """The OpenAI error envelope behind an SDK exception, checked for shape."""
    return envelope(exc.response)
