"""Anthropic's Messages API (`POST /v1/messages`) in OpenAI's chat completions shape, and back.

`to_chat` turns a Messages request into a chat completions body, or raises `Untranslatable` (a 400) naming
the field that chat completions cannot carry: server tools, documents, images inside tool results.
`from_chat` and `StreamTranslator` turn the answer back into a Message, or into Messages stream events.

Where the two APIs differ, the choices made here:

- Several text blocks become one string, joined by a blank line (`"\\n\\n"`); a user turn that holds images
  keeps its parts in order, as `text` and `image_url` parts.
- A user turn's `tool_result` blocks become `tool` messages placed before the rest of that turn, so that
  they follow the assistant's `tool_calls` as chat completions requires.
- `thinking` and `redacted_thinking` blocks are dropped, and so is the `thinking` option: their signatures
  only mean something to Anthropic's own models. The answer carries no thinking blocks either (`reasoning`
  and `reasoning_content` deltas are ignored): there would be no signature to give them, and a client sends
  its thinking blocks back with the next turn, which Anthropic refuses unsigned if that turn is routed there.
- `output_config.format` (structured outputs) becomes `response_format` `json_schema`.
- A tool call whose arguments are not a JSON object gets `input: {}` in a whole answer; a stream relays
  the argument fragments as they come, as Anthropic's own fine-grained tool streaming does.
- `stop` cannot say which stop sequence matched, so `stop_sequence` is always null and the stop reason is
  `end_turn`.
- OpenAI's `prompt_tokens` counts cached tokens; Anthropic's `input_tokens` does not. When the upstream
  reports `prompt_tokens_details.cached_tokens`, they are moved to `cache_read_input_tokens`.

    request.py   to_chat, Untranslatable
    answer.py    from_chat; status_type, error_body, error_event (Anthropic's error envelope)
    stream.py    StreamTranslator
"""

from __future__ import annotations

from gateway.protocols.anthropic.answer import error_body, error_event, from_chat, status_type
from gateway.protocols.anthropic.request import Untranslatable, to_chat
from gateway.protocols.anthropic.stream import StreamTranslator

__all__ = ["StreamTranslator", "Untranslatable", "error_body", "error_event", "from_chat", "status_type", "to_chat"]
