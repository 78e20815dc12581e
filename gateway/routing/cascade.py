"""`cascade`: is a cheaper model's answer good enough to stop, or does the request escalate?

`verdict()` returns None for an answer that passes every declared check, else the name of the check it
failed (a fixed set: json, refusal, regex, logprob; and size, for a stream too long to hold and check).
Streams are judged on the text assembled from their chunks. The checks read only what the answer says;
they never call a model.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.backends.base import Reply, ReplyStream
from gateway.config.table import ModelRoute, PolicyRoute
from gateway.errors import CascadeEscalated, UpstreamError
from gateway.routing.decide import Decision
from gateway.routing.request import RoutedRequest

MAX_BUFFER = 4 << 20
"""The most of a cascading model's stream held to be checked; a longer answer escalates (check `size`)."""

_REFUSALS = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry, (but )?i|i can(no|')t (help|assist|do|provide)|i cannot|"
    r"i'?m (not able|unable) to|i am (not able|unable) to|as an ai)",
    re.IGNORECASE,
)


def wants_logprobs(policy: PolicyRoute) -> bool:
    """Whether the policy's cascade checks log-probabilities (which the gateway then asks the upstream for)."""
    return policy.cascade is not None and policy.cascade.min_mean_logprob is not None


def verdict(policy: PolicyRoute, req: RoutedRequest, text: str | None, refusal: str | None,
            logprobs: list[float] | None) -> str | None:
    c = policy.cascade
    assert c is not None
    if c.refusal and (refusal or not (text or "").strip() or _REFUSALS.match(text or "")):
        return "refusal"
    text = text or ""
    if c.check_json and req.json_mode:
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError:
            return "json"
    if policy.cascade_regex is not None and policy.cascade_regex.search(text) is None:
        return "regex"
    if c.min_mean_logprob is not None and (not logprobs or sum(logprobs) / len(logprobs) < c.min_mean_logprob):
        return "logprob"
    return None


def judge_json(policy: PolicyRoute, req: RoutedRequest, parsed: dict[str, Any]) -> str | None:
    """The verdict on a chat or text completion body (its first choice)."""
    choices = parsed.get("choices")
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = first.get("message")
    if isinstance(message, dict):
        text, refusal = message.get("content"), message.get("refusal")
    else:
        text, refusal = first.get("text"), None
    return verdict(policy, req, text if isinstance(text, str) else None,
                   refusal if isinstance(refusal, str) else None, _logprobs(first.get("logprobs")))


def judge_stream(policy: PolicyRoute, req: RoutedRequest, events: bytes) -> str | None:
    """The verdict on a buffered event stream: its first choice's deltas, assembled."""
    text: list[str] = []
    refusal: list[str] = []
    logprobs: list[float] = []
    for line in events.split(b"\n"):
        if not line.startswith(b"data:") or line.strip() == b"data: [DONE]":
            continue
        try:
            obj = orjson.loads(line[5:])
        except orjson.JSONDecodeError:
            return "json"
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text.append(delta.get("content") or choice.get("text") or "")
            refusal.append(delta.get("refusal") or "")
            logprobs += _logprobs(choice.get("logprobs")) or []
    return verdict(policy, req, "".join(text), "".join(refusal) or None, logprobs or None)


def _logprobs(block: object) -> list[float] | None:
    """Token log-probabilities from a chat (`content: [{logprob}]`) or text (`token_logprobs`) block."""
    if not isinstance(block, dict):
        return None
    if isinstance(block.get("content"), list):
        tokens = block["content"]
        return [t["logprob"] for t in tokens if isinstance(t, dict) and isinstance(t.get("logprob"), float | int)]
    if isinstance(block.get("token_logprobs"), list):
        return [v for v in block["token_logprobs"] if isinstance(v, float | int)]
    return None


class Gate:
    """A cascade's checks for one request, as the attempt chain's `accept` hooks.

    Only the cascading models (all ranked candidates but the last) are checked; the last one, and the
    policy's fallback models, answer as they are. A checked stream is read to its end before it is
    judged (`cascade.stream: buffer`); `replay` then hands the bytes to the relay.
    """

    def __init__(self, decision: Decision, req: RoutedRequest) -> None:
        assert decision.route is not None
        self.policy = decision.route
        self.req = req
        self.checked = frozenset(m.name for m in decision.chain[:decision.cascade_depth])
        self._buffered: dict[str, bytes] = {}

    @staticmethod
    def wanted(decision: Decision, req: RoutedRequest) -> bool:
        c = decision.route.cascade if decision.route is not None else None
        return decision.cascade_depth > 0 and c is not None and (not req.stream or c.stream == "buffer")

    async def judge_reply(self, model: ModelRoute, reply: Reply) -> UpstreamError | None:
        if model.name not in self.checked:
            return None
        check = judge_json(self.policy, self.req, reply.parsed)
        return None if check is None else CascadeEscalated(check, model=model.name, backend=model.backend)

    async def judge_stream(self, model: ModelRoute, stream: ReplyStream) -> UpstreamError | None:
        if model.name not in self.checked:
            return None
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in stream:
                parts.append(chunk)
                size += len(chunk)
                if size > MAX_BUFFER:  # too long to hold and check whole: the next model answers
                    await stream.aclose()
                    return CascadeEscalated("size", model=model.name, backend=model.backend)
        except UpstreamError as exc:
            await stream.aclose()
            return exc
        data = b"".join(parts)
        check = judge_stream(self.policy, self.req, data)
        if check is not None:
            await stream.aclose()
            return CascadeEscalated(check, model=model.name, backend=model.backend)
        self._buffered[model.name] = data
        return None

    def replay(self, model: ModelRoute) -> bytes | None:
        """The buffered events of a checked stream that passed, to relay instead of reading upstream."""
        return self._buffered.get(model.name)


def strip_logprobs(parsed: dict[str, Any]) -> bytes:
    """The answer without the log-probabilities the gateway asked for on the client's behalf."""
    for choice in parsed.get("choices") or ():
        if isinstance(choice, dict) and "logprobs" in choice:
            choice["logprobs"] = None
    return orjson.dumps(parsed)
