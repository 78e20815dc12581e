"""Other APIs' requests and answers in OpenAI's chat completions shape, and back.

The gateway routes, falls back, counts and captures in one shape: OpenAI's chat completions. A client
that speaks another API (OpenAI's Responses, `responses.py`; Anthropic's Messages, `anthropic.py`) has
its request turned into a chat completions body, and the answer of a model that does not speak its API
turned back; a model that does speak it gets the client's own request (`Backend.native`).

Each module here has the same four parts, pure functions and one small class with no I/O:

    to_chat(body, ...) -> dict          the request as a chat completions body; InvalidRequest for a bad one
    from_chat(reply, ...) -> dict       a chat completion as the API's answer
    StreamTranslator                    chat completion chunks (SSE bytes, split anywhere) -> the API's events
        .feed(data) -> bytes            bytes to send the client now
        .close() -> bytes               the upstream ended: whatever closing events were not sent yet
        .done                           the API's last event was sent (the answer is whole)
        .usage                          the chat usage object seen in the stream, if any
    error_body(exc) / error_event(exc)  a gateway error in the API's envelope, as a body and as a stream event
"""
