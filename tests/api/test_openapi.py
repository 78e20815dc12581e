"""GET /openapi.json: a document of every endpoint, the proxied ones included, that the running gateway
keeps to (checked with schemathesis against a gateway in front of a fake upstream)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.support import single_model
from tests.fakes.servers import Servers

ADMIN = "admin-key-0123456789"
PROXIED = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
"""Paths the pipeline serves today; every one it serves must be in the document (asserted below)."""
SERVED_BY_FASTAPI = {"/v1/models", "/v1/models/{name}", "/v1/feedback", "/healthz", "/readyz", "/metrics",
                     "/admin/config", "/admin/backends", "/admin/rollouts", "/admin/rollouts/{policy}", "/admin/reload",
                     "/admin/explain", "/v1/responses/{response_id}", "/v1/responses/{response_id}/input_items"}


def _root(servers: Servers, tmp_path: Path, **settings: Any) -> str:
    return servers.gateway(single_model(servers.upstream()), data_dir=tmp_path, **settings).removesuffix("/v1")


def test_the_document_describes_every_endpoint(servers: Servers, http: httpx.Client, tmp_path: Path) -> None:
    resp = http.get(_root(servers, tmp_path) + "/openapi.json")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    doc = resp.json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    served = set(servers.app_of().pipeline.routes)
    assert served >= PROXIED
    assert served | SERVED_BY_FASTAPI <= set(paths)
    assert "/openapi.json" not in paths
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "x-api-key"}
    for path in served:
        op = paths[path]["post"]
        assert op["security"] == [{"bearer": []}, {"apiKey": []}]
        body = op["requestBody"]["content"]["application/json"]["schema"]
        assert body["type"] == "object" and body.get("additionalProperties", True) is not False
        assert "model" in body["required"]
        assert {"400", "401", "403", "404", "413", "429", "502", "503", "504"} <= set(op["responses"])
        assert "application/json" in op["responses"]["200"]["content"]
        assert "Retry-After" in op["responses"]["429"]["headers"]
    for path in served - {"/v1/embeddings", "/v1/messages/count_tokens", "/v1/responses/input_tokens"}:
        assert "text/event-stream" in paths[path]["post"]["responses"]["200"]["content"]
    for path, item in paths.items():
        for op in item.values():  # a bad request is a 400; only a reload of an invalid config is a 422
            assert ("422" in op["responses"]) == (path == "/admin/reload"), path


def test_the_anthropic_endpoints_describe_anthropics_error_envelope(
    servers: Servers, http: httpx.Client, tmp_path: Path
) -> None:
    doc = http.get(_root(servers, tmp_path) + "/openapi.json").json()
    served = set(servers.app_of().pipeline.routes)
    if "/v1/messages" not in served:
        pytest.skip("the gateway does not serve /v1/messages yet")
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        error = doc["paths"][path]["post"]["responses"]["400"]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/AnthropicError"}
    assert doc["components"]["schemas"]["AnthropicError"]["properties"]["type"] == {"const": "error"}


def test_the_document_is_built_once_and_served_as_is(servers: Servers, http: httpx.Client, tmp_path: Path) -> None:
    root = _root(servers, tmp_path)
    first, second = http.get(root + "/openapi.json"), http.get(root + "/openapi.json")
    assert first.content == second.content
    assert servers.app_of().openapi is not None  # built at start, not per request


def test_the_document_needs_no_key(servers: Servers, http: httpx.Client, tmp_path: Path) -> None:
    resp = http.get(_root(servers, tmp_path, api_keys="sk-alpha-0123456789") + "/openapi.json")
    assert resp.status_code == 200


# -- the running gateway against its document ------------------------------------------------------------------

def not_an_internal_error(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                          case: schemathesis.Case) -> bool | None:
    """No 500: a bug in the gateway. Its 502/503/504 are the upstream's failures, or the deadline a client
    set with `timeout` running out (generated requests send tiny ones), and must be documented like any status."""
    assert response.status_code != 500, f"500 from {case.method} {case.path}: {response.text[:500]}"
    return None


CHECKS = [not_an_internal_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_the_gateway_keeps_to_its_document(servers: Servers, tmp_path: Path) -> None:
    """Every operation, 25 generated requests each (deterministic), against a gateway in front of a fake
    upstream that answers 200: no 5xx, and every status, content type and body as the document says."""
    root = _root(servers, tmp_path, admin_key=ADMIN)
    schema = schemathesis.openapi.from_url(root + "/openapi.json")
    schema.validate()  # against OpenAPI 3.1's own schema
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= len(PROXIED | SERVED_BY_FASTAPI)
    auth = {"authorization": f"Bearer {ADMIN}"}  # the API is open; the admin endpoints need this
    for operation in operations:

        @given(case=operation.as_strategy(), served=st.booleans())
        @settings(max_examples=25, derandomize=True, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def exercise(case: schemathesis.Case, served: bool) -> None:
            if served and isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = "m"  # half the requests name the model the gateway serves, to reach upstream
            case.call_and_validate(base_url=root, headers=auth, checks=CHECKS, timeout=10)

        exercise()
