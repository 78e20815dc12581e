"""A Responses request as a chat completions body (see the package's docstring for the choices made)."""

from __future__ import annotations

from typing import Any, TypeGuard

from gateway.errors import InvalidRequest


class Untranslatable(InvalidRequest):
    """The request is not a valid Responses request, or says something chat completions cannot express.

    `param` is the path of the offending field, e.g. `input.3.type` or `tools.0.type`; `previous_response_id`
    for an item of the previous response.
    """


class BuiltinToolUnsupported(Untranslatable):
    """The request offers a tool that OpenAI runs on its own servers (web search, file search, ...)."""

    def __init__(self, tool: str, *, param: str) -> None:
        super().__init__(f"The built-in tool '{tool}' runs on OpenAI's servers; the model this request was "
                         "routed to cannot run it", param=param)


_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_BUILTIN_TOOLS = frozenset({
    "web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11", "file_search",
    "computer", "computer_use_preview", "code_interpreter", "image_generation", "mcp", "local_shell", "shell",
    "apply_patch", "tool_search", "programmatic_tool_calling",
})
_TOOL_CHOICES = frozenset({"auto", "none", "required"})
_COPIED: tuple[tuple[str, str], ...] = (
    ("temperature", "number"), ("top_p", "number"), ("user", "string"), ("safety_identifier", "string"),
    ("prompt_cache_key", "string"), ("service_tier", "string"), ("parallel_tool_calls", "boolean"),
    ("stream", "boolean"),
)
_TEXT_KINDS = frozenset({"input_text", "output_text"})


# -- request: Responses -> chat completions ------------------------------------------------------------------


def to_chat(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Responses request body as a chat completions body. `history` is the input and output items of the
    previous response (`previous_response_id`, resolved by the gateway); they come before this request's input.
    The previous response's instructions are not carried over, as OpenAI does not carry them."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string", param="model")
    messages = _instructions(body.get("instructions"))
    messages += _messages(list(history or ()), _input(body.get("input")))
    if not messages:
        raise Untranslatable("The request has no input", param="input")
    for name in _KEPT_BY_OPENAI:
        if body.get(name) is not None:
            raise Untranslatable(f"'{name}' names {_KEPT_BY_OPENAI[name]} kept on OpenAI's servers; the model this "
                                 "request was routed to cannot read it", param=name)
    chat: dict[str, Any] = {"model": model, "messages": messages}
    _options(body, chat)
    _tools(body, chat)
    _text_format(body.get("text"), chat)
    return chat


_KEPT_BY_OPENAI = {"conversation": "a conversation", "prompt": "a prompt template"}
"""Fields that refer to what OpenAI keeps for the client: only OpenAI's own API can resolve them, as an
`item_reference` (a translated model would answer without their context, and nobody would know)."""


def input_items(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The request's input as input items, after `history`: what the store keeps for the next turn."""
    items = list(history or ())
    given = body.get("input")
    if isinstance(given, str):
        items.append({"type": "message", "role": "user", "content": [{"type": "input_text", "text": given}]})
    elif isinstance(given, list):
        items.extend(given)
    return items


def _instructions(instructions: Any) -> list[dict[str, Any]]:
    if instructions is None or instructions == "":
        return []
    if not isinstance(instructions, str):
        raise Untranslatable("'instructions' must be a string", param="instructions")
    return [{"role": "system", "content": instructions}]


def _input(given: Any) -> list[Any]:
    if given is None:
        return []
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    if not isinstance(given, list):
        raise Untranslatable("'input' must be a string or a list of items", param="input")
    return given


def _options(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """Sampling, limits, identifiers, reasoning effort, logprobs and streaming."""
    for name, kind in _COPIED:
        value = body.get(name)
        if value is not None:
            chat[name] = _checked(value, kind, name)
    if (limit := body.get("max_output_tokens")) is not None:
        chat["max_tokens"] = _checked(limit, "integer", "max_output_tokens")
    if (reasoning := body.get("reasoning")) is not None:
        if not isinstance(reasoning, dict):
            raise Untranslatable("'reasoning' must be an object", param="reasoning")
        if (effort := reasoning.get("effort")) is not None:
            chat["reasoning_effort"] = _checked(effort, "string", "reasoning.effort")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise Untranslatable("'metadata' must be an object", param="metadata")
    top = body.get("top_logprobs")
    include = body.get("include")
    if top is not None or (isinstance(include, list) and "message.output_text.logprobs" in include):
        chat["logprobs"] = True
        if top is not None:
            chat["top_logprobs"] = _checked(top, "integer", "top_logprobs")
    if chat.get("stream"):
        chat["stream_options"] = {"include_usage": True}


def _checked(value: Any, kind: str, param: str) -> Any:
    ok = {
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "integer": _is_int(value),
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
    }[kind]
    if not ok:
        raise Untranslatable(f"'{param}' must be a {kind}", param=param)
    return value


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _messages(history: list[Any], given: list[Any]) -> list[dict[str, Any]]:
    """The chat messages of the previous response's items, then of this request's."""
    out: list[dict[str, Any]] = []
    carrier: dict[str, Any] | None = None  # the assistant message that the next function_call joins
    for i, item in enumerate(history):
        try:
            carrier = _item(item, f"previous_response_id.{i}", out, carrier)
        except Untranslatable as exc:  # the client cannot fix a stored item: name the response, not the path
            raise Untranslatable(f"Item {i} of the previous response: {exc.message}",
                                 param="previous_response_id") from None
    for i, item in enumerate(given):
        carrier = _item(item, f"input.{i}", out, carrier)
    return out


def _item(item: Any, at: str, out: list[dict[str, Any]], carrier: dict[str, Any] | None) -> dict[str, Any] | None:
    """Append one input item's chat message(s) to `out`; return the assistant message that a function_call
    right after it would join."""
    if not isinstance(item, dict):
        raise Untranslatable("An input item must be an object", param=at)
    kind = item.get("type")
    if kind is None and "role" not in item and "id" in item:
        kind = "item_reference"
    if kind is None or kind == "message":
        message = _message(item, at)
        out.append(message)
        return message if message["role"] == "assistant" else None
    if kind == "function_call":
        if carrier is None:
            carrier = {"role": "assistant", "content": None}
            out.append(carrier)
        carrier.setdefault("tool_calls", []).append(_function_call(item, at))
        return carrier
    if kind == "function_call_output":
        out.append(_function_call_output(item, at))
        return None
    if kind == "reasoning":
        return carrier  # dropped, and transparent: the calls after it still join the message before it
    if kind == "item_reference":
        raise Untranslatable("An item_reference points into OpenAI's store, which the model this request was "
                             "routed to cannot read; send the item itself", param=at)
    raise Untranslatable(f"Input items of type '{kind}' have no chat completions form", param=f"{at}.type")


def _message(item: dict[str, Any], at: str) -> dict[str, Any]:
    role = _ROLES.get(_str(item.get("role")))
    if role is None:
        raise Untranslatable("A message's role must be user, assistant, system or developer", param=f"{at}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise Untranslatable("A message's content must be a string or a list of parts", param=f"{at}.content")
    parts = [_part(part, f"{at}.content.{j}") for j, part in enumerate(content)]
    if role == "user":
        return {"role": role, "content": parts}
    for j, part in enumerate(parts):
        if part["type"] != "text":
            raise Untranslatable(f"A{'n' if role == 'assistant' else ''} {role} message can only hold text in "
                                 "chat completions", param=f"{at}.content.{j}.type")
    return {"role": role, "content": "\n".join(part["text"] for part in parts)}


def _part(part: Any, at: str) -> dict[str, Any]:
    """One content part of a message as a chat content part."""
    if not isinstance(part, dict):
        raise Untranslatable("A content part must be an object", param=at)
    kind = part.get("type")
    if isinstance(kind, str) and kind in _TEXT_KINDS:
        return {"type": "text", "text": _string(part, "text", at)}
    if kind == "refusal":
        return {"type": "text", "text": _string(part, "refusal", at)}
    if kind == "input_image":
        return _image(part, at)
    if kind == "input_audio":
        if not isinstance(part.get("input_audio"), dict):
            raise Untranslatable("'input_audio' must be an object", param=f"{at}.input_audio")
        return {"type": "input_audio", "input_audio": part["input_audio"]}
    if kind == "input_file":
        raise Untranslatable("File inputs have no chat completions form that the model this request was routed "
                             "to takes", param=f"{at}.type")
    raise Untranslatable(f"Content parts of type '{kind}' have no chat completions form", param=f"{at}.type")


def _image(part: dict[str, Any], at: str) -> dict[str, Any]:
    url = part.get("image_url")
    if not isinstance(url, str):
        if part.get("file_id") is not None:
            raise Untranslatable("An image given by file_id is in OpenAI's file store, which the model this "
                                 "request was routed to cannot read; send it as image_url", param=f"{at}.file_id")
        raise Untranslatable("An input_image part needs an image_url", param=f"{at}.image_url")
    image: dict[str, Any] = {"url": url}
    if isinstance(detail := part.get("detail"), str):
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _function_call(item: dict[str, Any], at: str) -> dict[str, Any]:
    return {"id": _string(item, "call_id", at), "type": "function",
            "function": {"name": _string(item, "name", at), "arguments": _string(item, "arguments", at)}}


def _function_call_output(item: dict[str, Any], at: str) -> dict[str, Any]:
    call_id = _string(item, "call_id", at)
    output = item.get("output")
    if isinstance(output, list):
        texts = []
        for j, part in enumerate(output):
            if not isinstance(part, dict) or _str(part.get("type")) not in _TEXT_KINDS:
                raise Untranslatable("A chat completions tool message can only hold text",
                                     param=f"{at}.output.{j}.type")
            texts.append(_string(part, "text", f"{at}.output.{j}"))
        output = "\n".join(texts)
    elif not isinstance(output, str):
        raise Untranslatable("'output' must be a string or a list of parts", param=f"{at}.output")
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def _string(obj: dict[str, Any], key: str, at: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise Untranslatable(f"'{key}' must be a string", param=f"{at}.{key}")
    return value


def _tools(body: dict[str, Any], chat: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise Untranslatable("'tools' must be a list", param="tools")
        if tools:  # chat completions refuses an empty list
            chat["tools"] = [_tool(tool, f"tools.{i}") for i, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str) and choice in _TOOL_CHOICES:
        chat["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise Untranslatable("'tool_choice' must be auto, none, required or a function; others have no chat "
                             "completions form", param="tool_choice")


def _tool(tool: Any, at: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise Untranslatable("A tool must be an object", param=at)
    kind = tool.get("type")
    if isinstance(kind, str) and kind in _BUILTIN_TOOLS:
        raise BuiltinToolUnsupported(kind, param=f"{at}.type")
    if kind != "function":
        raise Untranslatable(f"Tools of type '{kind}' have no chat completions form", param=f"{at}.type")
    function: dict[str, Any] = {"name": _string(tool, "name", at)}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _text_format(text: Any, chat: dict[str, Any]) -> None:
    """`text.format` as `response_format`, `text.verbosity` as `verbosity`."""
    if text is None:
        return
    if not isinstance(text, dict):
        raise Untranslatable("'text' must be an object", param="text")
    if (verbosity := text.get("verbosity")) is not None:
        chat["verbosity"] = _checked(verbosity, "string", "text.verbosity")
    fmt = text.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise Untranslatable("'text.format' must be an object", param="text.format")
    kind = fmt.get("type")
    if kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise Untranslatable("'schema' must be an object", param="text.format.schema")
        spec: dict[str, Any] = {"name": _string(fmt, "name", "text.format"), "schema": schema}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                spec[key] = fmt[key]
        chat["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif kind != "text":
        raise Untranslatable(f"The text format '{kind}' has no chat completions form", param="text.format.type")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
