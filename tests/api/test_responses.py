"""POST /v1/responses through the official `openai` SDK and the OpenAI Agents SDK: translated for models
that speak chat completions, passed through to one that speaks the Responses API, with the gateway's
own store behind `previous_response_id`."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.api.support import Client, single_model
from tests.fakes.servers import Servers

TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_create_is_translated_for_a_chat_upstream(servers: Servers, client: Client) -> None:
    up = servers.upstream("m")
    sdk = client(servers.gateway(single_model(up)))
    raw = sdk.responses.with_raw_response.create(model="m", instructions="Be brief.", input="hi",
                                                 max_output_tokens=40, temperature=0.2, metadata={"task": "greet"})
    response = raw.parse()
    assert response.output_text == "Hello from the fake upstream."
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.usage is not None and response.usage.input_tokens == 7 and response.usage.output_tokens == 5
    assert raw.headers["x-nanoroute-model"] == "m"
    sent = up.served[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert sent.body["max_tokens"] == 40 and sent.body["temperature"] == 0.2
    assert "metadata" not in sent.body and "store" not in sent.body


def test_stream_has_the_responses_event_sequence(servers: Servers, client: Client) -> None:
    up = servers.upstream("m")
    sdk = client(servers.gateway(single_model(up)))
    with sdk.responses.stream(model="m", input="hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_item.added" in kinds and "response.output_text.delta" in kinds
    assert kinds[-1] == "response.completed"
    assert final.output_text == "tok0 tok1 tok2 "
    assert final.usage is not None and final.usage.output_tokens == 3


class Weather(BaseModel):
    city: str
    celsius: int


def test_parse_asks_for_the_schema(servers: Servers, client: Client) -> None:
    up = servers.upstream("m", answer='{"city": "Paris", "celsius": 18}')
    sdk = client(servers.gateway(single_model(up)))
    parsed = sdk.responses.parse(model="m", input="Weather in Paris?", text_format=Weather)
    assert parsed.output_parsed == Weather(city="Paris", celsius=18)
    fmt = up.served[0].body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Weather"
    assert fmt["json_schema"]["schema"]["properties"]["celsius"]["type"] == "integer"


@pytest.mark.parametrize("stream", [False, True])
def test_function_tools_over_two_turns(servers: Servers, client: Client, stream: bool) -> None:
    up = servers.upstream("m", tools=True)
    sdk = client(servers.gateway(single_model(up)))
    if stream:
        with sdk.responses.stream(model="m", input="Weather in Paris?", tools=[TOOL]) as s:  # type: ignore[list-item]
            first = s.get_final_response()
    else:
        first = sdk.responses.create(model="m", input="Weather in Paris?", tools=[TOOL])  # type: ignore[list-item]
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather" and call.arguments == '{"city": "Paris"}'
    second = sdk.responses.create(model="m", tools=[TOOL], input=[  # type: ignore[list-item]
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "18C"}])
    assert second.output_text == "The tool said: 18C"
    assert up.served[1].body["messages"][-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "18C"}


def text(content: str | list[dict[str, str]]) -> str:
    """A chat message's text, whether a string or text parts."""
    return content if isinstance(content, str) else "".join(p["text"] for p in content)


def test_previous_response_id_continues_from_the_store(servers: Servers, client: Client, http: httpx.Client) -> None:
    up = servers.upstream("m")
    keys = "alice=sk-alice-key-0123456789,bob=sk-bob-key-0123456789"
    base = servers.gateway(single_model(up), api_keys=keys)
    alice = client(base, api_key="sk-alice-key-0123456789")
    first = alice.responses.create(model="m", instructions="Be brief.", input="My name is Ada.")
    second = alice.responses.create(model="m", input="What is my name?", previous_response_id=first.id)
    assert second.output_text == "Hello from the fake upstream."
    assert [(m["role"], text(m["content"])) for m in up.served[1].body["messages"]] == [
        ("user", "My name is Ada."), ("assistant", "Hello from the fake upstream."), ("user", "What is my name?")]
    with pytest.raises(openai.BadRequestError) as other_key:  # another key cannot read it, even with the id
        client(base, api_key="sk-bob-key-0123456789").responses.create(
            model="m", input="?", previous_response_id=first.id)
    assert other_key.value.code == "previous_response_not_found"
    # what the client asked, echoed: not the stateless body a native upstream would get
    assert (first.store, first.previous_response_id, first.metadata) == (True, None, {})
    assert (second.store, second.previous_response_id) == (True, first.id)
    with alice.responses.stream(model="m", input="And now?", previous_response_id=second.id,
                                metadata={"team": "support"}) as stream:
        streamed = [e.response for e in stream if e.type in ("response.created", "response.completed")]
    assert [(r.store, r.previous_response_id, r.metadata) for r in streamed] == [
        (True, second.id, {"team": "support"})] * 2
    unstored = alice.responses.create(model="m", input="Forget this.", store=False)
    assert unstored.store is False
    with pytest.raises(openai.BadRequestError):
        alice.responses.create(model="m", input="?", previous_response_id=unstored.id)


def test_the_store_survives_a_restart(servers: Servers, client: Client, tmp_path: Any) -> None:
    up = servers.upstream("m")
    first = client(servers.gateway(single_model(up), data_dir=tmp_path)).responses.create(model="m", input="One.")
    servers.loop.run(servers.app_of(-1).turns.drain())  # type: ignore[union-attr]
    again = client(servers.gateway(single_model(up), data_dir=tmp_path))
    again.responses.create(model="m", input="Two.", previous_response_id=first.id)
    sent = [text(m["content"]) for m in up.served[1].body["messages"]]
    assert sent == ["One.", "Hello from the fake upstream.", "Two."]


def test_previous_response_id_is_refused_when_the_store_is_off(servers: Servers, client: Client) -> None:
    up = servers.upstream("m")
    sdk = client(servers.gateway(single_model(up), responses_store=False))
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="m", input="?", previous_response_id="resp_123")
    assert refused.value.param == "previous_response_id"
    assert sdk.responses.create(model="m", input="hi").output_text == "Hello from the fake upstream."


def test_builtin_tools_are_refused_for_a_chat_model(servers: Servers, client: Client) -> None:
    up = servers.upstream("m")
    sdk = client(servers.gateway(single_model(up)))
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="m", input="news?", tools=[TOOL, {"type": "web_search"}])
    assert "web_search" in refused.value.message
    assert (refused.value.param, refused.value.code) == ("tools.1.type", "unsupported_by_model")
    assert up.served == []


@pytest.mark.parametrize(("field", "value"), [("conversation", "conv_123"), ("prompt", {"id": "pmpt_123"})])
def test_what_openai_keeps_is_refused_for_a_chat_model(servers: Servers, client: Client, field: str,
                                                       value: Any) -> None:
    """A conversation or a saved prompt lives on OpenAI's servers: a translated model would answer without
    it, unknown to the client."""
    up = servers.upstream("m")
    sdk = client(servers.gateway(single_model(up)))
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="m", input="What did I say?", extra_body={field: value})
    assert refused.value.param == field and "OpenAI's servers" in refused.value.message
    assert up.served == []


def test_background_is_refused(servers: Servers, client: Client) -> None:
    up = servers.upstream("m")
    sdk = client(servers.gateway(single_model(up)))
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="m", input="hi", background=True)
    assert refused.value.param == "background"
    assert sdk.responses.create(model="m", input="hi", background=False).background is False
    assert len(up.served) == 1


NATIVE = """
backends:
  openai: {{type: openai, url: {url}, native: [responses]}}
models:
  big: {{backend: openai, name: gpt-5}}
"""


@pytest.mark.parametrize("stream", [False, True])
def test_native_upstream_gets_the_request_as_sent(servers: Servers, client: Client, stream: bool) -> None:
    up = servers.upstream("big", answer="Native answer.")
    sdk = client(servers.gateway(NATIVE.format(url=up.url)))
    tools: Any = [{"type": "web_search"}]
    if stream:
        with sdk.responses.stream(model="big", input="news?", tools=tools, reasoning={"effort": "low"},
                                  metadata={"task": "news"}) as s:
            kinds = [e.type for e in s]
            final = s.get_final_response()
        assert kinds[-1] == "response.completed"
    else:
        final = sdk.responses.create(model="big", input="news?", tools=tools, reasoning={"effort": "low"},
                                     metadata={"task": "news"})
    assert final.output_text == "Native answer."
    sent = up.served[0]
    assert sent.path == "/v1/responses"
    assert sent.body["model"] == "gpt-5" and sent.body["tools"] == tools and sent.body["reasoning"] == {"effort": "low"}
    assert sent.body["store"] is False  # the gateway keeps the conversation itself
    assert "metadata" not in sent.body  # it tags what OpenAI stores, and nothing is
    follow = sdk.responses.create(model="big", input="more?", previous_response_id=final.id)
    assert follow.output_text == "Native answer."
    assert up.served[1].body["input"][:2] == [  # without ids: with store false, OpenAI would look them up
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "news?"}]},
        {"type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Native answer.", "annotations": []}]}]
    assert "previous_response_id" not in up.served[1].body


def test_reasoning_items_go_natively_only_with_their_encrypted_content(servers: Servers, client: Client) -> None:
    up = servers.upstream("big", answer="Native answer.")
    sdk = client(servers.gateway(NATIVE.format(url=up.url)))
    items: Any = [
        {"role": "user", "content": "Plan it."},
        {"type": "reasoning", "id": "rs_1", "summary": []},  # stored by OpenAI: unknown with store false
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAAA-opaque"},
        {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Done.", "annotations": []}]},
        {"role": "user", "content": "Next?"}]
    sdk.responses.create(model="big", input=items, reasoning={"effort": "low"})
    sent = up.served[0].body
    assert sent["input"] == [items[0], {"type": "reasoning", "summary": [], "encrypted_content": "gAAAA-opaque"},
                             {k: v for k, v in items[3].items() if k != "id"}, items[4]]
    assert sent["include"] == ["reasoning.encrypted_content"]  # so the next turn can carry this one's


def test_agents_sdk_runs_a_tool_using_agent(servers: Servers) -> None:
    agents = pytest.importorskip("agents")
    default = agents.models.get_default_model()  # what an agent with no model asks for
    up = servers.upstream(default, tools=True)
    base = servers.gateway(single_model(up, model=default))
    seen: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"18C in {city}"

    async def run() -> Any:
        async with openai.AsyncOpenAI(base_url=base, api_key="sk-client", max_retries=0) as sdk:
            agents.set_default_openai_client(sdk, use_for_tracing=False)  # the SDK's default: the Responses API
            agent = agents.Agent(name="weather", instructions="Answer with the tool.", tools=[get_weather])
            first = await agents.Runner.run(agent, "Weather in Paris?")
            again = [*first.to_input_list(), {"role": "user", "content": "And tomorrow?"}]
            return first, await agents.Runner.run(agent, again)  # the next turn, with the whole history

    agents.set_tracing_disabled(True)
    first, second = asyncio.run(run())
    assert seen == ["Paris", "Paris"]
    assert first.final_output == second.final_output == "The tool said: 18C in Paris"
    assert [s.path for s in up.served] == ["/v1/chat/completions"] * 4
    history = up.served[2].body["messages"]  # the second turn's first call: the first turn's items translated
    assert [m["role"] for m in history] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert history[3]["content"] == "18C in Paris" and history[-1]["content"] == "And tomorrow?"


def test_a_store_that_does_not_open_leaves_the_rest_serving(servers: Servers, client: Client,
                                                            tmp_path: Any) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    up = servers.upstream("m")
    sdk = client(servers.gateway(single_model(up), store_path=blocked / "state.db"))
    assert sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).choices
    first = sdk.responses.create(model="m", input="hi")  # answered; it cannot be stored
    assert first.output_text == "Hello from the fake upstream."
    with pytest.raises(openai.InternalServerError) as down:
        sdk.responses.create(model="m", input="?", previous_response_id=first.id)
    assert (down.value.status_code, down.value.code) == (503, "storage_unavailable")
    assert str(blocked) not in down.value.message  # where it is kept is the operator's to know


def test_a_stored_response_is_read_back_listed_and_deleted(servers: Servers, client: Client) -> None:
    """`responses.retrieve`, `input_items.list` and `delete` on the gateway's store, for the key that made
    the response; another key, like an unknown or deleted id, gets OpenAI's 404."""
    up = servers.upstream("m")
    keys = "alice=sk-alice-key-0123456789,bob=sk-bob-key-0123456789"
    base = servers.gateway(single_model(up), api_keys=keys)
    alice, bob = client(base, api_key="sk-alice-key-0123456789"), client(base, api_key="sk-bob-key-0123456789")
    first = alice.responses.create(model="m", instructions="Be brief.", input="My name is Ada.")
    second = alice.responses.create(model="m", input=[{"role": "user", "content": "And mine?"}],
                                    previous_response_id=first.id, metadata={"team": "support"})
    again = alice.responses.retrieve(second.id)
    assert again.model_dump() == second.model_dump()  # as it was answered
    items = alice.responses.input_items.list(second.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [  # type: ignore[union-attr]
        ("message", "user", "And mine?"), ("message", "assistant", "Hello from the fake upstream."),
        ("message", "user", "My name is Ada.")]  # newest first: this turn's input, then the earlier turn
    assert len({i.id for i in items.data}) == 3 and items.has_more is False
    page = alice.responses.input_items.list(second.id, order="asc", limit=1, after=items.data[2].id)
    assert [i.id for i in page.data] == [items.data[1].id] and page.has_more is True
    assert alice.responses.input_items.list(second.id).data[0].id == items.data[0].id  # the same ids each time
    for who, rid in ((bob, second.id), (alice, "resp_unknown")):
        with pytest.raises(openai.NotFoundError) as missing:
            who.responses.retrieve(rid)
        assert missing.value.body == {"message": f"Response with id '{rid}' not found.",  # OpenAI's words
                                      "type": "invalid_request_error", "param": None, "code": None}
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(second.id)
    alice.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        alice.responses.retrieve(second.id)
    with pytest.raises(openai.BadRequestError) as gone:
        alice.responses.create(model="m", input="?", previous_response_id=second.id)
    assert gone.value.code == "previous_response_not_found"
    assert alice.responses.retrieve(first.id).id == first.id  # the earlier turn is kept


def test_nothing_is_read_back_when_the_store_is_off(servers: Servers, client: Client) -> None:
    up = servers.upstream("m")
    sdk = client(servers.gateway(single_model(up), responses_store=False))
    answered = sdk.responses.create(model="m", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(answered.id)
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.responses.input_items.list(answered.id, limit=500)
    assert bad.value.status_code == 400


def test_input_tokens_are_counted_by_the_gateway(servers: Servers, client: Client) -> None:
    up = servers.upstream("m")
    sdk = client(servers.gateway(single_model(up)))
    short = sdk.responses.input_tokens.count(model="m", input="hi")
    long = sdk.responses.input_tokens.count(model="m", input="hello there " * 50, instructions="Be brief.")
    assert short.object == "response.input_tokens" and 0 < short.input_tokens < long.input_tokens
    first = sdk.responses.create(model="m", input="hello there " * 50)
    continued = sdk.responses.input_tokens.count(model="m", input="hi", previous_response_id=first.id)
    assert continued.input_tokens > long.input_tokens - 10  # the earlier turn counts too
    assert len(up.served) == 1  # only the response asked the upstream
    with pytest.raises(openai.NotFoundError):
        sdk.responses.input_tokens.count(model="nope", input="hi")
