from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import (
    InvalidRequest,
    NanorouteError,
    PayloadTooLarge,
    UpstreamRateLimited,
    UpstreamServerError,
)
from gateway.protocols.anthropic import (
    StreamTranslator,
    Untranslatable,
    error_body,
    error_event,
    from_chat,
    status_type,
    to_chat,
)

PNG = "iVBORw0KGgo="


def request(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], **fields}


# -- to_chat -------------------------------------------------------------------------------------------------


def test_a_whole_conversation_with_images_and_tools_over_two_turns() -> None:
    body = {
        "model": "claude-sonnet-4",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Answer in French."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these pictures?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ]},
            {"role": "assistant", "content": "A cat and a dot."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris"},
                                         {"type": "text", "text": "and Rome?"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "two calls", "signature": "sig"},
                {"type": "redacted_thinking", "data": "xyz"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "no station"}, {"type": "text", "text": "retry later"}]},
                {"type": "text", "text": "Summarise."},
            ]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_3", "name": "noop", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3"}]},
        ],
        "stop_sequences": ["\n\nHuman:"],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 5,
        "stream": True,
        "metadata": {"user_id": "u-42"},
        "tools": [{"name": "weather", "description": "Current weather",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                  {"type": "custom", "name": "noop", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "service_tier": "auto",
        "container": "c-1",
        "mcp_servers": [],
        "anthropic_only_future_field": {"x": 1},
    }
    assert to_chat(body) == {
        "model": "claude-sonnet-4",
        "max_tokens": 1024,
        "messages": [
            {"role": "system", "content": "Be brief.\n\nAnswer in French."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these pictures?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ]},
            {"role": "assistant", "content": "A cat and a dot."},
            {"role": "user", "content": "Weather in Paris\n\nand Rome?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
                {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18 C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no station\n\nretry later"},
            {"role": "user", "content": "Summarise."},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "toolu_3", "type": "function", "function": {"name": "noop", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_3", "content": ""},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 5,
        "stream": True,
        "stop": ["\n\nHuman:"],
        "user": "u-42",
        "tools": [
            {"type": "function", "function": {"name": "weather", "description": "Current weather",
                                              "parameters": {"type": "object",
                                                             "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }


def test_a_minimal_request_sets_nothing_it_was_not_given() -> None:
    assert to_chat(request(system="", stop_sequences=[])) == {
        "model": "claude-x", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


def test_a_string_system_prompt_is_the_first_message() -> None:
    assert to_chat(request(system="Be brief."))["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"),
    ({"type": "any"}, "required"),
    ({"type": "none"}, "none"),
    ({"type": "tool", "name": "weather"}, {"type": "function", "function": {"name": "weather"}}),
])
def test_tool_choice(choice: dict[str, Any], expected: object) -> None:
    tools = [{"name": "weather", "input_schema": {"type": "object"}}]
    chat = to_chat(request(tools=tools, tool_choice=choice))
    assert chat["tool_choice"] == expected
    assert "parallel_tool_calls" not in chat


def test_disable_parallel_tool_use_on_any_choice() -> None:
    tools = [{"name": "weather", "input_schema": {"type": "object"}}]
    chat = to_chat(request(tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True}))
    assert (chat["tool_choice"], chat["parallel_tool_calls"]) == ("required", False)


def test_a_system_message_in_messages_stays_a_system_message() -> None:
    body = request(messages=[{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                             {"role": "user", "content": "hi"}])
    assert to_chat(body)["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def test_tool_choice_without_tools_is_not_sent() -> None:
    chat = to_chat(request(tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
    assert "tool_choice" not in chat and "parallel_tool_calls" not in chat and "tools" not in chat


def test_structured_output_becomes_a_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    chat = to_chat(request(output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "low"}))
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def test_a_turn_of_tool_results_alone_is_only_tool_messages() -> None:
    body = request(messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": [1]}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": [{"type": "text", "text": "ok"}]}]},
    ])
    assert to_chat(body)["messages"][1:] == [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":[1]}'}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "ok"},
    ]


def test_an_assistant_turn_of_thinking_alone_keeps_its_place() -> None:
    thinking = {"type": "thinking", "thinking": "t", "signature": "s"}
    body = request(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": [thinking]},
                             {"role": "user", "content": "b"}])
    assert [m["role"] for m in to_chat(body)["messages"]] == ["user", "assistant", "user"]
    assert to_chat(body)["messages"][1]["content"] == ""


def test_empty_text_blocks_add_no_blank_lines() -> None:
    body = request(system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": ""}], messages=[
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": ""}]},
        {"role": "assistant", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "hello"}]}])
    assert [m["content"] for m in to_chat(body)["messages"]] == ["Be brief.", "hi", "hello"]


def test_a_strict_tool_stays_strict() -> None:
    """`strict: true` asks for inputs that match the schema: vLLM holds a named tool's arguments to its schema
    only when the function says so."""
    schema = {"type": "object", "properties": {"queue": {"type": "string", "enum": ["billing"]}}}
    tools = [{"name": "f", "input_schema": schema, "strict": True, "cache_control": {"type": "ephemeral"}},
             {"name": "g", "input_schema": schema, "strict": False}, {"name": "h", "input_schema": schema}]
    assert [t["function"] for t in to_chat(request(tools=tools))["tools"]] == [
        {"name": "f", "parameters": schema, "strict": True}, {"name": "g", "parameters": schema, "strict": False},
        {"name": "h", "parameters": schema}]


def test_untranslatable_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_chat(request(model=""))
    assert isinstance(caught.value, Untranslatable)
    assert caught.value.status == 400


@pytest.mark.parametrize(("body", "param"), [
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "model"),
    (request(model=7), "model"),
    (request(max_tokens=None), "max_tokens"),
    (request(max_tokens=0), "max_tokens"),
    (request(max_tokens=True), "max_tokens"),
    (request(max_tokens="64"), "max_tokens"),
    (request(messages=[]), "messages"),
    (request(messages="hi"), "messages"),
    (request(messages=["hi"]), "messages.0"),
    (request(messages=[{"role": "tool", "content": "x"}]), "messages.0.role"),
    (request(messages=[{"role": "user"}]), "messages.0.content"),
    (request(messages=[{"role": "user", "content": [{"text": "no type"}]}]), "messages.0.content.0.type"),
    (request(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages.0.content.0.text"),
    (request(system=[{"type": "image"}]), "system.0.type"),
    (request(system=5), "system"),
    (request(stream="yes"), "stream"),
    (request(temperature="hot"), "temperature"),
    (request(stop_sequences="END"), "stop_sequences"),
    (request(metadata="u"), "metadata"),
    (request(tools={"name": "f"}), "tools"),
    (request(tools=[{"input_schema": {}}]), "tools.0.name"),
    (request(tools=[{"name": "f"}]), "tools.0.input_schema"),
    (request(tools=[{"name": "f", "input_schema": {}, "description": 3}]), "tools.0.description"),
    (request(tools=[{"name": "f", "input_schema": {}, "strict": "yes"}]), "tools.0.strict"),
    (request(tool_choice={"type": "tool"}), "tool_choice.name"),
    (request(tool_choice={"type": "sometimes"}), "tool_choice.type"),
    (request(tool_choice="auto"), "tool_choice.type"),
    (request(output_config={"format": {"type": "text"}}), "output_config.format"),
])
def test_invalid_bodies_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(Untranslatable) as caught:
        to_chat(body)
    assert caught.value.param == param


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return request(messages=[{"role": "user", "content": list(blocks)}])


def assistant(*blocks: dict[str, Any]) -> dict[str, Any]:
    return request(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": list(blocks)}])


@pytest.mark.parametrize(("body", "param", "words"), [
    (user({"type": "text", "text": "a"}, {"type": "document", "source": {"type": "text", "data": "x"}}),
     "messages.0.content.1.type", "'document'"),
    (user({"type": "search_result", "source": "s", "title": "t", "content": []}),
     "messages.0.content.0.type", "'search_result'"),
    (user({"type": "container_upload", "file_id": "f"}), "messages.0.content.0.type", "'container_upload'"),
    (user({"type": "thinking", "thinking": "t", "signature": "s"}), "messages.0.content.0.type", "'thinking'"),
    (assistant({"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}),
     "messages.1.content.0.type", "'server_tool_use'"),
    (assistant({"type": "web_search_tool_result", "tool_use_id": "s", "content": []}),
     "messages.1.content.0.type", "'web_search_tool_result'"),
    (assistant({"type": "image", "source": {"type": "url", "url": "u"}}), "messages.1.content.0.type", "'image'"),
    (user({"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "text", "text": "see"}, {"type": "image", "source": {"type": "url", "url": "u"}}]}),
     "messages.0.content.0.content.1.type", "'image'"),
    (user({"type": "image", "source": {"type": "file", "file_id": "file_1"}}),
     "messages.0.content.0.source.type", "'file'"),
    (user({"type": "image", "source": {"type": "base64", "data": PNG}}), "messages.0.content.0.source", "base64"),
    (user({"type": "tool_result", "content": "x"}), "messages.0.content.0.tool_use_id", "tool_use_id"),
    (assistant({"type": "tool_use", "id": "t", "name": "f", "input": "[]"}), "messages.1.content.0.input", "input"),
    (assistant({"type": "tool_use", "name": "f", "input": {}}), "messages.1.content.0.id", "id"),
])
def test_blocks_chat_completions_cannot_carry(body: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(Untranslatable) as caught:
        to_chat(body)
    assert caught.value.param == param
    assert words in caught.value.message


@pytest.mark.parametrize("tool_type", ["web_search_20250305", "bash_20250124", "computer_20250124",
                                       "text_editor_20250728", "code_execution_20250825"])
def test_server_tools_are_refused(tool_type: str) -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}, {"type": tool_type, "name": "server"}]
    with pytest.raises(Untranslatable) as caught:
        to_chat(request(tools=tools))
    assert caught.value.param == "tools.1.type"
    assert f"The tool type '{tool_type}' runs on Anthropic's servers" in caught.value.message


# -- from_chat -----------------------------------------------------------------------------------------------


def completion(message: dict[str, Any], finish: str | None = "stop", usage: Any = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-x",
                             "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    if usage is not None:
        reply["usage"] = usage
    return reply


def test_a_text_answer() -> None:
    reply = completion({"role": "assistant", "content": "Bonjour"},
                       usage={"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15})
    assert from_chat(reply, "msg_1") == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "gpt-x",
        "content": [{"type": "text", "text": "Bonjour"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 3},
    }


def test_tool_calls_after_the_text() -> None:
    reply = completion({"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "clock", "arguments": ""}},
        {"type": "function", "function": {"name": "bad", "arguments": '{"cut'}},
        {"id": "call_d", "type": "function", "function": {"name": "list", "arguments": "[1, 2]"}},
    ]}, finish="tool_calls")
    answer = from_chat(reply, "msg_2")
    assert answer["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_a", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_b", "name": "clock", "input": {}},
        {"type": "tool_use", "id": "msg_2_tool_2", "name": "bad", "input": {}},
        {"type": "tool_use", "id": "call_d", "name": "list", "input": {}},
    ]
    assert answer["stop_reason"] == "tool_use"


def test_no_text_block_for_empty_content() -> None:
    reply = completion({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, finish="tool_calls")
    assert [b["type"] for b in from_chat(reply, "m")["content"]] == ["tool_use"]
    assert from_chat(completion({"role": "assistant", "content": ""}), "m")["content"] == []


@pytest.mark.parametrize(("finish", "stop_reason"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("function_call", "tool_use"),
    ("content_filter", "refusal"), (None, "end_turn"), ("something_new", "end_turn"),
])
def test_finish_reasons(finish: str | None, stop_reason: str) -> None:
    assert from_chat(completion({"role": "assistant", "content": "x"}, finish), "m")["stop_reason"] == stop_reason


def test_a_tool_called_by_name_stops_for_tool_use() -> None:
    """OpenAI and vLLM finish a call of the tool named in `tool_choice` with `stop`; Anthropic's clients loop
    on `stop_reason: tool_use`."""
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    forced = completion({"role": "assistant", "content": "", "tool_calls": [call]}, "stop")
    assert from_chat(forced, "m")["stop_reason"] == "tool_use"
    cut = completion({"role": "assistant", "content": "", "tool_calls": [call]}, "length")
    assert from_chat(cut, "m")["stop_reason"] == "max_tokens"


def test_a_refusal_is_told_as_text() -> None:
    reply = completion({"role": "assistant", "content": None, "refusal": "I can't help with that."})
    assert from_chat(reply, "m")["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert from_chat(reply, "m")["stop_reason"] == "refusal"


def test_a_streamed_refusal_stops_for_refusal() -> None:
    stream = sse(chunk({"role": "assistant", "content": None}), chunk({"refusal": "I can't."}),
                 chunk({}, "stop")) + DONE
    out = events(translate([stream]))
    assert out[3][1]["delta"] == {"type": "text_delta", "text": "I can't."}
    assert out[-2][1]["delta"]["stop_reason"] == "refusal"


def test_missing_usage_counts_zero() -> None:
    assert from_chat(completion({"role": "assistant", "content": "x"}), "m")["usage"] == {
        "input_tokens": 0, "output_tokens": 0}


def test_cached_prompt_tokens_are_not_input_tokens() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 64}}
    assert from_chat(completion({"role": "assistant", "content": "x"}, usage=usage), "m")["usage"] == {
        "input_tokens": 36, "output_tokens": 5, "cache_read_input_tokens": 64}


def test_a_reply_without_choices_is_an_empty_message() -> None:
    answer = from_chat({"model": "gpt-x", "choices": []}, "m")
    assert (answer["content"], answer["stop_reason"]) == ([], "end_turn")


# -- StreamTranslator ----------------------------------------------------------------------------------------

DONE = b"data: [DONE]\n\n"


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-up",
            "choices": choices, **extra}


def sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)


USAGE = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
TEXT_STREAM = sse(
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({}, "stop"),
    chunk(None, usage=USAGE),
) + DONE

TOOL_STREAM = b": keep-alive\n\n" + sse(
    chunk({"role": "assistant", "content": None}),
    chunk({"content": "Checking."}),
    chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                           "function": {"name": "weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                           "function": {"name": "clock", "arguments": '{"tz":'}}]}),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": ' "CET"}'}}]}),
    chunk({}, "tool_calls"),
    chunk(None, usage=USAGE),
) + DONE


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Anthropic SSE bytes as (event name, data) pairs; each event's name must match its data's type."""
    assert raw.endswith(b"\n\n")
    parsed = []
    for event in raw[:-2].split(b"\n\n"):
        name, data = event.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        body = orjson.loads(data[6:])
        assert body["type"] == name[7:].decode()
        parsed.append((name[7:].decode(), body))
    return parsed


def translate(parts: list[bytes], translator: StreamTranslator | None = None) -> bytes:
    translator = translator or StreamTranslator("msg_s", "claude-x")
    return b"".join(translator.feed(p) for p in parts) + translator.close()


def test_a_text_stream() -> None:
    translator = StreamTranslator("msg_s", "claude-x")
    out = translate([TEXT_STREAM], translator)
    assert events(out) == [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_s", "type": "message", "role": "assistant", "model": "gpt-up", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        ("ping", {"type": "ping"}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hel"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "lo"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"input_tokens": 11, "output_tokens": 4}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    assert translator.done
    assert translator.usage == USAGE


def test_text_then_two_tool_calls_in_fragments() -> None:
    out = events(translate([TOOL_STREAM]))
    assert [name for name, _ in out] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]
    assert out[5][1] == {"type": "content_block_start", "index": 1,
                         "content_block": {"type": "tool_use", "id": "call_a", "name": "weather", "input": {}}}
    assert out[9][1]["content_block"] == {"type": "tool_use", "id": "call_b", "name": "clock", "input": {}}
    fragments: dict[int, str] = {}
    for name, data in out:
        if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta":
            fragments[data["index"]] = fragments.get(data["index"], "") + data["delta"]["partial_json"]
    assert {i: orjson.loads(s) for i, s in fragments.items()} == {1: {"city": "Paris"}, 2: {"tz": "CET"}}
    assert [d["index"] for n, d in out if n == "content_block_stop"] == [0, 1, 2]
    assert out[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_a_streamed_call_of_a_named_tool_stops_for_tool_use() -> None:
    stream = TOOL_STREAM.replace(b'"finish_reason":"tool_calls"', b'"finish_reason":"stop"')
    assert stream != TOOL_STREAM
    assert events(translate([stream]))[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_events_go_out_as_soon_as_their_chunk_is_complete() -> None:
    translator = StreamTranslator("m", "claude-x")
    first = events(translator.feed(sse(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi"}))))
    assert [n for n, _ in first] == ["message_start", "ping", "content_block_start", "content_block_delta"]
    assert translator.feed(sse(chunk({}, "stop"))) == b""  # the stop waits for the usage chunk
    last = events(translator.feed(sse(chunk(None, usage=USAGE))))
    assert [n for n, _ in last] == ["content_block_stop", "message_delta", "message_stop"]
    assert translator.done
    assert translator.feed(DONE) == b"" and translator.close() == b""


@pytest.mark.parametrize("stream", [TEXT_STREAM, TOOL_STREAM], ids=["text", "tools"])
def test_the_same_events_wherever_the_input_is_split(stream: bytes) -> None:
    whole = translate([stream])
    for cut in range(1, len(stream)):
        assert translate([stream[:cut], stream[cut:]]) == whole, cut
    assert translate([stream[i:i + 1] for i in range(len(stream))]) == whole


def test_crlf_separators() -> None:
    crlf = TOOL_STREAM.replace(b"\n", b"\r\n")
    whole = translate([TOOL_STREAM])
    assert translate([crlf]) == whole
    assert translate([crlf[i:i + 1] for i in range(len(crlf))]) == whole


def test_close_without_done_ends_the_message() -> None:
    translator = StreamTranslator("m", "claude-x")
    out = translator.feed(sse(chunk({"content": "partial"})))
    assert not translator.done
    closing = events(translator.close())
    assert [n for n, _ in closing] == ["content_block_stop", "message_delta", "message_stop"]
    assert closing[1][1]["delta"]["stop_reason"] == "end_turn"
    assert closing[1][1]["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert translator.done
    assert translator.close() == b""
    assert events(out)[0][0] == "message_start"


def test_close_after_the_finish_without_a_usage_chunk_keeps_the_stop_reason() -> None:
    translator = StreamTranslator("m", "claude-x")
    translator.feed(sse(chunk({"content": "long"}), chunk({}, "length")))
    assert events(translator.close())[-2][1]["delta"]["stop_reason"] == "max_tokens"


def test_done_without_a_usage_chunk_ends_the_message() -> None:
    translator = StreamTranslator("m", "claude-x")
    out = events(translator.feed(sse(chunk({"content": "x"}), chunk({}, "stop")) + DONE))
    assert [n for n, _ in out][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert translator.done and translator.usage is None


def test_an_unterminated_last_event_is_read_on_close() -> None:
    translator = StreamTranslator("m", "claude-x")
    translator.feed(sse(chunk({"content": "x"}, "stop")))
    assert translator.feed(b"data: " + orjson.dumps(chunk(None, usage=USAGE))) == b""
    out = events(translator.close())
    assert out[-2][1]["usage"] == {"input_tokens": 11, "output_tokens": 4}


def test_an_empty_stream_still_makes_a_whole_message() -> None:
    translator = StreamTranslator("m", "claude-x")
    out = events(translator.close())
    assert [n for n, _ in out] == ["message_start", "ping", "message_delta", "message_stop"]
    assert out[0][1]["message"]["model"] == "claude-x"


def test_role_only_empty_and_reasoning_deltas_make_no_blocks() -> None:
    stream = sse(chunk({"role": "assistant"}), chunk({"content": ""}), chunk({"reasoning_content": "hmm"}),
                 chunk({"reasoning": "hmm"}), chunk({}, "stop"), chunk(None, usage=USAGE)) + DONE
    assert [n for n, _ in events(translate([stream]))] == ["message_start", "ping", "message_delta", "message_stop"]


def test_usage_inside_content_chunks_is_kept_until_the_last() -> None:
    stream = sse(chunk({"content": "a"}, usage={"prompt_tokens": 3, "completion_tokens": 1}),
                 chunk({"content": "b"}, "stop", usage={"prompt_tokens": 3, "completion_tokens": 2}),
                 {"choices": None, "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                             "prompt_tokens_details": {"cached_tokens": 2}}}) + DONE
    translator = StreamTranslator("m", "claude-x")
    out = events(translate([stream], translator))
    assert out[-2][1]["usage"] == {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 2}
    assert translator.usage is not None and translator.usage["prompt_tokens_details"] == {"cached_tokens": 2}


def test_text_after_a_tool_call_opens_a_new_block() -> None:
    stream = sse(chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}),
                 chunk({"content": "done"}), chunk({}, "stop")) + DONE
    starts = [d["content_block"]["type"] for n, d in events(translate([stream])) if n == "content_block_start"]
    assert starts == ["tool_use", "text"]


def test_tool_calls_without_an_index_are_told_apart_by_id() -> None:
    stream = sse(chunk({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": '{"x":1}'}},
                                       {"id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
                 chunk({}, "tool_calls")) + DONE
    out = events(translate([stream]))
    starts = [(d["index"], d["content_block"]["id"]) for n, d in out if n == "content_block_start"]
    assert starts == [(0, "a"), (1, "b")]


def test_comments_other_fields_and_bad_json_are_passed_over() -> None:
    stream = b": hello\nid: 1\nretry: 10\n\ndata: {not json\n\n" + TEXT_STREAM
    assert translate([stream]) == translate([TEXT_STREAM])


# -- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (405, "invalid_request_error"), (413, "request_too_large"),
    (429, "rate_limit_error"), (500, "api_error"), (502, "api_error"), (503, "overloaded_error"),
    (504, "api_error"), (529, "overloaded_error"),
])
def test_status_types(status: int, kind: str) -> None:
    assert status_type(status) == kind


def rate_limited() -> NanorouteError:
    return UpstreamRateLimited("backend a at 10.0.0.1 said slow down", model="m")


@pytest.mark.parametrize(("exc", "kind", "message"), [
    (InvalidRequest("bad field", param="x"), "invalid_request_error", "bad field"),
    (PayloadTooLarge("too big"), "request_too_large", "too big"),
    (rate_limited(), "rate_limit_error", "the upstream is limiting the rate of requests"),
    (UpstreamServerError("boom at 10.0.0.1"), "api_error", "the upstream answered with a server error"),
])
def test_error_body(exc: NanorouteError, kind: str, message: str) -> None:
    assert orjson.loads(error_body(exc)) == {"type": "error", "error": {"type": kind, "message": message}}


def test_error_body_for_401_and_503() -> None:
    unauthorized = NanorouteError("no key")
    unauthorized.status = 401
    unavailable = NanorouteError("busy")
    unavailable.status = 503
    assert orjson.loads(error_body(unauthorized))["error"]["type"] == "authentication_error"
    assert orjson.loads(error_body(unavailable))["error"] == {"type": "overloaded_error", "message": "busy"}


def test_error_event() -> None:
    exc = UpstreamServerError("boom")
    assert error_event(exc) == b"event: error\ndata: " + error_body(exc) + b"\n\n"
    assert events(error_event(exc)) == [("error", {"type": "error", "error": {
        "type": "api_error", "message": "the upstream answered with a server error"}})]


# -- the Anthropic SDK reads what comes out ------------------------------------------------------------------


def sdk_client(status: int, body: bytes, content_type: str) -> Any:
    anthropic = pytest.importorskip("anthropic")
    httpx2 = pytest.importorskip("httpx2")

    def handler(_: Any) -> Any:
        return httpx2.Response(status, content=body, headers={"content-type": content_type})

    return anthropic.Anthropic(api_key="k", base_url="http://gateway.test", max_retries=0,
                               http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def test_the_sdk_accumulates_the_stream_into_a_message() -> None:
    client = sdk_client(200, translate([TOOL_STREAM]), "text/event-stream")
    with client.messages.stream(model="claude-x", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
        texts = list(s.text_stream)
        message = s.get_final_message()
    assert texts == ["Checking."]
    assert message.id == "msg_s" and message.model == "gpt-up"
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[1].input == {"city": "Paris"} and message.content[1].id == "call_a"
    assert message.content[2].name == "clock" and message.content[2].input == {"tz": "CET"}
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 4)


def test_the_sdk_reads_a_whole_answer() -> None:
    reply = completion({"role": "assistant", "content": "Hi", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]},
        "tool_calls", usage={"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}})
    client = sdk_client(200, orjson.dumps(from_chat(reply, "msg_w")), "application/json")
    message = client.messages.create(model="claude-x", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "Hi" and message.content[1].input == {"a": 1}
    usage = message.usage
    assert (message.stop_reason, usage.input_tokens, usage.cache_read_input_tokens) == ("tool_use", 5, 4)


def test_the_sdk_raises_the_error_types() -> None:
    anthropic = pytest.importorskip("anthropic")
    client = sdk_client(429, error_body(rate_limited()), "application/json")
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="claude-x", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    translator = StreamTranslator("m", "claude-x")
    stream = translator.feed(sse(chunk({"content": "x"}))) + error_event(UpstreamServerError("boom"))
    client = sdk_client(200, stream, "text/event-stream")
    events_seen = []
    with pytest.raises(anthropic.APIStatusError) as failed:
        for event in client.messages.create(model="claude-x", max_tokens=64, stream=True,
                                            messages=[{"role": "user", "content": "hi"}]):
            events_seen.append(event.type)
    assert events_seen == ["message_start", "content_block_start", "content_block_delta"]
    assert failed.value.body["error"]["message"] == "the upstream answered with a server error"
