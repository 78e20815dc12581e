"""POST /v1/feedback through the official SDK's generic `post`: stored beside the captures, keyed by request
id; bad input answered with OpenAI's error envelope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.capture.sink import files_in
from tests.api.support import Client, error_of, single_model
from tests.fakes.servers import Servers

KEYS = {"api_keys": "app=sk-app-key-0123456789"}


def feedback_rows(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for f in files_in(root / "captures" / "feedback") for line in f.read_text().splitlines()]


def post(sdk: openai.OpenAI, body: object) -> Any:
    return sdk.post("/feedback", body=body, cast_to=object)


def test_feedback_is_appended_with_the_client_and_redacted(servers: Servers, client: Client, tmp_path: Path) -> None:
    base = servers.gateway(single_model(servers.upstream()), data_dir=tmp_path, **KEYS)
    sdk = client(base, api_key="sk-app-key-0123456789")
    assert post(sdk, {"request_id": "r-1", "score": 1}) == {"object": "feedback", "request_id": "r-1",
                                                              "recorded": True}
    post(sdk, {"request_id": "r-2", "label": "wrong_queue", "comment": "mail me at bob@example.com"})
    post(sdk, {"request_id": "r-1", "score": -0.5, "label": "bad"})
    rows = feedback_rows(tmp_path)
    assert [(r["request_id"], r.get("score"), r.get("label"), r["client"]) for r in rows] == [
        ("r-1", 1, None, "app"), ("r-2", None, "wrong_queue", "app"), ("r-1", -0.5, "bad", "app")]
    assert rows[1]["comment"] == "mail me at [REDACTED:email]"
    assert all(isinstance(r["ts"], float) for r in rows)


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"score": 1}, "request_id", "'request_id' is required"),
    ({"request_id": "", "score": 1}, "request_id", "'request_id' is required"),
    ({"request_id": "r"}, "score", "Give a 'score'"),
    ({"request_id": "r", "score": "high"}, "score", "finite number"),
    ({"request_id": "r", "score": True}, "score", "finite number"),
    ({"request_id": "r", "label": ""}, "label", "1-128 characters"),
    ({"request_id": "r", "label": 3}, "label", "1-128 characters"),
    ({"request_id": "r", "score": 1, "comment": ["x"]}, "comment", "at most 4096"),
    (["r", 1], None, "must be a JSON object"),
])
def test_bad_input_is_a_400(servers: Servers, client: Client, tmp_path: Path, body: object, param: str | None,
                            words: str) -> None:
    sdk = client(servers.gateway(single_model(servers.upstream()), data_dir=tmp_path))
    with pytest.raises(openai.BadRequestError) as info:
        post(sdk, body)
    err = error_of(info.value)
    assert (err["type"], err["param"]) == ("invalid_request_error", param)
    assert words in err["message"]
    assert feedback_rows(tmp_path) == []


def test_keys_are_required_as_on_every_v1_endpoint(servers: Servers, client: Client, tmp_path: Path) -> None:
    sdk = client(servers.gateway(single_model(servers.upstream()), data_dir=tmp_path, **KEYS), api_key="sk-wrong")
    with pytest.raises(openai.AuthenticationError) as info:
        post(sdk, {"request_id": "r", "score": 1})
    assert error_of(info.value)["code"] == "invalid_api_key"


def test_a_body_over_the_limit_is_a_413(servers: Servers, client: Client, tmp_path: Path) -> None:
    sdk = client(servers.gateway(single_model(servers.upstream()), data_dir=tmp_path))
    with pytest.raises(openai.APIStatusError) as info:
        post(sdk, {"request_id": "r", "score": 1, "comment": "x" * 70_000})
    assert info.value.status_code == 413


def test_feedback_that_cannot_be_stored_is_a_503(servers: Servers, client: Client, tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    sdk = client(servers.gateway(single_model(servers.upstream()), capture_dir=blocked))
    with pytest.raises(openai.InternalServerError) as info:
        post(sdk, {"request_id": "r", "score": 1})
    assert info.value.status_code == 503
    assert error_of(info.value)["code"] == "storage_unavailable"
