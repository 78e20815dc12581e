"""What the router needs to know about a request, read once from its body and headers.

The body is parsed once (orjson) and kept with its original bytes: when an attempt's upstream model
name equals what the client sent, the original bytes go upstream untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.backends.base import Operation
from gateway.errors import InvalidRequest

if TYPE_CHECKING:
    from gateway.config.table import KeyAccess

TASK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}")
"""What a task name may be, from a header or the body's metadata: the config's names, at most 128 characters."""

@dataclass(slots=True)
class Native:
    """A request that came in by another API than chat completions (Responses, Messages), as the client
    sent it (with what the gateway resolves itself, such as a previous response's items, already in): what
    a backend that speaks that API gets instead of the chat completions body."""

    op: Operation
    body: dict[str, Any]
    raw: bytes
    headers: tuple[tuple[str, str], ...] = ()
    """The API's own request headers passed upstream (`anthropic-version`, `anthropic-beta`)."""
    passthrough: bool = True
    """False when the gateway must read the answer as chat completions (a cascade's checks): then every
    model gets the translation."""
    untranslatable: InvalidRequest | None = None
    """Why the request has no chat completions translation (a built-in tool, say): then only a model that
    speaks its API may take it, and the chat body is a stand-in for routing's estimates only."""
    sent: dict[str, Any] | None = None
    """The client's own body where `body` is not it (the Responses API's, made stateless for the upstream):
    the settings a translated answer echoes (`store`, `previous_response_id`, `metadata`)."""

    def body_for(self, upstream_model: str) -> bytes:
        if upstream_model == self.body.get("model"):
            return self.raw
        return orjson.dumps({**self.body, "model": upstream_model})


@dataclass(slots=True)
class RoutedRequest:
    op: Operation
    raw: bytes
    body: dict[str, Any]
    model: str
    stream: bool
    task: str | None
    key_id: str | None
    request_id: str
    add_usage: bool = False
    """A stream whose client did not ask for usage: ask the upstream for it (for metrics and cost)
    and strip it from what the client sees."""
    pin: str | None = None
    """The catalog model named by the X-Nanoroute-Model header, if any."""
    prompt_tokens: int | None = None
    """Filled in once, by the router, when a policy needs it."""
    add_logprobs: bool = False
    """A cascade checks log-probabilities the client did not ask for: ask the upstream for them, and
    remove them from the answer the client gets (set by the route stage for JSON requests)."""
    access: KeyAccess | None = None
    """What the client's key may use (models, policies); None: everything. Set by the pipeline from its key."""
    predicted: tuple[float, ...] | None = None
    """A `learned` policy's predicted score of each of its router's models (in the router's order), set once by
    the router: what the observed scores (feedback, rollout comparisons) are compared with."""
    native: Native | None = None
    """Set for a request that came in by another API: `body` above is its chat completions translation,
    which routing reads and models that do not speak the API get."""

    @property
    def has_tools(self) -> bool:
        return bool(self.body.get("tools") or self.body.get("functions"))

    @property
    def json_mode(self) -> bool:
        fmt = self.body.get("response_format")
        return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")

    @property
    def user(self) -> str | None:
        user = self.body.get("user")
        return user if isinstance(user, str) and user else None

    def body_for(self, upstream_model: str, *, usage: bool = True) -> bytes:
        """The bytes to send upstream for a model; the client's own bytes when nothing changes.
        `usage`: the backend may be asked for usage in a stream (see `add_usage`)."""
        add_usage = self.add_usage and usage
        if upstream_model == self.model and not add_usage and not self.add_logprobs and "timeout" not in self.body:
            return self.raw
        body = {**self.body, "model": upstream_model}
        if add_usage:
            body["stream_options"] = {**(self.body.get("stream_options") or {}), "include_usage": True}
        if self.add_logprobs:
            body["logprobs"] = True if self.op is Operation.CHAT else 1
        body.pop("timeout", None)  # the gateway's own field (a shorter deadline, docs/reliability.md)
        return orjson.dumps(body)


MAX_DEPTH = 128
"""The deepest nesting of arrays and objects a request body may have: far beyond what OpenAI's own
schemas allow (10 levels of object properties), well within what orjson encodes again (255) and what
Python walks without running out of stack."""


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object; raises InvalidRequest otherwise."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and too_deep(body, MAX_DEPTH):
        raise InvalidRequest(f"The request body nests arrays and objects more than {MAX_DEPTH} deep")
    return body



def too_deep(value: dict[str, Any] | list[Any], limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit` in a parsed JSON value (without recursion).
    Long arrays of scalars (token ids, embeddings' inputs) are passed over at C speed."""
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        items = node.values() if type(node) is dict else node
        if len(items) > 8 and dict not in (kinds := set(map(type, items))) and list not in kinds:
            continue
        stack.extend((v, depth + 1) for v in items if isinstance(v, dict | list))
    return False


def stand_in(body: dict[str, Any], raw: bytes) -> dict[str, Any]:
    """A chat completions body for routing a request that has no translation (`Native.untranslatable`):
    its model, stream and output limit, and its whole text as the prompt, for the estimates."""
    chat: dict[str, Any] = {"model": body.get("model"), "messages": [{"role": "user", "content": raw.decode()}]}
    for key in ("stream", "max_tokens"):
        if key in body:
            chat[key] = body[key]
    if "max_output_tokens" in body:
        chat["max_tokens"] = body["max_output_tokens"]
    return chat


def parse_request(
    op: Operation, raw: bytes, *, task_header: str | None, key_id: str | None, request_id: str,
    pin: str | None = None,
) -> RoutedRequest:
    """Validate just what the gateway reads; every other field passes through as the client sent it."""
    return from_body(op, raw, json_object(raw), task_header=task_header, key_id=key_id, request_id=request_id,
                     pin=pin)


def from_body(
    op: Operation, raw: bytes, body: dict[str, Any], *, task_header: str | None, key_id: str | None,
    request_id: str, pin: str | None = None, metadata: object = None,
) -> RoutedRequest:
    """The request from its parsed body (`raw` its bytes). `metadata`: where `metadata.task` is read
    when it is not the body's own (a translated request's: the client's)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    required = op.required
    if body.get(required) is None:
        raise InvalidRequest(f"'{required}' is a required property", param=required)
    if op is Operation.CHAT and not isinstance(body[required], list):
        raise InvalidRequest("'messages' must be an array", param="messages")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    if stream and op is Operation.EMBEDDINGS:
        raise InvalidRequest("Embeddings cannot be streamed", param="stream")
    task = task_of(task_header, body.get("metadata") if metadata is None else metadata)
    add_usage = False
    if stream:
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise InvalidRequest("'stream_options' must be an object", param="stream_options")
        add_usage = not (options or {}).get("include_usage")
    return RoutedRequest(op, raw, body, model, stream, task, key_id, request_id, add_usage, pin or None)


def task_of(header: str | None, metadata: object) -> str | None:
    """The request's task: the X-Nanoroute-Task header's, else `metadata.task`; InvalidRequest for a bad name."""
    task, param = header, "X-Nanoroute-Task"
    if task is None and isinstance(metadata, dict) and isinstance(metadata.get("task"), str):
        task, param = metadata["task"], "metadata.task"
    if task and TASK.fullmatch(task) is None:
        raise InvalidRequest(f"{param} must be 1-128 letters, digits, '.', '_', ':', '/', '@' or '-', starting with "
                             "a letter or digit", param=param)
    return task or None
