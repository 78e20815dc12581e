"""The `cascade` strategy through a real gateway: cheaper answers are checked, failures escalate."""

from __future__ import annotations

import httpx
import pytest

from tests.api.support import Client
from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream

MSG = [{"role": "user", "content": "Extract the invoice number from: invoice 42, due Monday."}]
JSON = {"type": "json_object"}


def config(small: FakeUpstream, big: FakeUpstream, cascade: str = "{}") -> str:
    return f"""
backends:
  s: {{type: openai, url: {small.url}}}
  b: {{type: openai, url: {big.url}}}
models:
  small: {{backend: s, price: {{input: 0.1, output: 0.1}}}}
  big:   {{backend: b, price: {{input: 5.0, output: 15.0}}}}
policies:
  - {{name: extract, match: {{task: extract}}, strategy: cascade, candidates: [big, small], cascade: {cascade}}}
"""


def metric(base: str, name: str) -> float:
    for line in httpx.get(base.removesuffix("/v1") + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def ask(client: Client, base: str, **kwargs: object) -> tuple[dict[str, str], str]:
    raw = client(base).chat.completions.with_raw_response.create(
        model="any", messages=MSG, extra_headers={"X-Nanoroute-Task": "extract"}, **kwargs)  # type: ignore[arg-type]
    return dict(raw.headers), raw.parse().choices[0].message.content or ""


def test_a_good_cheap_answer_is_kept(client: Client, servers: Servers) -> None:
    small, big = servers.upstream("small", answer='{"invoice_number": 42}'), servers.upstream("big")
    base = servers.gateway(config(small, big))
    headers, text = ask(client, base, response_format=JSON)
    assert (headers["x-nanoroute-model"], headers["x-nanoroute-reason"]) == ("small", "cascade")
    assert text == '{"invoice_number": 42}'
    assert len(small.seen) == 1 and not big.seen  # the cheaper model is tried first, whatever the order written


@pytest.mark.parametrize(("answer", "cascade", "check"), [
    ("Invoice 42", "{}", "json"),  # JSON was asked for; this is not JSON
    ("I'm sorry, but I can't help with that.", "{json: false}", "refusal"),
    ("", "{json: false}", "refusal"),
    ('{"total": 3}', "{regex: 'invoice_number'}", "regex"),
    ('{"invoice_number": 42}', "{min_mean_logprob: -0.5}", "logprob"),  # no logprobs: no confidence
])
def test_a_failed_check_escalates_to_the_next_model(
    client: Client, servers: Servers, answer: str, cascade: str, check: str
) -> None:
    small = servers.upstream("small", answer=answer)
    big = servers.upstream("big", answer='{"invoice_number": 42}')
    base = servers.gateway(config(small, big, cascade))
    headers, text = ask(client, base, response_format=JSON)
    assert (headers["x-nanoroute-model"], headers["x-nanoroute-reason"]) == ("big", "cascade_escalated")
    assert headers["x-nanoroute-fallbacks"] == "1"
    assert text == '{"invoice_number": 42}'
    assert metric(base, f'nanoroute_fallbacks_total{{from_model="small",policy="extract",reason="cascade_{check}",'
                        'to_model="big"}') == 1
    # The small model answered: an escalation is not an upstream error.
    assert metric(base, f'nanoroute_upstream_errors_total{{kind="cascade_{check}",model="small"}}') == 0


def test_logprobs_asked_for_by_the_gateway_are_not_returned(client: Client, servers: Servers) -> None:
    small, big = servers.upstream("small"), servers.upstream("big")
    base = servers.gateway(config(small, big, "{json: false, min_mean_logprob: -0.5}"))
    reply = client(base).chat.completions.create(model="any", messages=MSG,
                                                 extra_headers={"X-Nanoroute-Task": "extract"})
    assert small.seen[-1].body["logprobs"] is True and big.seen[-1].body["logprobs"] is True
    assert reply.choices[0].logprobs is None


def test_the_last_model_answers_as_it_is(client: Client, servers: Servers) -> None:
    small, big = servers.upstream("small", answer="nope"), servers.upstream("big", answer="still not json")
    base = servers.gateway(config(small, big))
    headers, text = ask(client, base, response_format=JSON)
    assert (headers["x-nanoroute-model"], text) == ("big", "still not json")


def test_a_stream_is_buffered_checked_and_escalated(client: Client, servers: Servers) -> None:
    small, big = servers.upstream("small", chunks=3), servers.upstream("big", chunks=5)
    base = servers.gateway(config(small, big))
    stream = client(base).chat.completions.create(model="any", messages=MSG, response_format=JSON, stream=True,
                                                  extra_headers={"X-Nanoroute-Task": "extract"})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4 "  # only the big model's stream: nothing of the small one's
    assert len(small.seen) == 1 and len(big.seen) == 1


def test_a_stream_that_passes_is_replayed_whole(client: Client, servers: Servers) -> None:
    small, big = servers.upstream("small", chunks=3), servers.upstream("big")
    base = servers.gateway(config(small, big, "{json: false, regex: 'tok2'}"))
    with client(base).chat.completions.with_streaming_response.create(
            model="any", messages=MSG, stream=True, extra_headers={"X-Nanoroute-Task": "extract"}) as raw:
        assert raw.headers["x-nanoroute-model"] == "small"
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "tok0 tok1 tok2 " and not big.seen


def test_streams_are_not_cascaded_when_buffering_is_off(client: Client, servers: Servers) -> None:
    small, big = servers.upstream("small", chunks=2), servers.upstream("big")
    base = servers.gateway(config(small, big, "{stream: 'off'}"))
    stream = client(base).chat.completions.create(model="any", messages=MSG, response_format=JSON, stream=True,
                                                  extra_headers={"X-Nanoroute-Task": "extract"})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "tok0 tok1 "
    assert not big.seen
