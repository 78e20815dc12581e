"""GET /v1/models: the names a client may send."""

from __future__ import annotations

import openai
import pytest

from tests.api.support import Client, single_model
from tests.fakes.servers import Servers


def config(url: str) -> str:
    return f"""\
backends:
  b: {{type: openai, url: {url}}}
models:
  small: {{backend: b, name: upstream-small}}
  large: {{backend: b}}
policies:
  - {{name: auto, match: {{model: [auto, "gpt-*"]}}, candidates: [small, large]}}
"""


def test_list_models_gives_client_names(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    base = servers.gateway(config(up.url))
    sdk = client(base)
    page = sdk.models.list()
    assert [m.id for m in page.data] == ["small", "large", "auto"]
    assert {m.owned_by for m in page.data} == {"nanoroute"}
    assert {m.object for m in page.data} == {"model"}
    assert {m.created for m in page.data} == {int(servers.app_of().state.table.loaded_at)}
    assert up.seen == [], "the list comes from the config, not the upstreams"


def test_retrieve_a_model(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    sdk = client(servers.gateway(config(up.url)))
    assert sdk.models.retrieve("auto").id == "auto"
    assert sdk.models.retrieve("small").id == "small"


@pytest.mark.parametrize("name", ["upstream-small", "gpt-*", "gpt-4o", "nope"])
def test_retrieve_an_unknown_model(servers: Servers, client: Client, name: str) -> None:
    up = servers.upstream()
    sdk = client(servers.gateway(config(up.url)))
    with pytest.raises(openai.NotFoundError) as info:
        sdk.models.retrieve(name)
    assert info.value.code == "model_not_found"


def test_a_name_with_a_slash(servers: Servers, client: Client) -> None:
    up = servers.upstream()
    sdk = client(servers.gateway(single_model(up, model="org/model-v1")))
    assert [m.id for m in sdk.models.list().data] == ["org/model-v1"]
    assert sdk.models.retrieve("org/model-v1").id == "org/model-v1"
