from __future__ import annotations

from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.errors import InvalidRequest, UpstreamMalformed, UpstreamRateLimited, UpstreamServerError
from gateway.protocols.responses import (
    BuiltinToolUnsupported,
    StreamTranslator,
    Untranslatable,
    error_body,
    error_event,
    from_chat,
    input_items,
    to_chat,
)

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "strict": True}


def chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}


# -- to_chat -------------------------------------------------------------------------------------------------


def test_a_string_input_is_one_user_message() -> None:
    assert to_chat({"model": "m", "input": "hi"}) == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_instructions_come_first_as_a_system_message() -> None:
    chat = to_chat({"model": "m", "instructions": "Be brief.", "input": "hi"})
    assert chat["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def test_items_of_every_supported_kind() -> None:
    body = {"model": "m", "input": [
        {"role": "developer", "content": "Answer in French."},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be brief."},
                                                          {"type": "input_text", "text": "Be kind."}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "low"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
        ]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [
            {"type": "output_text", "text": "A cat.", "annotations": []}]},
        {"type": "reasoning", "id": "rs_2", "summary": []},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "18 C"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "no station"}, {"type": "input_text", "text": "retry"}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot say more."}]},
        {"type": "function_call", "call_id": "call_3", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_3", "output": "?"},
    ]}
    assert to_chat(body)["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "system", "content": "Be brief.\nBe kind."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]},
        {"role": "assistant", "content": "A cat.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "no station\nretry"},
        {"role": "assistant", "content": "I cannot say more.", "tool_calls": [
            {"id": "call_3", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_3", "content": "?"},
    ]


def test_function_calls_without_text_get_an_assistant_message_of_their_own() -> None:
    body = {"model": "m", "input": [
        {"role": "user", "content": "Paris?"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
    ]}
    assert to_chat(body)["messages"][1] == {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}


def test_two_turns_with_the_previous_response_as_history() -> None:
    first = {"model": "m", "instructions": "Use the tools.", "input": "Weather in Paris?", "tools": [WEATHER]}
    reply = {"model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        ]}}]}
    response = from_chat(reply, first, "resp_1", 1)
    history = input_items(first) + response["output"]
    second = {"model": "m", "previous_response_id": "resp_1", "tools": [WEATHER], "input": [
        {"type": "function_call_output", "call_id": "call_9", "output": "18 C"}]}
    assert to_chat(second, history) == {"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_9", "content": "18 C"},
    ], "tools": [chat_tool(WEATHER)]}


def test_input_items_are_the_history_then_the_input() -> None:
    history = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}]}]
    assert input_items({"model": "m", "input": "b"}, history) == [
        *history, {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "b"}]}]
    item = {"type": "function_call_output", "call_id": "c", "output": "x"}
    assert input_items({"model": "m", "input": [item]}) == [item]
    assert input_items({"model": "m"}) == []


def test_options_are_translated_copied_or_dropped() -> None:
    body = {
        "model": "m", "input": "hi", "max_output_tokens": 256, "temperature": 0.2, "top_p": 0.9, "user": "u",
        "safety_identifier": "s", "prompt_cache_key": "k", "service_tier": "flex", "parallel_tool_calls": False,
        "reasoning": {"effort": "low", "summary": "auto"}, "metadata": {"team": "a"}, "store": True,
        "previous_response_id": "resp_0", "include": ["reasoning.encrypted_content"], "background": False,
        "truncation": "auto", "unknown_field": 1,
        "text": {"format": {"type": "text"}, "verbosity": "low"},
    }
    assert to_chat(body) == {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 256, "temperature": 0.2,
        "top_p": 0.9, "user": "u", "safety_identifier": "s", "prompt_cache_key": "k", "service_tier": "flex",
        "parallel_tool_calls": False, "reasoning_effort": "low", "verbosity": "low",
    }


@pytest.mark.parametrize("field", ["conversation", "prompt"])
def test_what_openai_keeps_for_the_client_is_not_translated(field: str) -> None:
    with pytest.raises(Untranslatable) as caught:
        to_chat({"model": "m", "input": "hi", field: "conv_1" if field == "conversation" else {"id": "p"}})
    assert caught.value.param == field


def test_a_stream_asks_for_usage() -> None:
    chat = to_chat({"model": "m", "input": "hi", "stream": True, "stream_options": {"include_obfuscation": False}})
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}


def test_logprobs_are_asked_for_when_included_or_top_logprobs_is_set() -> None:
    assert to_chat({"model": "m", "input": "hi", "top_logprobs": 3}) == {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 3}
    chat = to_chat({"model": "m", "input": "hi", "include": ["message.output_text.logprobs"]})
    assert chat["logprobs"] is True and "top_logprobs" not in chat


@pytest.mark.parametrize(("fmt", "expected"), [
    ({"type": "text"}, None),
    ({"type": "json_object"}, {"type": "json_object"}),
    ({"type": "json_schema", "name": "city", "schema": {"type": "object"}, "strict": True, "description": "A city"},
     {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}, "strict": True,
                                             "description": "A city"}}),
    ({"type": "json_schema", "name": "city", "schema": {"type": "object"}},
     {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}}}),
])
def test_text_format_becomes_response_format(fmt: dict[str, Any], expected: dict[str, Any] | None) -> None:
    chat = to_chat({"model": "m", "input": "hi", "text": {"format": fmt}})
    assert chat.get("response_format") == expected


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", "auto"), ("none", "none"), ("required", "required"),
    ({"type": "function", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
])
def test_tool_choice(choice: Any, expected: Any) -> None:
    chat = to_chat({"model": "m", "input": "hi", "tools": [WEATHER], "tool_choice": choice})
    assert chat["tool_choice"] == expected
    assert chat["tools"] == [chat_tool(WEATHER)]


@pytest.mark.parametrize("choice", [
    "sometimes", {"type": "web_search_preview"}, {"type": "allowed_tools", "mode": "auto", "tools": []},
    {"type": "function"},
])
def test_tool_choices_chat_cannot_say_are_refused(choice: Any) -> None:
    with pytest.raises(Untranslatable) as caught:
        to_chat({"model": "m", "input": "hi", "tool_choice": choice})
    assert caught.value.param == "tool_choice"


@pytest.mark.parametrize("kind", ["web_search", "web_search_preview", "file_search", "computer_use_preview",
                                  "code_interpreter", "image_generation", "mcp", "local_shell"])
def test_builtin_tools_are_refused_with_their_path(kind: str) -> None:
    with pytest.raises(BuiltinToolUnsupported) as caught:
        to_chat({"model": "m", "input": "hi", "tools": [WEATHER, {"type": kind}]})
    assert caught.value.param == "tools.1.type"
    assert caught.value.message == (f"The built-in tool '{kind}' runs on OpenAI's servers; the model this request "
                                    "was routed to cannot run it")
    assert caught.value.status == 400 and isinstance(caught.value, Untranslatable)


@pytest.mark.parametrize(("item", "param"), [
    ({"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}, "input.0.content.0.type"),
    ({"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}, "input.0.content.0.file_id"),
    ({"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]},
     "input.0.content.0.type"),
    ({"type": "item_reference", "id": "msg_1"}, "input.0"),
    ({"id": "msg_1"}, "input.0"),
    ({"type": "web_search_call", "id": "ws_1", "status": "completed"}, "input.0.type"),
    ({"type": "computer_call", "id": "cu_1"}, "input.0.type"),
    ({"role": "tool", "content": "x"}, "input.0.role"),
    ({"type": "function_call", "call_id": "c", "name": "f"}, "input.0.arguments"),
    ({"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image", "image_url": "u"}]},
     "input.0.output.0.type"),
    ("hello", "input.0"),
])
def test_items_chat_cannot_carry_are_refused_with_their_path(item: Any, param: str) -> None:
    with pytest.raises(Untranslatable) as caught:
        to_chat({"model": "m", "input": [item]})
    assert caught.value.param == param


def test_an_item_of_the_previous_response_is_blamed_on_previous_response_id() -> None:
    history = [{"type": "message", "role": "user", "content": "hi"},
               {"type": "web_search_call", "id": "ws_1", "status": "completed"}]
    with pytest.raises(Untranslatable) as caught:
        to_chat({"model": "m", "input": "and?"}, history)
    assert caught.value.param == "previous_response_id"
    assert "Item 1 of the previous response" in caught.value.message


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "hi"}, "model"),
    ({"model": "", "input": "hi"}, "model"),
    ({"model": "m"}, "input"),
    ({"model": "m", "input": 3}, "input"),
    ({"model": "m", "input": "hi", "instructions": ["x"]}, "instructions"),
    ({"model": "m", "input": "hi", "max_output_tokens": "many"}, "max_output_tokens"),
    ({"model": "m", "input": "hi", "temperature": True}, "temperature"),
    ({"model": "m", "input": "hi", "tools": {"type": "function"}}, "tools"),
    ({"model": "m", "input": "hi", "tools": [{"type": "custom", "name": "x"}]}, "tools.0.type"),
    ({"model": "m", "input": "hi", "tools": [{"type": "function"}]}, "tools.0.name"),
    ({"model": "m", "input": "hi", "text": {"format": {"type": "grammar"}}}, "text.format.type"),
    ({"model": "m", "input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"model": "m", "input": "hi", "reasoning": "high"}, "reasoning"),
])
def test_invalid_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_chat(body)
    assert caught.value.param == param and caught.value.status == 400


# -- from_chat -----------------------------------------------------------------------------------------------


def chat_reply(message: dict[str, Any], finish: str = "stop", **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "qwen-7b",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
                      "prompt_tokens_details": {"cached_tokens": 4},
                      "completion_tokens_details": {"reasoning_tokens": 2}}, **extra}


def test_a_text_answer_is_a_response_the_sdk_reads() -> None:
    request = {"model": "m", "input": "hi", "instructions": "Be brief.", "temperature": 0.5,
               "metadata": {"team": "a"}, "max_output_tokens": 50}
    body = from_chat(chat_reply({"content": "Hello there."}), request, "resp_abc", 1700000000)
    response = Response.model_validate(body)
    assert response.output_text == "Hello there."
    assert (response.id, response.status, response.model, response.created_at) == (
        "resp_abc", "completed", "qwen-7b", 1700000000)
    assert response.output[0].id == "msg_abc_0" and response.output[0].status == "completed"
    assert body["usage"] == {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                             "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 2},
                             "total_tokens": 17}
    assert (body["instructions"], body["temperature"], body["metadata"], body["max_output_tokens"]) == (
        "Be brief.", 0.5, {"team": "a"}, 50)
    assert body["error"] is None and body["incomplete_details"] is None


def test_tool_calls_are_function_call_items_after_the_text() -> None:
    request = {"model": "m", "input": "hi", "tools": [WEATHER], "tool_choice": "required"}
    reply = chat_reply({"content": "Checking.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
    ]}, "tool_calls")
    body = from_chat(reply, request, "resp_x", 1)
    response = Response.model_validate(body)
    assert [item.type for item in response.output] == ["message", "function_call", "function_call"]
    assert body["output"][1:] == [
        {"id": "fc_x_1", "type": "function_call", "status": "completed", "arguments": '{"city":"Paris"}',
         "call_id": "call_1", "name": "get_weather"},
        {"id": "fc_x_2", "type": "function_call", "status": "completed", "arguments": '{"city":"Rome"}',
         "call_id": "call_2", "name": "get_weather"},
    ]
    assert body["tools"] == [WEATHER] and body["tool_choice"] == "required"


def test_only_tool_calls_means_no_message_item() -> None:
    reply = chat_reply({"content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, "tool_calls")
    response = Response.model_validate(from_chat(reply, {"model": "m"}, "resp_1", 1))
    assert [item.type for item in response.output] == ["function_call"] and response.output_text == ""


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_a_cut_answer_is_incomplete(finish: str, reason: str) -> None:
    body = from_chat(chat_reply({"content": "Once upon a"}, finish), {"model": "m"}, "resp_1", 1)
    response = Response.model_validate(body)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == reason
    assert response.output[0].status == "incomplete"


def test_a_refusal_and_logprobs_are_kept() -> None:
    logprobs = {"content": [{"token": "No", "logprob": -0.1, "bytes": None,
                             "top_logprobs": [{"token": "No", "logprob": -0.1, "bytes": [78, 111]}]}]}
    reply = chat_reply({"content": "No", "refusal": "I won't."})
    reply["choices"][0]["logprobs"] = logprobs
    response = Response.model_validate(from_chat(reply, {"model": "m"}, "resp_1", 1))
    message = response.output[0]
    assert message.type == "message"
    text, refusal = message.content
    assert text.type == "output_text" and text.logprobs is not None and text.logprobs[0].bytes == [78, 111]
    assert refusal.type == "refusal" and refusal.refusal == "I won't."


def test_no_usage_is_none() -> None:
    reply = chat_reply({"content": "x"})
    del reply["usage"]
    assert from_chat(reply, {"model": "m"}, "resp_1", 1)["usage"] is None


# -- the stream ----------------------------------------------------------------------------------------------


def sse(*chunks: dict[str, Any], done: bool = True) -> bytes:
    out = b"".join(b"data: " + orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                                             "model": "qwen-7b", **c}) + b"\n\n" for c in chunks)
    return out + (b"data: [DONE]\n\n" if done else b"")


def delta(**fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields, "logprobs": None, "finish_reason": None}]}


def finish(reason: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}]}


def call(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    fragment: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        fragment |= {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    return delta(tool_calls=[fragment])


USAGE = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}
TEXT = sse(delta(role="assistant", content=""), delta(reasoning_content="Let me think."), delta(content="Hello"),
           delta(content=" world"), delta(content="!"), finish("stop"), USAGE)
TOOLS = sse(delta(role="assistant", content="Checking."), call(0, "", "call_a", "get_weather"),
            call(0, '{"city":'), call(0, '"Paris"}'), call(1, "", "call_b", "get_time"), call(1, '{"tz":'),
            call(1, '"CET"}'), finish("tool_calls"), USAGE)
REQUEST = {"model": "m", "input": "Weather in Paris?", "tools": [WEATHER], "stream": True}


def events(data: bytes) -> list[dict[str, Any]]:
    """The translator's output as JSON events; each `event:` line names its data's type."""
    out = []
    for block in data.split(b"\n\n")[:-1]:
        name, body = block.split(b"\n")
        event = orjson.loads(body.removeprefix(b"data: "))
        assert name == b"event: " + event["type"].encode()
        out.append(event)
    assert data.endswith(b"\n\n") or not data
    return out


def translate(data: bytes, pieces: list[bytes] | None = None, request: dict[str, Any] | None = None) -> bytes:
    t = StreamTranslator(request or REQUEST, "resp_s", 1700000000)
    out = b"".join(t.feed(p) for p in (pieces if pieces is not None else [data])) + t.close()
    assert t.done
    return out


def sdk_client(body: bytes) -> openai.OpenAI:
    """OpenAI's client, over a transport that answers `body` as an event stream."""
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return openai.OpenAI(api_key="k", base_url="http://gateway.test/v1", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.MockTransport(answer)))


def through_the_sdk(body: bytes) -> tuple[list[Any], Any]:
    """The SDK's own stream reader and accumulator (`ResponseStreamState`): its events and final response."""
    with sdk_client(body).responses.stream(model="m", input="Weather in Paris?") as stream:
        seen = list(stream)
        return seen, stream.get_final_response()


def test_a_text_stream_gives_the_responses_events_in_order() -> None:
    out = events(translate(TEXT))
    assert [e["type"] for e in out] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]
    assert [e["delta"] for e in out if e["type"] == "response.output_text.delta"] == ["Hello", " world", "!"]
    assert out[0]["response"]["status"] == "in_progress" and out[0]["response"]["output"] == []
    for event in out:
        EVENTS.validate_python(event)
    assert out[-1]["response"]["usage"]["total_tokens"] == 13


def test_the_sdk_accumulates_a_text_stream() -> None:
    seen, final = through_the_sdk(translate(TEXT))
    assert final.output_text == "Hello world!" and final.status == "completed"
    assert [e.type for e in seen][-1] == "response.completed"
    assert final.usage is not None and final.usage.output_tokens == 4


def test_text_then_two_tool_calls_with_fragmented_arguments() -> None:
    out = events(translate(TOOLS))
    assert [e["type"] for e in out] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["output_index"] for e in out if e["type"] == "response.output_item.added"] == [0, 1, 2]
    added = out[8]["item"]
    assert (added["type"], added["status"], added["arguments"], added["call_id"], added["name"]) == (
        "function_call", "in_progress", "", "call_a", "get_weather")
    assert [(e["name"], e["arguments"]) for e in out if e["type"] == "response.function_call_arguments.done"] == [
        ("get_weather", '{"city":"Paris"}'), ("get_time", '{"tz":"CET"}')]
    for event in out:
        EVENTS.validate_python(event)
    seen, final = through_the_sdk(translate(TOOLS))
    assert final.output_text == "Checking."
    assert [(i.type, getattr(i, "arguments", None)) for i in final.output] == [
        ("message", None), ("function_call", '{"city":"Paris"}'), ("function_call", '{"tz":"CET"}')]
    assert [e.snapshot for e in seen if e.type == "response.function_call_arguments.delta"][-1] == '{"tz":"CET"}'


def test_the_streamed_response_is_the_one_from_chat_builds() -> None:
    t = StreamTranslator(REQUEST, "resp_s", 1700000000)
    t.feed(TOOLS)
    reply = chat_reply({"content": "Checking.", "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"tz":"CET"}'}},
    ]}, "tool_calls", usage={"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13})
    assert t.final == from_chat(reply, REQUEST, "resp_s", 1700000000)
    assert t.usage == USAGE["usage"]


def test_the_same_output_however_the_bytes_are_split() -> None:
    whole = translate(TOOLS)
    for cut in range(1, len(TOOLS)):
        assert translate(TOOLS, [TOOLS[:cut], TOOLS[cut:]]) == whole, cut
    assert translate(TOOLS, [TOOLS[i:i + 1] for i in range(len(TOOLS))]) == whole


def test_crlf_and_comments() -> None:
    crlf = TEXT.replace(b"\n\n", b"\r\n\r\n")
    data = b": keep-alive\r\n\r\n" + crlf.replace(b"data: [DONE]", b": ping\r\ndata:[DONE]")
    assert translate(data) == translate(TEXT)
    for cut in range(1, len(data)):
        assert translate(data, [data[:cut], data[cut:]]) == translate(TEXT), cut


def test_completion_waits_for_the_usage_chunk_after_the_finish_reason() -> None:
    t = StreamTranslator(REQUEST, "resp_s", 1)
    before = events(t.feed(sse(delta(content="Hi"), finish("stop"), done=False)))
    assert before[-1]["type"] == "response.output_item.done" and not t.done
    after = events(t.feed(sse(USAGE, done=False)))
    assert [e["type"] for e in after] == ["response.completed"] and t.done
    assert after[0]["response"]["usage"]["input_tokens"] == 9
    assert t.feed(b"data: [DONE]\n\n") == b"" and t.close() == b""


def test_usage_on_every_chunk_does_not_end_the_stream_early() -> None:
    running = {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}
    data = sse(delta(content="a") | {"usage": running}, finish("stop") | {"usage": running}, USAGE)
    out = events(translate(data))
    assert out[-1]["response"]["usage"]["output_tokens"] == 4


def test_close_without_done_still_completes_and_twice_adds_nothing() -> None:
    t = StreamTranslator(REQUEST, "resp_s", 1)
    out = t.feed(sse(delta(content="Hi"), finish("stop"), done=False)[:-1])  # the last blank line never came
    out += t.close()
    assert events(out)[-1]["type"] == "response.completed" and t.done
    assert t.final is not None and t.final["output"][0]["content"][0]["text"] == "Hi"
    assert t.close() == b""
    assert t.feed(sse(delta(content="more"))) == b""


def test_a_stream_cut_before_the_finish_reason_is_closed_whole() -> None:
    out = events(translate(sse(delta(content="Hel"), call(0, "{", "c1", "f"), done=False)))
    assert [e["type"] for e in out][-3:] == ["response.function_call_arguments.done", "response.output_item.done",
                                             "response.completed"]
    for event in out:
        EVENTS.validate_python(event)


def test_an_empty_stream_still_opens_and_completes() -> None:
    out = events(translate(b"data: [DONE]\n\n"))
    assert [e["type"] for e in out] == ["response.created", "response.in_progress", "response.completed"]


def test_a_cut_answer_ends_with_response_incomplete() -> None:
    out = events(translate(sse(delta(content="Once upon"), finish("length"), USAGE)))
    assert out[-1]["type"] == "response.incomplete"
    response = Response.model_validate(out[-1]["response"])
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"


def test_sequence_numbers_increase_from_zero() -> None:
    for data in (TEXT, TOOLS):
        numbers = [e["sequence_number"] for e in events(translate(data))]
        assert numbers == list(range(len(numbers)))


def test_a_refusal_streams_as_refusal_events() -> None:
    out = events(translate(sse(delta(refusal="I can't"), delta(refusal=" help."), finish("stop"), USAGE)))
    types = [e["type"] for e in out]
    assert "response.refusal.delta" in types and "response.refusal.done" in types
    for event in out:
        EVENTS.validate_python(event)
    assert out[-1]["response"]["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help."}]


def test_tool_calls_sent_whole_without_an_index() -> None:
    whole = delta(tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                              {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "[]"}}])
    out = events(translate(sse(whole, finish("tool_calls"))))
    assert [(i["call_id"], i["arguments"]) for i in out[-1]["response"]["output"]] == [("c1", "{}"), ("c2", "[]")]


# -- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [b'{"error":{"message":"boom"}}', b'{"object":"error","message":"boom","code":500}'])
def test_an_error_chunk_mid_stream_raises_and_the_error_event_follows_what_was_produced(error: bytes) -> None:
    t = StreamTranslator(REQUEST, "resp_s", 1)
    sent = events(t.feed(sse(delta(content="Hi"), done=False)))
    with pytest.raises(UpstreamServerError, match="boom"):
        t.feed(sse(delta(content=" there"), done=False) + b"data: " + error + b"\n\n")
    rest = events(t.error_event(UpstreamServerError("boom")))
    assert [e["type"] for e in rest] == ["response.output_text.delta", "error"]
    numbers = [e["sequence_number"] for e in sent + rest]
    assert numbers == list(range(len(numbers)))
    assert rest[-1] == {"type": "error", "code": "upstream_server_error",
                        "message": "the upstream answered with a server error", "param": None,
                        "sequence_number": numbers[-1]}
    assert t.feed(sse(delta(content="x"))) == b"" and t.close() == b"" and not t.done


def test_data_that_is_not_json_is_malformed() -> None:
    t = StreamTranslator(REQUEST, "resp_s", 1)
    with pytest.raises(UpstreamMalformed):
        t.feed(b"data: {not json\n\n")


def test_the_module_error_event_and_body() -> None:
    exc = UpstreamRateLimited("429 from upstream x")
    event = events(error_event(exc))[0]
    assert event == {"type": "error", "code": "upstream_rate_limited",
                     "message": "the upstream is limiting the rate of requests", "param": None, "sequence_number": 0}
    EVENTS.validate_python(event)
    bad = Untranslatable("nope", param="input.0.type")
    assert orjson.loads(error_body(bad)) == {"error": {"message": "nope", "type": "invalid_request_error",
                                                       "param": "input.0.type", "code": None}}


def test_the_sdk_yields_an_error_event_rather_than_raising() -> None:
    t = StreamTranslator(REQUEST, "resp_s", 1)
    body = t.feed(sse(delta(content="Hi"), done=False)) + t.error_event(UpstreamServerError("boom"))
    with pytest.raises(RuntimeError, match=r"response\.completed"):
        through_the_sdk(body)
    seen = list(sdk_client(body).responses.create(model="m", input="hi", stream=True))
    assert seen[-1].type == "error" and seen[-1].message == "the upstream answered with a server error"
