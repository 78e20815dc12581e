"""gateway/routing/request.py: what the gateway reads from a request body, and nothing more."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from gateway.backends.base import Operation
from gateway.errors import InvalidRequest
from gateway.routing.request import RoutedRequest, parse_request

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def parse(body: Any, op: Operation = Operation.CHAT, task_header: str | None = None) -> RoutedRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_request(op, raw, task_header=task_header, key_id="k1", request_id="rid")


def invalid(body: Any, op: Operation = Operation.CHAT) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse(body, op)
    assert info.value.status == 400
    assert info.value.type == "invalid_request_error"
    return info.value


def test_a_chat_request() -> None:
    req = parse(CHAT)
    assert (req.op, req.model, req.stream, req.task) == (Operation.CHAT, "m", False, None)
    assert (req.key_id, req.request_id) == ("k1", "rid")
    assert req.body == CHAT


@pytest.mark.parametrize(
    ("op", "path", "field"),
    [
        (Operation.CHAT, "/chat/completions", "messages"),
        (Operation.COMPLETIONS, "/completions", "prompt"),
        (Operation.EMBEDDINGS, "/embeddings", "input"),
    ],
)
def test_operations_know_their_path_and_required_field(op: Operation, path: str, field: str) -> None:
    assert (op.value, op.required) == (path, field)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "The request body is not valid JSON"),
        (b"", "The request body is not valid JSON"),
        (b"[1, 2]", "The request body must be a JSON object"),
        (b'"text"', "The request body must be a JSON object"),
    ],
)
def test_malformed_body(body: bytes, message: str) -> None:
    err = invalid(body)
    assert err.message.startswith(message)
    assert err.param is None


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"model": None, "messages": []},
        {"model": "", "messages": []},
        {"model": 4, "messages": []},
        {"model": ["m"], "messages": []},
    ],
)
def test_model_is_a_required_non_empty_string(body: dict[str, Any]) -> None:
    err = invalid(body)
    assert err.message == "'model' is required and must be a non-empty string"
    assert err.param == "model"


@pytest.mark.parametrize(
    ("op", "field"),
    [(Operation.CHAT, "messages"), (Operation.COMPLETIONS, "prompt"), (Operation.EMBEDDINGS, "input")],
)
def test_the_operations_own_field_is_required(op: Operation, field: str) -> None:
    err = invalid({"model": "m"}, op)
    assert err.message == f"'{field}' is a required property"
    assert err.param == field


@pytest.mark.parametrize("messages", ["hi", {"role": "user"}, 3])
def test_messages_must_be_a_list(messages: object) -> None:
    err = invalid({"model": "m", "messages": messages})
    assert (err.message, err.param) == ("'messages' must be an array", "messages")


@pytest.mark.parametrize(("op", "field"), [(Operation.CHAT, "messages"), (Operation.COMPLETIONS, "prompt"),
                                           (Operation.EMBEDDINGS, "input")])
def test_a_null_required_field_counts_as_missing(op: Operation, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse({"model": "m", field: None}, op)
    assert (caught.value.message, caught.value.param) == (f"'{field}' is a required property", field)


def test_prompt_and_input_may_be_any_shape() -> None:
    # The gateway does not validate what it does not read; the upstream judges these.
    assert parse({"model": "m", "prompt": ["a", "b"]}, Operation.COMPLETIONS).body["prompt"] == ["a", "b"]
    assert parse({"model": "m", "input": [1, 2, 3]}, Operation.EMBEDDINGS).body["input"] == [1, 2, 3]


@pytest.mark.parametrize("stream", ["true", 1, 0, [], {}])
def test_stream_must_be_a_boolean(stream: object) -> None:
    err = invalid({**CHAT, "stream": stream})
    assert (err.message, err.param) == ("'stream' must be a boolean", "stream")


@pytest.mark.parametrize(("stream", "expected"), [(True, True), (False, False), (None, False)])
def test_stream_values(stream: object, expected: bool) -> None:
    assert parse({**CHAT, "stream": stream}).stream is expected


def test_embeddings_cannot_be_streamed() -> None:
    err = invalid({"model": "m", "input": "x", "stream": True}, Operation.EMBEDDINGS)
    assert (err.message, err.param) == ("Embeddings cannot be streamed", "stream")
    assert parse({"model": "m", "input": "x", "stream": False}, Operation.EMBEDDINGS).stream is False


def test_task_from_metadata() -> None:
    assert parse({**CHAT, "metadata": {"task": "support"}}).task == "support"


def test_task_header_wins_over_metadata() -> None:
    assert parse({**CHAT, "metadata": {"task": "support"}}, task_header="code").task == "code"


@pytest.mark.parametrize("metadata", [None, "support", {"task": 3}, {"task": ""}, {"other": "x"}, ["task"]])
def test_no_task_when_metadata_does_not_name_one(metadata: object) -> None:
    assert parse({**CHAT, "metadata": metadata}).task is None


def test_an_empty_task_header_is_no_task() -> None:
    assert parse(CHAT, task_header="").task is None


def test_body_for_the_same_model_is_the_clients_own_bytes() -> None:
    raw = b'{"model": "m",   "messages": [], "x-unknown": {"kept": true}}'
    req = parse(raw)
    assert req.body_for("m") is raw


def test_body_for_another_model_rewrites_only_the_model() -> None:
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 7, "tools": []}'
    req = parse(raw)
    out = req.body_for("upstream-name")
    assert out is not raw
    assert orjson.loads(out) == {**orjson.loads(raw), "model": "upstream-name"}
    assert list(orjson.loads(out)) == ["model", "messages", "seed", "tools"]
    assert req.body["model"] == "m", "the parsed body must not change"


def test_unknown_fields_are_kept() -> None:
    body = {**CHAT, "tools": [{"type": "function"}], "n": 2, "vendor_extension": {"a": [1]}}
    req = parse(body)
    assert req.body == body
    assert orjson.loads(req.body_for("other"))["vendor_extension"] == {"a": [1]}


def test_a_stream_without_usage_asks_the_upstream_for_it() -> None:
    raw = json.dumps({**CHAT, "stream": True, "stream_options": {"x": 1}}).encode()
    req = parse(raw)
    assert req.add_usage is True
    sent = orjson.loads(req.body_for("m"))
    assert sent["stream_options"] == {"x": 1, "include_usage": True}
    assert req.body["stream_options"] == {"x": 1}, "the parsed body must not change"


def test_a_stream_that_asks_for_usage_goes_as_sent() -> None:
    raw = json.dumps({**CHAT, "stream": True, "stream_options": {"include_usage": True}}).encode()
    req = parse(raw)
    assert req.add_usage is False
    assert req.body_for("m") is raw


def test_stream_options_must_be_an_object() -> None:
    err = invalid({**CHAT, "stream": True, "stream_options": "usage"})
    assert (err.message, err.param) == ("'stream_options' must be an object", "stream_options")
