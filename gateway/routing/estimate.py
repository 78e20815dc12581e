"""Expected tokens, cost and latency of one request on one model, from the catalog's figures.

Prompt tokens are approximated as one token per four bytes of the request body (OpenAI's rule of
thumb for English text); expected output tokens are the request's `max_tokens` (or
`max_completion_tokens`), else DEFAULT_OUTPUT_TOKENS.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.table import ModelRoute
from gateway.routing.request import RoutedRequest

BYTES_PER_TOKEN = 4
DEFAULT_OUTPUT_TOKENS = 256


@dataclass(frozen=True, slots=True)
class Estimate:
    model: ModelRoute
    prompt_tokens: int
    output_tokens: int
    cost_usd: float | None
    latency_ms: float | None


def prompt_tokens(req: RoutedRequest) -> int:
    return max(1, len(req.raw) // BYTES_PER_TOKEN)


def output_tokens(req: RoutedRequest) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = req.body.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_OUTPUT_TOKENS


def estimate(model: ModelRoute, req: RoutedRequest) -> Estimate:
    pin, pout = prompt_tokens(req), output_tokens(req)
    cost = None
    if model.input_usd_per_token is not None and model.output_usd_per_token is not None:
        cost = pin * model.input_usd_per_token + pout * model.output_usd_per_token
    latency = None
    if model.latency is not None:
        latency = model.latency.ttft_ms + 1000.0 * pout / model.latency.tokens_per_s
    return Estimate(model, pin, pout, cost, latency)


def usage_cost(model: ModelRoute, prompt: int, completion: int) -> float | None:
    """What a request with this usage costs on this model, from catalog prices; None without a price."""
    if model.input_usd_per_token is None or model.output_usd_per_token is None:
        return None
    return prompt * model.input_usd_per_token + completion * model.output_usd_per_token
