"""POST /v1/embeddings through the official SDK."""

from __future__ import annotations

import httpx

from tests.api.support import Client, envelope, single_model
from tests.fakes.servers import Servers


def test_embeddings(servers: Servers, client: Client) -> None:
    up = servers.upstream("e")
    sdk = client(servers.gateway(single_model(up, model="embed", name="bge-small")))
    raw = sdk.embeddings.with_raw_response.create(model="embed", input="hello", encoding_format="float",
                                                  dimensions=3)
    result = raw.parse()
    assert result.data[0].embedding == [0.1, 0.2, 0.3]
    assert result.model == "bge-small"
    assert raw.headers["x-nanoroute-model"] == "embed"
    [seen] = up.seen
    assert seen.path == "/v1/embeddings"
    assert seen.body == {"model": "bge-small", "input": "hello", "encoding_format": "float", "dimensions": 3}


def test_a_batch_of_inputs_passes_through(servers: Servers, client: Client) -> None:
    up = servers.upstream("e")
    sdk = client(servers.gateway(single_model(up, model="embed")))
    sdk.embeddings.create(model="embed", input=["a", "b", "c"], encoding_format="float")
    assert up.seen[0].body["input"] == ["a", "b", "c"]


def test_embeddings_cannot_stream(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream("e")
    base = servers.gateway(single_model(up, model="embed"))
    resp = http.post(f"{base}/embeddings", json={"model": "embed", "input": "x", "stream": True})
    assert resp.status_code == 400
    assert envelope(resp)["message"] == "Embeddings cannot be streamed"
    assert up.seen == []


def test_input_is_required(servers: Servers, http: httpx.Client) -> None:
    up = servers.upstream("e")
    base = servers.gateway(single_model(up, model="embed"))
    resp = http.post(f"{base}/embeddings", json={"model": "embed"})
    assert resp.status_code == 400
    assert envelope(resp)["param"] == "input"
    assert up.seen == []
