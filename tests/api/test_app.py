"""gateway/app.py: one app builds everything; two gateways in one process share nothing."""

from __future__ import annotations

from tests.api.support import MESSAGES, Client, single_model
from tests.fakes.servers import Servers


def test_two_gateways_in_one_process_are_independent(servers: Servers, client: Client) -> None:
    one, two = servers.upstream("one"), servers.upstream("two")
    first = client(servers.gateway(single_model(one, model="alpha")))
    key = "sk-two-0123456789ab"
    second = client(servers.gateway(single_model(two, model="beta"), api_keys=key), api_key=key)
    assert first.chat.completions.create(model="alpha", messages=MESSAGES).choices
    assert second.chat.completions.create(model="beta", messages=MESSAGES).choices
    assert [m.id for m in first.models.list().data] == ["alpha"]
    assert [m.id for m in second.models.list().data] == ["beta"]
    assert (len(one.seen), len(two.seen)) == (1, 1)
