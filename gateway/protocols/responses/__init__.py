"""OpenAI's Responses API (`POST /v1/responses`) in OpenAI's chat completions shape, and back.

`to_chat` turns a Responses request (after the input and output items of the previous response, which the
gateway keeps) into a chat completions body, or raises `Untranslatable` (a 400) naming the field that chat
completions cannot carry; `BuiltinToolUnsupported` for a tool that runs on OpenAI's servers. `input_items`
is what the store keeps of a request for the next turn. `from_chat` and `StreamTranslator` turn the answer
back into a Response object, or into the Responses stream's events.

Where the two APIs differ, the choices made here:

- A system, developer or assistant message's text parts become one string, joined by a newline; a user
  message keeps its parts (`text`, `image_url`, `input_audio`). Chat completions has no developer role:
  developer messages become system messages.
- `function_call` items become an assistant message's `tool_calls`: consecutive ones share one message,
  carried by the assistant text message right before them if there is one. `reasoning` items are dropped:
  their encrypted content only means something to OpenAI's own models.
- `max_output_tokens` becomes `max_tokens`, which vLLM and every compatible server take.
- Logprobs are asked for (`logprobs: true`) when `include` names `message.output_text.logprobs` or
  `top_logprobs` is set, since chat completions refuses `top_logprobs` without it.
- A stream always asks for usage (`stream_options.include_usage`): a Response always reports it.
- Output item ids are derived from the response id (`msg_<id>_<n>`, `fc_<id>_<n>`, `n` the output index),
  so that a stream and a whole answer name their items alike.
- On `length` or `content_filter` the response is `incomplete`, and so is its last output item.
- The stream closes an output item when the next one begins (as OpenAI does), so a tool call that the
  upstream goes back to afterwards is `UpstreamMalformed`; an error chunk mid-stream is `UpstreamServerError`.
  Both raise from `feed()`; the relay then sends `error_event()`.

    request.py   to_chat, input_items, Untranslatable, BuiltinToolUnsupported
    answer.py    from_chat; error_body, error_event
    stream.py    StreamTranslator
"""

from __future__ import annotations

from gateway.protocols.responses.answer import error_body, error_event, from_chat
from gateway.protocols.responses.request import BuiltinToolUnsupported, Untranslatable, input_items, to_chat
from gateway.protocols.responses.stream import StreamTranslator

__all__ = ["BuiltinToolUnsupported", "StreamTranslator", "Untranslatable", "error_body", "error_event", "from_chat",
           "input_items", "to_chat"]
