"""gateway/backends/stream.py: what counts as first content, and the bounded waits of a stream afterwards,
through OpenAIBackend against real fake upstreams."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from gateway.backends.base import Attempt, Operation
from gateway.backends.openai import OpenAIBackend
from gateway.backends.stream import ErrorEvent, NotEventStream, has_content
from gateway.config.loader import load_text
from gateway.errors import UpstreamError, UpstreamMalformed, UpstreamServerError, UpstreamTimeout
from tests.api.support import wait_until
from tests.fakes.servers import Servers
from tests.unit.backends.conftest import Make

STREAM = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def event(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode()


def delta(**d: Any) -> bytes:
    return event({"choices": [{"index": 0, "delta": d, "finish_reason": None}]})


@pytest.mark.parametrize(("ev", "content"), [
    (delta(role="assistant", content=""), False),  # vLLM's and OpenAI's first chunk: not content yet
    (delta(role="assistant"), False),
    (delta(content="Hi"), True),
    (delta(tool_calls=[{"index": 0, "function": {"name": "f"}}]), True),
    (delta(reasoning_content="thinking"), True),
    (delta(refusal="no"), True),
    (event({"choices": [{"index": 0, "text": "Hi", "finish_reason": None}]}), True),  # completions
    (event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}), True),  # an empty answer
    (event({"choices": [], "usage": {"prompt_tokens": 1}}), True),
    (b"data: [DONE]", True),
    (b": keep-alive comment", False),
    (b"event: message\nid: 3\nretry: 100", False),
    (b"data:" + json.dumps({"choices": [{"delta": {"content": "x"}}]}).encode(), True),  # no space after the colon
])
def test_what_counts_as_content(ev: bytes, content: bool) -> None:
    assert has_content(ev) is content


@pytest.mark.parametrize("ev", [b"<html>oops</html>", b"data: {not json", b"data: [1, 2]", b"hello: world"])
def test_what_is_not_openais_sse(ev: bytes) -> None:
    with pytest.raises(NotEventStream):
        has_content(ev)


def typed(kind: str, obj: Any) -> bytes:
    return f"event: {kind}\n".encode() + event({"type": kind, **obj})


@pytest.mark.parametrize(("ev", "content"), [
    # OpenAI's Responses API, from a backend that speaks it
    (typed("response.created", {"response": {"id": "r", "status": "in_progress", "error": None}}), False),
    (typed("response.output_item.added", {"item": {"type": "message"}}), False),
    (typed("response.output_text.delta", {"delta": "Hi"}), True),
    (typed("response.function_call_arguments.delta", {"delta": "{"}), True),
    (typed("response.completed", {"response": {"id": "r", "status": "completed"}}), True),
    # Anthropic's Messages API
    (typed("message_start", {"message": {"usage": {"input_tokens": 3}}}), False),
    (typed("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}), False),
    (typed("ping", {}), False),
    (typed("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hi"}}), True),
    (typed("message_delta", {"delta": {"stop_reason": "end_turn"}}), True),
    (event({"type": "content_block_delta", "index": 0}), True),  # the type in the data alone
    (event({"type": "message_start", "message": {}}), False),
])
def test_what_counts_as_content_in_typed_events(ev: bytes, content: bool) -> None:
    assert has_content(ev) is content


@pytest.mark.parametrize("ev", [
    typed("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}),  # Anthropic's
    typed("error", {"code": "server_error", "message": "boom"}),  # the Responses API's
    typed("response.failed", {"response": {"error": {"code": "server_error", "message": "boom"}}}),
])
def test_typed_error_events_before_content_are_errors(ev: bytes) -> None:
    with pytest.raises(ErrorEvent) as info:
        has_content(ev)
    assert info.value.obj["error"]["message"] in ("Overloaded", "boom")


def test_an_error_event_is_reported_with_its_body() -> None:
    with pytest.raises(ErrorEvent) as info:
        has_content(event({"error": {"message": "boom", "code": 500}}))
    assert info.value.obj == {"error": {"message": "boom", "code": 500}}


def attempt(deadline: float | None = None) -> Attempt:
    table = load_text("backends:\n  b: {type: openai, url: http://x}\nmodels:\n  m: {backend: b}\n")
    return Attempt(Operation.CHAT, table.models["m"], json.dumps(STREAM).encode(), "r", None, deadline)


def read(servers: Servers, backend: OpenAIBackend, *, deadline_in: float | None = None,
         pause: float = 0.0) -> tuple[bytes, BaseException | None, float]:
    """Open a stream, read it to its end (pausing between chunks as a slow client would)."""

    async def run() -> tuple[bytes, BaseException | None, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = None if deadline_in is None else started + deadline_in
        got, failed = b"", None
        try:
            stream = await backend.stream(attempt(deadline))
        except UpstreamError as exc:
            return got, exc, loop.time() - started
        try:
            async for chunk in stream:
                got += chunk
                await asyncio.sleep(pause)
        except UpstreamError as exc:
            failed = exc
        finally:
            await stream.aclose()
        return got, failed, loop.time() - started

    return servers.loop.run(run())


@pytest.mark.parametrize(("behaviour", "error", "phase"), [
    ("stall_first", UpstreamTimeout, "first_token"),
    ("stall_role", UpstreamTimeout, "first_token"),
    ("error_event", UpstreamServerError, None),
    ("garbage", UpstreamMalformed, None),
    ("bad_json", UpstreamMalformed, None),
])
def test_a_failure_before_the_first_content_is_raised_by_stream(
    servers: Servers, make: Make, behaviour: str, error: type[UpstreamError], phase: str | None
) -> None:
    up = servers.upstream(behaviour=behaviour)
    got, failed, _ = read(servers, make(up.url, ", timeouts: {ttft_s: 0.3}"))
    assert got == b""
    assert type(failed) is error
    assert getattr(failed, "phase", None) == phase
    wait_until(lambda: up.open_requests == 0)


def test_an_error_event_keeps_its_message(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="error_event")
    _, failed, _ = read(servers, make(up.url))
    assert isinstance(failed, UpstreamServerError)
    assert failed.message == "in the stream, before any content: upstream answered 500: engine died"


def test_the_held_bytes_come_first_and_nothing_is_lost(servers: Servers, make: Make) -> None:
    up = servers.upstream(chunks=4)
    got, failed, _ = read(servers, make(up.url))
    assert failed is None
    events = got.split(b"\n\n")
    assert events[0].startswith(b"data: ") and b'"role": "assistant"' in events[0]
    assert events[-2:] == [b"data: [DONE]", b""]
    assert len(events) == 4 + 1 + 1 + 1  # deltas, the finish chunk, [DONE], the trailing split


def test_a_stall_midway_is_an_idle_timeout(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="stall_mid")
    got, failed, took = read(servers, make(up.url, ", timeouts: {idle_s: 0.3}"))
    assert b"tok0" in got
    assert isinstance(failed, UpstreamTimeout) and failed.phase == "idle"
    assert 0.25 < took < 1.5
    time.sleep(0.1)
    assert up.open_requests == 0 and up.cancelled == 1  # the connection was dropped: generation stops


def test_time_the_client_takes_is_not_idle_time(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="slow_chunks", chunks=4, chunk_delay_s=0.15)
    got, failed, took = read(servers, make(up.url, ", timeouts: {idle_s: 0.2}"), pause=0.4)
    assert failed is None and got.endswith(b"data: [DONE]\n\n")
    assert took > 0.8  # paused twice at least, each time longer than idle_s


def test_the_deadline_ends_a_stream_even_while_chunks_flow(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="slow_chunks", chunks=20, chunk_delay_s=0.1)
    got, failed, took = read(servers, make(up.url, ", timeouts: {idle_s: 5}"), deadline_in=0.5)
    assert b"tok1" in got and b"[DONE]" not in got
    assert isinstance(failed, UpstreamTimeout) and failed.phase == "deadline"
    assert 0.4 < took < 1.5


def test_total_s_bounds_a_whole_stream(servers: Servers, make: Make) -> None:
    up = servers.upstream(behaviour="slow_chunks", chunks=20, chunk_delay_s=0.1)
    _, failed, _ = read(servers, make(up.url, ", timeouts: {idle_s: 5, total_s: 0.5}"))
    assert isinstance(failed, UpstreamTimeout) and failed.phase == "total"


def test_an_opening_slower_than_idle_s_is_bounded_by_ttft_s_alone(servers: Servers, make: Make) -> None:
    # One timer bounds the opening and then the stream: it must neither cut a slow opening at idle_s nor
    # leave a stall right after the first content unchecked until ttft_s.
    up = servers.upstream(behaviour="stall_mid", delay_s=0.5)
    got, failed, took = read(servers, make(up.url, ", timeouts: {idle_s: 0.3, ttft_s: 5}"))
    assert b"tok0" in got
    assert isinstance(failed, UpstreamTimeout) and failed.phase == "idle"
    assert 0.75 < took < 1.5


def test_a_first_token_timeout_takes_its_cancel_back(servers: Servers, make: Make) -> None:
    # The limit cancels the opening task; the timeout raised instead must leave the task as it was, so
    # that the request goes on to the next model.
    backend = make(servers.upstream(behaviour="hang").url, ", timeouts: {ttft_s: 0.2}")

    async def run() -> int:
        with pytest.raises(UpstreamTimeout) as info:
            await backend.stream(attempt())
        assert info.value.phase == "first_token"
        await asyncio.sleep(0.01)  # a cancel still pending would be raised here
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert servers.loop.run(run()) == 0


def test_a_cancel_while_opening_stays_a_cancel(servers: Servers, make: Make) -> None:
    # A client that goes away cancels its request while the stream opens: that is no timeout.
    up = servers.upstream(behaviour="hang")
    backend = make(up.url, ", timeouts: {ttft_s: 5}")

    async def run() -> None:
        opening = asyncio.ensure_future(backend.stream(attempt()))
        while up.open_requests < 1:
            await asyncio.sleep(0.01)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening

    servers.loop.run(run())
    time.sleep(0.1)
    assert up.open_requests == 0  # the connection was dropped
