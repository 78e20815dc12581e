from __future__ import annotations

import orjson

from gateway.pipeline.sse import UsageTap

CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}\n\n'
DONE = b"data: [DONE]\n\n"


def relay(tap: UsageTap, parts: list[bytes]) -> bytes:
    return b"".join(tap.feed(p) for p in parts) + tap.close()


def test_passes_events_through_and_reads_usage() -> None:
    tap = UsageTap(strip_usage=False)
    assert relay(tap, [CHUNK, USAGE, DONE]) == CHUNK + USAGE + DONE
    assert tap.usage == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_strips_the_usage_chunk_the_client_did_not_ask_for() -> None:
    tap = UsageTap(strip_usage=True)
    assert relay(tap, [CHUNK, USAGE, DONE]) == CHUNK + DONE
    assert tap.usage is not None and tap.usage["completion_tokens"] == 3


def test_events_split_across_chunks_at_every_byte() -> None:
    stream = CHUNK + USAGE + DONE
    for cut in range(1, len(stream)):
        tap = UsageTap(strip_usage=True)
        assert relay(tap, [stream[:cut], stream[cut:]]) == CHUNK + DONE, cut
        assert tap.usage is not None


def test_complete_events_are_not_held_back() -> None:
    tap = UsageTap(strip_usage=True)
    assert tap.feed(CHUNK + CHUNK[:10]) == CHUNK
    assert tap.feed(CHUNK[10:]) == CHUNK


def test_openai_null_usage_in_every_chunk_is_kept() -> None:
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"a"}}],"usage":null}\n\n'
    tap = UsageTap(strip_usage=True)
    assert relay(tap, [chunk, chunk]) == chunk + chunk
    assert tap.usage is None


def test_usage_on_a_chunk_with_choices_is_read_but_kept() -> None:
    # vLLM's continuous usage stats put usage on content chunks; those must reach the client.
    event = b"data: " + orjson.dumps({"choices": [{"delta": {"content": "x"}}], "usage": {"prompt_tokens": 1,
                                       "completion_tokens": 1}}) + b"\n\n"
    tap = UsageTap(strip_usage=True)
    assert relay(tap, [event]) == event
    assert tap.usage == {"prompt_tokens": 1, "completion_tokens": 1}


def test_bytes_that_are_not_sse_are_never_held_for_long() -> None:
    tap = UsageTap(strip_usage=True)
    blob = b"x" * (2 << 20)
    assert tap.feed(blob) == blob


def test_crlf_separated_events_are_relayed_and_usage_stripped() -> None:
    chunk, usage, done = (e.replace(b"\n\n", b"\r\n\r\n") for e in (CHUNK, USAGE, DONE))
    tap = UsageTap(strip_usage=True)
    assert tap.feed(chunk) == chunk  # not held back
    assert relay(tap, [usage[:9], usage[9:] + done]) == done
    assert tap.usage is not None and tap.usage["prompt_tokens"] == 7
