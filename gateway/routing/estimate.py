"""Expected tokens, cost and latency of one request on one model.

- Prompt tokens: `tokens.count` (tiktoken's cl100k_base where available, else characters / 4), once per
  request and only when the matched policy needs it.
- Output tokens: the request's `max_completion_tokens` / `max_tokens`; else the running average of
  answers for the same policy and task; else DEFAULT_OUTPUT_TOKENS. (`max_tokens` is a ceiling, so
  estimates from it are pessimistic, which is the safe side for cost caps and latency SLOs.)
- Latency: time to first token plus output tokens times time per output token, from measurements
  once the model has enough samples (p50 for ranking, p95 for `p95_latency_ms`), else from the
  model's `latency` prior; unknown when neither exists. Plus, for vLLM backends, the expected wait in
  the replica's queue now (`Signals.queue_wait`, from vLLM's own metrics): measurements trail a
  queue that is building up, this does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.table import ModelRoute
from gateway.routing import tokens
from gateway.routing.request import RoutedRequest
from gateway.routing.signals import MIN_SAMPLES, Signals

DEFAULT_OUTPUT_TOKENS = 256


@dataclass(slots=True)
class Estimate:
    model: ModelRoute
    prompt_tokens: int | None
    output_tokens: int
    cost_usd: float | None
    latency_ms: float | None
    """Typical (p50) latency of this request on this model."""
    latency_p95_ms: float | None


def prompt_tokens(req: RoutedRequest, signals: Signals) -> int:
    if req.prompt_tokens is None:
        req.prompt_tokens = tokens.count(req.body, signals.encoder)
    return req.prompt_tokens


def output_tokens(req: RoutedRequest, policy: str, signals: Signals) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = req.body.get(key)
        if isinstance(value, int) and value > 0:
            return value
    learned = signals.expected_output_tokens(policy, req.task)
    return round(learned) if learned is not None else DEFAULT_OUTPUT_TOKENS


def estimate(model: ModelRoute, req: RoutedRequest, policy: str, signals: Signals, *, tokens_needed: bool) -> Estimate:
    pin = prompt_tokens(req, signals) if tokens_needed else None
    return estimate_with(model, pin, output_tokens(req, policy, signals), signals)


def estimate_with(model: ModelRoute, pin: int | None, pout: int, signals: Signals) -> Estimate:
    """The estimate for token counts already worked out (they are the same for every candidate)."""
    cost = usage_cost(model, pin, pout) if pin is not None else None
    p50, p95 = _latency(model, pout, signals)
    return Estimate(model, pin, pout, cost, p50, p95)


def _latency(model: ModelRoute, out: int, signals: Signals) -> tuple[float | None, float | None]:
    queue = 1000.0 * signals.queue_wait(model.backend)
    speed = signals.speed(model.name)
    prior = model.latency
    if speed is not None and speed.tpot.p50 is not None and speed.tpot.count >= MIN_SAMPLES:
        assert speed.tpot.p95 is not None
        ttft50 = speed.ttft.p50 if speed.ttft.p50 is not None else (prior.ttft_ms / 1000 if prior else 0.0)
        ttft95 = speed.ttft.p95 if speed.ttft.p95 is not None else ttft50
        return queue + 1000 * (ttft50 + out * speed.tpot.p50), queue + 1000 * (ttft95 + out * speed.tpot.p95)
    if prior is not None:
        ms = queue + prior.ttft_ms + 1000.0 * out / prior.tokens_per_s
        return ms, ms
    if queue > 0:  # speed unknown, but it will be at least the wait in the queue
        return queue, queue
    return None, None


def usage_cost(model: ModelRoute, prompt: int, completion: int) -> float | None:
    """What a request with this usage costs on this model, from catalog prices; None without a price."""
    if model.input_usd_per_token is None or model.output_usd_per_token is None:
        return None
    return prompt * model.input_usd_per_token + completion * model.output_usd_per_token
