from __future__ import annotations

import orjson

from gateway.pipeline.sse import TypedTap, UsageTap

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


# -- TypedTap: the Responses and Messages APIs passed through ------------------------------------------------


def typed(*events: dict[str, object]) -> bytes:
    return b"".join(b"event: " + str(e["type"]).encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


RESPONSE = {"id": "resp_1", "object": "response", "status": "completed", "output": [],
            "usage": {"input_tokens": 12, "output_tokens": 2, "total_tokens": 14}}
RESPONSES_STREAM = typed(
    {"type": "response.created", "response": {**RESPONSE, "status": "in_progress", "usage": None}},
    {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "hi"},
    {"type": "response.completed", "response": RESPONSE})
MESSAGES_STREAM = typed(
    {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [],
                                          "usage": {"input_tokens": 12, "output_tokens": 1}}},
    {"type": "ping"},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
    {"type": "message_stop"})


def no_error(exc: object) -> bytes:
    raise AssertionError(exc)


def test_a_responses_stream_is_relayed_as_it_is_wherever_it_is_split() -> None:
    for parts in ([RESPONSES_STREAM], *([RESPONSES_STREAM[:cut], RESPONSES_STREAM[cut:]]
                                        for cut in range(1, len(RESPONSES_STREAM)))):
        tap = TypedTap(no_error)
        assert relay(tap, parts) == RESPONSES_STREAM
        assert (tap.usage, tap.final, tap.done) == (RESPONSE["usage"], RESPONSE, True), parts


def test_a_messages_stream_is_relayed_as_it_is_wherever_it_is_split() -> None:
    for parts in ([MESSAGES_STREAM], *([MESSAGES_STREAM[:cut], MESSAGES_STREAM[cut:]]
                                       for cut in range(1, len(MESSAGES_STREAM)))):
        tap = TypedTap(no_error)
        assert relay(tap, parts) == MESSAGES_STREAM
        assert (tap.usage, tap.done) == ({"input_tokens": 12, "output_tokens": 2}, True), parts


def test_a_messages_stream_is_whole_at_message_stop_however_its_json_is_spaced() -> None:
    spaced = MESSAGES_STREAM.replace(b'{"type":"message_stop"}', b'{"type": "message_stop"}')
    assert spaced != MESSAGES_STREAM
    data_only = b"".join(line + b"\n" for line in spaced.splitlines() if not line.startswith(b"event:"))
    for stream in (spaced, data_only):
        tap = TypedTap(no_error)
        assert relay(tap, [stream]) == stream and tap.done
    mention = typed({"type": "content_block_delta", "index": 0,
                     "delta": {"type": "text_delta", "text": 'then\nevent: message_stop and "type":"message_stop"'}})
    talk = TypedTap(no_error)
    assert relay(talk, [mention]) == mention and not talk.done  # text about it ends nothing
    cut = TypedTap(no_error)
    relay(cut, [MESSAGES_STREAM[:MESSAGES_STREAM.index(b"event: message_delta")]])
    assert not cut.done and cut.usage == {"input_tokens": 12, "output_tokens": 1}
