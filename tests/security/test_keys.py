"""Attack: get in with a key that is not one, or read a key out of the gateway's ids and logs.

An entry of NANOROUTE_API_KEYS used to be split on its first `=`: a base64 key with `=` padding became
the key `=` (and anyone sending `=` got in) while the real key was refused and logged as the key's id.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.errors import ConfigError
from gateway.settings import Settings
from tests.api.support import CHAT, single_model, wait_until
from tests.fakes.servers import Servers

PADDED = "c2stZ2F0ZXdheS1jbGllbnQta2V5LTAx=="  # a base64 key with its `=` padding


def test_a_base64_key_with_padding_is_a_key_and_equals_alone_is_not(servers: Servers) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up), api_keys=f"svc={PADDED}")
    ok = httpx.post(f"{base}/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {PADDED}"})
    assert ok.status_code == 200
    for fake in ("=", "==", "svc", f"svc={PADDED}"):
        resp = httpx.post(f"{base}/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {fake}"})
        assert resp.status_code == 401, fake
    assert len(up.seen) == 1


@pytest.mark.parametrize("entries", [PADDED, "name=", "name=short-key", "short", f"ok=0123456789abcdef,{PADDED}"])
def test_empty_short_or_ambiguous_keys_stop_the_gateway_at_start(tmp_path: Path, entries: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("backends: {b: {type: openai, url: http://127.0.0.1:9/v1}}\nmodels: {m: {backend: b}}\n")
    with pytest.raises(ConfigError) as info:
        create_app(Settings(config=config, api_keys=entries))
    assert info.value.source == "NANOROUTE_API_KEYS"
    assert PADDED not in info.value.message and PADDED[:-2] not in info.value.message  # never the key material
    assert "short-key" not in info.value.message


@pytest.mark.parametrize(("header", "value"), [
    ("Authorization", f"Bearer {PADDED}"),
    ("Authorization", f"bearer {PADDED}"),
    ("Authorization", f"BEARER {PADDED}"),
    ("x-api-key", PADDED),  # Anthropic's SDKs
    ("api-key", PADDED),  # Azure OpenAI's SDKs
])
def test_the_key_is_taken_from_the_headers_clients_send(servers: Servers, header: str, value: str) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up), api_keys=f"svc={PADDED}")
    assert httpx.post(f"{base}/chat/completions", json=CHAT, headers={header: value}).status_code == 200
    assert httpx.get(f"{base}/models", headers={header: value}).status_code == 200


def test_another_scheme_or_a_wrong_key_in_any_header_is_refused(servers: Servers) -> None:
    up = servers.upstream()
    base = servers.gateway(single_model(up), api_keys=f"svc={PADDED}")
    for headers in ({"Authorization": f"Basic {PADDED}"}, {"x-api-key": PADDED + "x"}, {"api-key": "svc"},
                    {"Authorization": "Bearer wrong-key-0123456789", "x-api-key": PADDED}):
        assert httpx.post(f"{base}/chat/completions", json=CHAT, headers=headers).status_code == 401
    assert up.seen == []


def test_no_key_material_in_ids_logs_or_answers(servers: Servers, caplog: pytest.LogCaptureFixture) -> None:
    unnamed = "sk-unnamed-client-key-0123456789"
    up = servers.upstream()
    base = servers.gateway(single_model(up), api_keys=f"svc={PADDED},{unnamed}", access_log=True)
    with caplog.at_level(logging.INFO, logger="nanoroute.access"):
        for key in (PADDED, unnamed):
            resp = httpx.post(f"{base}/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
            assert resp.status_code == 200
            assert key not in resp.text and key not in json.dumps(dict(resp.headers))
        wait_until(lambda: sum(r.name == "nanoroute.access" for r in caplog.records) == 2)  # written as each ends
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "nanoroute.access"]
    assert [line["key_id"] for line in lines] == ["svc", servers.app_of().auth.identify(unnamed.encode()).id]
    text = caplog.text
    assert PADDED not in text and PADDED[:-2] not in text and unnamed not in text
    assert all(s.headers.get("authorization") is None for s in up.seen)  # a client's key never goes upstream
