"""A Messages request as a chat completions body (see the package's docstring for the choices made)."""

from __future__ import annotations

from typing import Any, TypeGuard

import orjson

from gateway.errors import InvalidRequest


class Untranslatable(InvalidRequest):
    """The request is not a valid Messages request, or says something chat completions cannot express.

    `param` is the path of the offending field, e.g. `messages.2.content.0.type`.
    """



_JOIN = "\n\n"
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
_COPIED_NUMBERS = ("temperature", "top_p", "top_k")


# -- request: Messages -> chat completions -------------------------------------------------------------------


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Messages request body as a chat completions body; `Untranslatable` names what cannot be carried."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Untranslatable("'model' must be a non-empty string", param="model")
    max_tokens = body.get("max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise Untranslatable("'max_tokens' must be an integer of at least 1", param="max_tokens")
    chat: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    chat["messages"] = _system(body.get("system")) + _messages(body.get("messages"))
    _options(body, chat)
    _tools(body, chat)
    return chat


def _options(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """Sampling, streaming, stop sequences, user and output format."""
    for name in _COPIED_NUMBERS:
        value = body.get(name)
        if value is not None:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise Untranslatable(f"'{name}' must be a number", param=name)
            chat[name] = value
    if (stream := body.get("stream")) is not None:
        if not isinstance(stream, bool):
            raise Untranslatable("'stream' must be a boolean", param="stream")
        chat["stream"] = stream
    if (stops := body.get("stop_sequences")) is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise Untranslatable("'stop_sequences' must be a list of strings", param="stop_sequences")
        if stops:
            chat["stop"] = stops
    if (metadata := body.get("metadata")) is not None:
        if not isinstance(metadata, dict):
            raise Untranslatable("'metadata' must be an object", param="metadata")
        if isinstance(user := metadata.get("user_id"), str):
            chat["user"] = user
    if (output := body.get("output_config")) is not None:
        _output_format(output, chat)


def _output_format(output: Any, chat: dict[str, Any]) -> None:
    if not isinstance(output, dict):
        raise Untranslatable("'output_config' must be an object", param="output_config")
    fmt = output.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise Untranslatable("'output_config.format' must be {'type': 'json_schema', 'schema': {...}}",
                             param="output_config.format")
    chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    text = _plain_text(system, "system")
    return [{"role": "system", "content": text}] if text else []


def _plain_text(content: Any, path: str) -> str:
    """A string, or a list of text blocks joined; anything else is refused."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise Untranslatable(f"'{path}' must be a string or a list of text blocks", param=path)
    texts = []
    for i, block in enumerate(content):
        where = f"{path}.{i}"
        kind = _block_type(block, where)
        if kind != "text":
            raise Untranslatable(f"a '{kind}' block cannot be sent here; only text blocks can", param=f"{where}.type")
        texts.append(_text(block, where))
    return _JOIN.join(t for t in texts if t)


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise Untranslatable("'messages' must be a non-empty list", param="messages")
    chat: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise Untranslatable(f"'{where}' must be an object", param=where)
        role, content = message.get("role"), message.get("content")
        if not isinstance(content, str | list):
            raise Untranslatable(f"'{where}.content' must be a string or a list of blocks", param=f"{where}.content")
        if role == "user":
            chat += _user(content, f"{where}.content")
        elif role == "assistant":
            chat.append(_assistant(content, f"{where}.content"))
        elif role == "system":
            chat.append({"role": "system", "content": _plain_text(content, f"{where}.content")})
        else:
            raise Untranslatable(f"'{where}.role' must be 'user' or 'assistant'", param=f"{where}.role")
    return chat


def _user(content: str | list[Any], path: str) -> list[dict[str, Any]]:
    """One user turn: its tool results as `tool` messages first, then the rest as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        where = f"{path}.{i}"
        kind = _block_type(block, where)
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, where)})
        elif kind == "image":
            parts.append(_image(block, where))
        elif kind == "tool_result":
            results.append(_tool_result(block, where))
        else:
            raise _unsupported_block(kind, where)
    if results and not parts:
        return results
    if any(part["type"] == "image_url" for part in parts):
        return [*results, {"role": "user", "content": parts}]
    return [*results, {"role": "user", "content": _JOIN.join(part["text"] for part in parts if part["text"])}]


def _assistant(content: str | list[Any], path: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        where = f"{path}.{i}"
        kind = _block_type(block, where)
        if kind == "text":
            texts.append(_text(block, where))
        elif kind == "tool_use":
            calls.append(_tool_call(block, where))
        elif kind not in _DROPPED_BLOCKS:
            raise _unsupported_block(kind, where)
    message: dict[str, Any] = {"role": "assistant",
                               "content": _JOIN.join(t for t in texts if t) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_call(block: dict[str, Any], path: str) -> dict[str, Any]:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise Untranslatable("a tool_use block needs a string 'id'", param=f"{path}.id")
    if not isinstance(name, str) or not name:
        raise Untranslatable("a tool_use block needs a string 'name'", param=f"{path}.name")
    if not isinstance(arguments, dict):
        raise Untranslatable("a tool_use block's 'input' must be an object", param=f"{path}.input")
    function = {"name": name, "arguments": orjson.dumps(arguments).decode()}
    return {"id": call_id, "type": "function", "function": function}


def _tool_result(block: dict[str, Any], path: str) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise Untranslatable("a tool_result block needs a string 'tool_use_id'", param=f"{path}.tool_use_id")
    content = block.get("content", "")
    text = _plain_text(content, f"{path}.content")
    if block.get("is_error") is True:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _image(block: dict[str, Any], path: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise Untranslatable("an image block needs a 'source' object", param=f"{path}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            raise Untranslatable("a base64 image needs string 'media_type' and 'data'", param=f"{path}.source")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        link = source.get("url")
        if not isinstance(link, str) or not link:
            raise Untranslatable("a url image needs a string 'url'", param=f"{path}.source.url")
        url = link
    else:
        raise Untranslatable(f"an image source of type '{kind}' cannot be sent to this model; use base64 or url",
                             param=f"{path}.source.type")
    return {"type": "image_url", "image_url": {"url": url}}


def _block_type(block: Any, path: str) -> str:
    if not isinstance(block, dict) or not isinstance(kind := block.get("type"), str):
        raise Untranslatable(f"'{path}' must be a content block with a string 'type'", param=f"{path}.type")
    return kind


def _text(block: dict[str, Any], path: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise Untranslatable("a text block needs a string 'text'", param=f"{path}.text")
    return text


def _unsupported_block(kind: str, path: str) -> Untranslatable:
    return Untranslatable(f"a '{kind}' block cannot be expressed in chat completions, which the model this "
                          "request was routed to speaks", param=f"{path}.type")


def _tools(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """`tools` as functions; `tool_choice` and `parallel_tool_calls` only with them, as OpenAI requires."""
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise Untranslatable("'tools' must be a list", param="tools")
    functions = [_function(tool, f"tools.{i}") for i, tool in enumerate(tools or [])]
    choice = body.get("tool_choice")
    choice, parallel = (None, True) if choice is None else _tool_choice(choice)
    if functions:
        chat["tools"] = functions
        if choice is not None:
            chat["tool_choice"] = choice
        if not parallel:
            chat["parallel_tool_calls"] = False


def _function(tool: Any, path: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise Untranslatable(f"'{path}' must be an object", param=path)
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise Untranslatable(f"The tool type '{kind}' runs on Anthropic's servers; the model this request was "
                             "routed to cannot run it", param=f"{path}.type")
    name, schema, description = tool.get("name"), tool.get("input_schema"), tool.get("description")
    if not isinstance(name, str) or not name:
        raise Untranslatable("a tool needs a string 'name'", param=f"{path}.name")
    if not isinstance(schema, dict):
        raise Untranslatable("a tool needs an 'input_schema' object", param=f"{path}.input_schema")
    function: dict[str, Any] = {"name": name, "parameters": schema}
    if description is not None:
        if not isinstance(description, str):
            raise Untranslatable("a tool's 'description' must be a string", param=f"{path}.description")
        function["description"] = description
    strict = tool.get("strict")
    if strict is not None:  # inputs that must match the schema: vLLM and OpenAI hold the call to it
        if not isinstance(strict, bool):
            raise Untranslatable("a tool's 'strict' must be a boolean", param=f"{path}.strict")
        function["strict"] = strict
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> tuple[str | dict[str, Any], bool]:
    """OpenAI's `tool_choice`, and whether several tool calls may come at once."""
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise Untranslatable("tool_choice of type 'tool' needs a string 'name'", param="tool_choice.name")
        openai: str | dict[str, Any] = {"type": "function", "function": {"name": name}}
    elif isinstance(kind, str) and kind in _TOOL_CHOICES:
        openai = _TOOL_CHOICES[kind]
    else:
        raise Untranslatable("'tool_choice.type' must be 'auto', 'any', 'tool' or 'none'", param="tool_choice.type")
    return openai, choice.get("disable_parallel_tool_use") is not True


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


