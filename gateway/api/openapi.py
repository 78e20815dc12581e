"""`GET /openapi.json`: one OpenAPI document for every endpoint, built once with the app and served as bytes.

FastAPI describes its own routes (models, health, feedback, admin, metrics). The proxied endpoints, which
the pipeline serves in front of FastAPI, are described here by hand: the fields the gateway reads (every
other field is allowed, and passed on), the answer as JSON or as server-sent events, and each error in
its protocol's envelope (OpenAI's; Anthropic's for `/v1/messages`). The generated part is then put right
where FastAPI cannot know: the gateway answers a bad request with 400 (never FastAPI's 422), some routes
read their bodies themselves, and `/metrics` is Prometheus text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from fastapi import FastAPI

JSON = "application/json"
Schema = dict[str, Any]

_OPENAI_ERROR = {"$ref": "#/components/schemas/Error"}
_ANTHROPIC_ERROR = {"$ref": "#/components/schemas/AnthropicError"}
_CLIENT_KEY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
_ADMIN_KEY: list[dict[str, list[str]]] = [{"bearer": []}]

_ERROR_WHEN = {
    400: "The request is invalid: not a JSON object, a required field missing or mistyped, a bad task name; "
         "or the prompt fits no model's context window",
    401: "Keys are required and the request has none, or an unknown one",
    403: "The key may not use the model it named, or any model of the policy that matched",
    404: "No policy matches the model and no catalog model has that name; or the upstream does not serve it",
    413: "The body is over the gateway's limit",
    422: "The config file on disk is invalid; the running config is unchanged",
    429: "Every model is limiting the rate of requests (or the last one tried was)",
    502: "The upstream answered with an error, or with something malformed",
    503: "No upstream could be reached, or no model can take the request now (Retry-After says when)",
    504: "No upstream answered in time, or the request's deadline ran out",
}
_PROXIED_ERRORS = (400, 401, 403, 404, 413, 429, 502, 503, 504)

_TASK = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$"}
_METADATA = {"type": "object", "description": "`task`: the request's task for policy matching (when no "
                                              "X-Nanoroute-Task header is sent)",
             "properties": {"task": _TASK}}
_TIMEOUT = {"type": "number", "exclusiveMinimum": 0,
            "description": "Seconds: shortens the request's deadline (never extends it); not sent upstream"}
_MAX_TOKENS = {"type": "integer", "description": "Read for cost and context-window estimates; passed on"}
_TEXT_OR_LIST = {"type": ["string", "array"]}


def _body(required: Iterable[str], **fields: Schema) -> Schema:
    """A request body: the fields the gateway reads; any other field is allowed and reaches the upstream."""
    return {"type": "object", "required": list(required), "additionalProperties": True,
            "properties": {"model": {"type": "string", "minLength": 1,
                                     "description": "A catalog model, or a name a policy matches"}, **fields}}


_STREAM = {"type": "boolean", "description": "Answer with server-sent events"}
_CHAT_MESSAGES = {"type": "array", "items": {"type": "object", "required": ["role"],
                                             "properties": {"role": {"type": "string"}}}}
_ANTHROPIC_BLOCKS = {"type": ["string", "array"], "items": {"type": "object", "required": ["type"],
                                                             "properties": {"type": {"type": "string"}}}}
_ANTHROPIC_MESSAGES = {"type": "array", "minItems": 1, "items": {
    "type": "object", "required": ["role", "content"],
    "properties": {"role": {"enum": ["user", "assistant"]}, "content": _ANTHROPIC_BLOCKS}}}

_ENDPOINTS: dict[str, tuple[str, Schema, bool, str]] = {
    # path: (summary, request body, may stream, protocol)
    "/v1/chat/completions": ("Chat completions (OpenAI)", _body(
        ["model", "messages"], messages=_CHAT_MESSAGES, stream=_STREAM,
        max_tokens=_MAX_TOKENS, max_completion_tokens=_MAX_TOKENS, metadata=_METADATA, timeout=_TIMEOUT),
        True, "openai"),
    "/v1/completions": ("Completions (OpenAI)", _body(
        ["model", "prompt"], prompt=_TEXT_OR_LIST, stream=_STREAM, max_tokens=_MAX_TOKENS, metadata=_METADATA,
        timeout=_TIMEOUT), True, "openai"),
    "/v1/embeddings": ("Embeddings (OpenAI); not streamed", _body(
        ["model", "input"], input=_TEXT_OR_LIST, metadata=_METADATA, timeout=_TIMEOUT), False, "openai"),
    "/v1/responses": ("Responses (OpenAI's Responses API)", _body(
        ["model", "input"], input=_TEXT_OR_LIST, instructions={"type": "string"}, stream=_STREAM,
        max_output_tokens=_MAX_TOKENS, previous_response_id={"type": "string"}, store={"type": "boolean"},
        metadata=_METADATA, timeout=_TIMEOUT), True, "openai"),
    "/v1/responses/input_tokens": ("Count a Responses request's input tokens (OpenAI), answered by the gateway",
                                   _body(["model"], input=_TEXT_OR_LIST, instructions={"type": "string"},
                                         previous_response_id={"type": "string"}), False, "openai"),
    "/v1/messages": ("Messages (Anthropic's Messages API)", _body(
        ["model", "messages", "max_tokens"], messages=_ANTHROPIC_MESSAGES, system=_ANTHROPIC_BLOCKS,
        max_tokens={**_MAX_TOKENS, "minimum": 1}, stream=_STREAM, metadata=_METADATA, timeout=_TIMEOUT),
        True, "anthropic"),
    "/v1/messages/count_tokens": ("Count a Messages request's input tokens (Anthropic), answered by the gateway",
                                  _body(["model", "messages"], messages=_ANTHROPIC_MESSAGES, system=_ANTHROPIC_BLOCKS),
                                  False, "anthropic"),
}

_HEADERS = [
    {"name": "X-Request-Id", "in": "header", "required": False,
     "description": "Echoed back and sent upstream when printable ASCII of at most 128 characters; else made up",
     "schema": {"type": "string"}},
    {"name": "X-Nanoroute-Task", "in": "header", "required": False,
     "description": "The request's task for policy matching", "schema": _TASK},
]

_ROUTE_HEADERS = {
    "x-request-id": "The client's request id, or a new one",
    "x-nanoroute-policy": "The policy that matched, or `direct`",
    "x-nanoroute-model": "The catalog name of the model that answered",
    "x-nanoroute-fallbacks": "Attempts that failed or models skipped before the answer (on an error: in all)",
}

# FastAPI's routes: the errors each may answer, and what FastAPI cannot see (bodies read raw, the content type).
_ROUTE_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("/v1/models", "get"): (401,),
    ("/v1/models/{name}", "get"): (401, 404),
    ("/v1/feedback", "post"): (400, 401, 413, 503),
    ("/v1/responses/{response_id}", "get"): (401, 404, 503),
    ("/v1/responses/{response_id}", "delete"): (401, 404, 503),
    ("/v1/responses/{response_id}/input_items", "get"): (400, 401, 404, 503),
    ("/admin/rollouts/{policy}", "post"): (400,),
    ("/admin/reload", "post"): (422,),
    ("/admin/explain", "post"): (400, 403, 404, 503),
}
_FEEDBACK = {"type": "object", "required": ["request_id"], "additionalProperties": True, "properties": {
    "request_id": {"type": "string", "minLength": 1, "maxLength": 128,
                   "description": "The x-request-id of the answer"},
    "score": {"type": "number"}, "label": {"type": "string", "minLength": 1, "maxLength": 128},
    "comment": {"type": "string", "maxLength": 4096}}}
_ROLLOUT_ACTION = {"type": "object", "required": ["action"], "additionalProperties": True, "properties": {
    "action": {"enum": ["pin", "stop", "resume"]}, "stage": {"enum": ["shadow", "canary", "primary"]},
    "step": {"type": "integer"}}}
_RAW_BODIES: dict[tuple[str, str], Schema] = {
    ("/v1/feedback", "post"): _FEEDBACK,
    ("/admin/rollouts/{policy}", "post"): _ROLLOUT_ACTION,
    ("/admin/explain", "post"): _ENDPOINTS["/v1/chat/completions"][1],
}

_COMPONENTS: Schema = {
    "securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    },
    "schemas": {
        "Error": {
            "type": "object", "required": ["error"],
            "description": "OpenAI's error envelope. A 4xx the upstream answered is relayed as it sent it.",
            "properties": {"error": {"type": "object", "required": ["message", "type"], "properties": {
                "message": {"type": "string"}, "type": {"type": "string"},
                "param": {"type": ["string", "null"]}, "code": {"type": ["string", "integer", "null"]}}}}},
        "ServerSentEvent": {
            "type": "object", "required": ["data"],
            "description": "One event of a stream (OpenAPI before 3.2: the schema of each event). `data`: a JSON "
                           "chunk in the endpoint's format; OpenAI's streams end with `[DONE]`; an error after the "
                           "first bytes is one last event in the error envelope",
            "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"},
                           "retry": {"type": "integer"}}},
        "AnthropicError": {
            "type": "object", "required": ["type", "error"], "description": "Anthropic's error envelope",
            "properties": {"type": {"const": "error"}, "error": {
                "type": "object", "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}}},
    },
}


def document(api: FastAPI, proxied: Iterable[str]) -> bytes:
    """The whole document: FastAPI's routes, put right, and the `proxied` paths (those the pipeline serves)."""
    generated = api.openapi()  # FastAPI's own (and cached) document: read, never changed
    paths = {path: {method: _fix(path, method, op) for method, op in item.items()}
             for path, item in generated.get("paths", {}).items()}
    paths.update({path: {"post": _proxied(path)} for path in proxied})
    schemas = {name: schema for name, schema in generated.get("components", {}).get("schemas", {}).items()
               if name not in ("HTTPValidationError", "ValidationError")}  # the gateway never answers 422 for them
    components = {**_COMPONENTS, "schemas": {**schemas, **_COMPONENTS["schemas"]}}
    return orjson.dumps({**generated, "paths": paths, "components": components})


def _proxied(path: str) -> Schema:
    summary, body, streams, protocol = _ENDPOINTS.get(path, (path, _body(["model"]), True, "openai"))
    error = _ANTHROPIC_ERROR if protocol == "anthropic" else _OPENAI_ERROR
    answer: Schema = {JSON: {"schema": {"type": "object"}}}
    if path in ("/v1/messages/count_tokens", "/v1/responses/input_tokens"):
        answer = {JSON: {"schema": {"type": "object", "required": ["input_tokens"],
                                    "properties": {"input_tokens": {"type": "integer", "minimum": 0}}}}}
    if streams:
        answer["text/event-stream"] = {"schema": {"$ref": "#/components/schemas/ServerSentEvent"}}
    headers = {name: {"description": why, "schema": {"type": "string"}} for name, why in _ROUTE_HEADERS.items()}
    responses: Schema = {"200": {"description": "The upstream's answer" + (", or its stream" if streams else ""),
                                 "headers": headers, "content": answer}}
    for status in _PROXIED_ERRORS:
        responses[str(status)] = _error(status, error)
    return {"summary": summary, "operationId": path.strip("/").replace("/", "_"), "tags": ["proxied"],
            "security": _CLIENT_KEY, "parameters": _HEADERS, "requestBody": {
                "required": True, "content": {JSON: {"schema": body}}}, "responses": responses}


def _error(status: int, schema: Schema, why: str | None = None) -> Schema:
    out: Schema = {"description": why or _ERROR_WHEN[status], "content": {JSON: {"schema": schema}}}
    if status in (429, 503):
        out["headers"] = {"Retry-After": {"description": "Seconds to wait, when known",
                                          "schema": {"type": "string"}}}
    return out


def _fix(path: str, method: str, op: Schema) -> Schema:
    """A FastAPI operation put right: its errors, its security, a body it reads itself, its content type."""
    op = {**op, "responses": {k: v for k, v in op["responses"].items() if k != "422"}}
    for status in _ROUTE_ERRORS.get((path, method), ()):
        op["responses"][str(status)] = _error(status, _OPENAI_ERROR)
    if (path, method) in _RAW_BODIES:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": _RAW_BODIES[(path, method)]}}}
    if path.startswith("/admin/"):
        op["security"] = _ADMIN_KEY
        op["responses"]["401"] = _error(401, _OPENAI_ERROR, "The admin key is missing or wrong")
        op["responses"].setdefault("404", _error(404, _OPENAI_ERROR, "Admin endpoints are off: "
                                                                     "NANOROUTE_ADMIN_KEY is unset"))
    elif path.startswith("/v1/"):
        op["security"] = _CLIENT_KEY
    if path == "/metrics":
        op["responses"]["200"] = {"description": "Prometheus text format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}
    if path == "/readyz":
        op["responses"]["503"] = {"description": "Still starting", "content": {JSON: {"schema": {
            "type": "object", "properties": {"status": {"const": "starting"}}}}}}
    return op
