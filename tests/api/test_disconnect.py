"""A client that goes away cancels its upstream request, JSON or stream, wherever it was waiting."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.api.observe import Scrape
from tests.api.support import CHAT, single_model, wait_until
from tests.fakes.servers import Servers


@pytest.mark.parametrize(
    ("behaviour", "stream"),
    [("hang", False), ("hang", True), ("stall_first", True), ("stall_mid", True)],
    ids=["json-hang", "stream-hang", "stream-stall-first", "stream-stall-mid"],
)
def test_client_disconnect_cancels_the_upstream_request(servers: Servers, behaviour: str, stream: bool) -> None:
    up = servers.upstream(behaviour=behaviour)
    base = servers.gateway(single_model(up))
    with (
        httpx.Client(timeout=0.3) as http,
        pytest.raises(httpx.ReadTimeout),
        http.stream("POST", f"{base}/chat/completions", json={**CHAT, "stream": stream}) as resp,
    ):
        resp.read()
    wait_until(lambda: up.cancelled == 1 and up.open_requests == 0)
    assert len(up.seen) == 1


def test_the_gateway_keeps_serving_after_a_disconnect(servers: Servers) -> None:
    up = servers.upstream(behaviour="hang")
    base = servers.gateway(single_model(up))
    with httpx.Client(timeout=0.3) as http, pytest.raises(httpx.ReadTimeout):
        http.post(f"{base}/chat/completions", json=CHAT)
    wait_until(lambda: up.cancelled == 1)
    up.behaviour = "ok"
    with httpx.Client(timeout=5) as http:
        assert http.post(f"{base}/chat/completions", json=CHAT).status_code == 200
    assert up.open_requests == 0


def test_a_client_that_leaves_after_done_has_a_complete_answer(servers: Servers) -> None:
    """The official SDK closes its connection as soon as it reads `data: [DONE]`. An upstream that ends its
    response a moment later must not turn that into a cancelled request: the answer was complete, and its
    usage counts."""
    up = servers.upstream(linger_s=0.5)
    base = servers.gateway(single_model(up))
    with openai.OpenAI(base_url=base, api_key="k", max_retries=0) as sdk:
        stream = sdk.chat.completions.create(model="m", messages=CHAT["messages"], stream=True,
                                             stream_options={"include_usage": True})
        chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    wait_until(lambda: Scrape(base).value("nanoroute_requests_total") == 1)
    m = Scrape(base)
    assert m.value("nanoroute_requests_total", outcome="success") == 1
    assert m.value("nanoroute_tokens_total", model="m", kind="completion") == 3
    assert up.cancelled == 0
