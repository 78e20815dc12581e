"""What the router needs to know about a request, read once from its body and headers.

The body is parsed once (orjson) and kept with its original bytes: when an attempt's upstream model
name equals what the client sent, the original bytes go upstream untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.backends.base import Operation
from gateway.errors import InvalidRequest

TASK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}")
"""What a task name may be, from a header or the body's metadata: the config's names, at most 128 characters."""

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


def parse_request(
    op: Operation, raw: bytes, *, task_header: str | None, key_id: str | None, request_id: str,
    pin: str | None = None,
) -> RoutedRequest:
    """Validate just what the gateway reads; every other field passes through as the client sent it."""
    body = json_object(raw)
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
    task = task_header
    param = "X-Nanoroute-Task"
    if task is None:
        meta = body.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("task"), str):
            task, param = meta["task"], "metadata.task"
    if task and TASK.fullmatch(task) is None:
        raise InvalidRequest(f"{param} must be 1-128 letters, digits, '.', '_', ':', '/', '@' or '-', starting with "
                             "a letter or digit", param=param)
    add_usage = False
    if stream:
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise InvalidRequest("'stream_options' must be an object", param="stream_options")
        add_usage = not (options or {}).get("include_usage")
    return RoutedRequest(op, raw, body, model, stream, task or None, key_id, request_id, add_usage, pin or None)
