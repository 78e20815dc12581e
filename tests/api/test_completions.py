"""POST /v1/completions through the official SDK."""

from __future__ import annotations

import httpx

from tests.api.support import Client, envelope, single_model
from tests.fakes.servers import Servers


def test_completion(servers: Servers, client: Client) -> None:
    up = servers.upstream("m")
    sdk = client(servers.gateway(single_model(up, name="served")))
    raw = sdk.completions.with_raw_response.create(model="m", prompt="Say hello", max_tokens=5, echo=False,
                                                   extra_body={"best_of": 1, "guided_choice": ["a", "b"]})
    completion = raw.parse()
    assert completion.choices[0].text == "Hello from the fake upstream."
    assert completion.object == "text_completion"
    assert (raw.headers["x-nanoroute-model"], raw.headers["x-nanoroute-policy"]) == ("m", "direct")
    [seen] = up.seen
    assert seen.path == "/v1/completions"
    assert seen.body == {"model": "served", "prompt": "Say hello", "max_tokens": 5, "echo": False, "best_of": 1,
                         "guided_choice": ["a", "b"]}


def test_a_list_of_prompts_passes_through(servers: Servers, client: Client) -> None:
    up = servers.upstream("m")
    sdk = client(servers.gateway(single_model(up)))
    sdk.completions.create(model="m", prompt=["one", "two"])
    assert up.seen[0].body["prompt"] == ["one", "two"]


def test_completion_stream(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream("m", chunks=2)
    base = servers.gateway(single_model(up))
    with http.stream("POST", f"{base}/completions", json={"model": "m", "prompt": "x", "stream": True}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        body = resp.read()
    assert body.endswith(b"data: [DONE]\n\n")
    assert body.count(b"data: ") == 4
    assert up.seen[0].path == "/v1/completions"


def test_prompt_is_required(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream("m")
    base = servers.gateway(single_model(up))
    resp = http.post(f"{base}/completions", json={"model": "m", "max_tokens": 3})
    assert resp.status_code == 400
    assert envelope(resp) == {"message": "'prompt' is a required property", "type": "invalid_request_error",
                              "param": "prompt", "code": None}
    assert up.seen == []
