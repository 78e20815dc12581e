"""The Responses API's conversations in a real redis-server that two gateways ("replicas") share, through the
official `openai` SDK: a conversation goes on through either gateway; a Redis that is down fails only the turns
that need it, and the gateway works again once it is back."""

from __future__ import annotations

import logging
from pathlib import Path

import openai
import pytest
import redis

from tests.api.support import Client, single_model
from tests.api.test_responses import text
from tests.conftest import StartRedis
from tests.fakes.redis import RedisServer
from tests.fakes.servers import Servers

ALICE, BOB = "sk-alice-key-0123456789", "sk-bob-key-0123456789"
KEYS = f"alice={ALICE},bob={BOB}"
TTL_S = 3600


def drain(servers: Servers, index: int) -> None:
    """Wait for gateway `index`'s queued writes: a turn is written as its answer goes out, not before."""
    turns = servers.app_of(index).turns
    assert turns is not None
    servers.loop.run(turns.drain())


def test_a_conversation_goes_on_through_either_replica(servers: Servers, client: Client,
                                                       redis_server: RedisServer, tmp_path: Path) -> None:
    up = servers.upstream("m")
    a = servers.gateway(single_model(up), api_keys=KEYS, redis_url=redis_server.url, data_dir=tmp_path / "a",
                        responses_ttl_s=TTL_S)
    b = servers.gateway(single_model(up), api_keys=KEYS, redis_url=redis_server.url, data_dir=tmp_path / "b",
                        responses_ttl_s=TTL_S)
    first = client(a, api_key=ALICE).responses.create(model="m", instructions="Be brief.", input="My name is Ada.")
    # At once on the other replica: its write may still be on its way (Turns.load waits a little for it).
    second = client(b, api_key=ALICE).responses.create(model="m", input="What is my name?",
                                                       previous_response_id=first.id)
    drain(servers, 1)
    client(a, api_key=ALICE).responses.create(model="m", input="And again?", previous_response_id=second.id)
    assert [(m["role"], text(m["content"])) for m in up.served[1].body["messages"]] == [
        ("user", "My name is Ada."), ("assistant", "Hello from the fake upstream."), ("user", "What is my name?")]
    assert [text(m["content"]) for m in up.served[2].body["messages"]] == [
        "My name is Ada.", "Hello from the fake upstream.", "What is my name?", "Hello from the fake upstream.",
        "And again?"]
    with pytest.raises(openai.BadRequestError) as other_key:  # another key cannot read it, on either replica
        client(b, api_key=BOB).responses.create(model="m", input="?", previous_response_id=first.id)
    assert other_key.value.code == "previous_response_not_found"
    with redis.Redis.from_url(redis_server.url) as other:
        stored = other.keys("nanoroute:responses:*")
        assert len(stored) == 3
        assert all(TTL_S * 1000 - 60_000 < other.pttl(k) <= TTL_S * 1000 for k in stored)
    # Neither gateway opened the SQLite file: what they share is Redis.
    assert not (tmp_path / "a" / "state.db").exists() and not (tmp_path / "b" / "state.db").exists()


def test_a_redis_that_is_down_fails_the_turn_that_needs_it_and_the_gateway_recovers(
        servers: Servers, client: Client, start_redis: StartRedis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger's records, tracebacks included, are searched for the password
    password = "s3cret-Pa55word"
    server = start_redis(password=password)
    up = servers.upstream("m")
    sdk = client(servers.gateway(single_model(up), redis_url=server.url))
    first = sdk.responses.create(model="m", input="One.")
    drain(servers, 0)
    server.kill()
    unsaved = sdk.responses.create(model="m", input="Answered; its turn cannot be kept.")  # the write is logged
    assert unsaved.output_text == "Hello from the fake upstream."
    with pytest.raises(openai.InternalServerError) as down:  # within the store's timeouts: the SDK waits 10 s
        sdk.responses.create(model="m", input="Two.", previous_response_id=first.id)
    assert password not in down.value.response.text
    server.start()
    again = sdk.responses.create(model="m", input="Two.", previous_response_id=first.id)
    assert again.output_text == "Hello from the fake upstream."
    assert [text(m["content"]) for m in up.served[-1].body["messages"]] == [
        "One.", "Hello from the fake upstream.", "Two."]
    logged = caplog.text + "".join(logging.Formatter().format(r) for r in caplog.records)
    assert "failed to write" in logged and f":***@127.0.0.1:{server.port}" in logged  # the store logged, masked
    assert password not in logged


def test_a_redis_that_is_down_is_a_503_storage_unavailable(servers: Servers, client: Client,
                                                           redis_server: RedisServer) -> None:
    up = servers.upstream("m")
    sdk = client(servers.gateway(single_model(up), redis_url=redis_server.url))
    redis_server.kill()
    with pytest.raises(openai.InternalServerError) as down:
        sdk.responses.create(model="m", input="Two.", previous_response_id="resp_0123")
    assert down.value.status_code == 503 and down.value.code == "storage_unavailable"
    assert down.value.message.endswith("The gateway's store failed to read; try again later")


def test_a_gateway_started_while_redis_is_down_serves_and_recovers(servers: Servers, client: Client,
                                                                    redis_server: RedisServer) -> None:
    redis_server.kill()
    up = servers.upstream("m")
    sdk = client(servers.gateway(single_model(up), redis_url=redis_server.url))  # starts all the same
    assert sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).choices
    with pytest.raises(openai.InternalServerError) as down:
        sdk.responses.create(model="m", input="?", previous_response_id="resp_0123")
    assert (down.value.status_code, down.value.code) == (503, "storage_unavailable")
    redis_server.start()
    first = sdk.responses.create(model="m", input="One.")
    drain(servers, 0)
    sdk.responses.create(model="m", input="Two.", previous_response_id=first.id)
    assert [text(m["content"]) for m in up.served[-1].body["messages"]] == [
        "One.", "Hello from the fake upstream.", "Two."]
