"""Prometheus metric families, created against an explicit registry, fed once per request.

Label values come only from the config (policy and model names) and from fixed sets (outcome, reason,
kind, stream), so the number of series is bounded by the config whatever clients send.

With several worker processes (`nanoroute serve --workers N`) prometheus-client's multiprocess mode
is on (PROMETHEUS_MULTIPROC_DIR, set by the server): counters and histograms are summed across workers
at scrape time; each gauge says how it combines.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.errors import CascadeEscalated
from gateway.record import NONE, RequestRecord

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 20, 40)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1)
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
QUALITY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def multiprocess() -> bool:
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # `_created` samples double the series count and no dashboard here reads them.
        disable_created_metrics()
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("nanoroute_requests", "Requests by policy, answering model, outcome and the API they "
                                "came in by (chat, completions, embeddings, responses, messages, count_tokens)",
                                ["policy", "model", "outcome", "api"], registry=r)
        self.duration = Histogram("nanoroute_request_duration_seconds", "Whole request, arrival to last byte",
                                  ["policy", "model", "stream"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("nanoroute_time_to_first_token_seconds",
                              "Arrival to the first content chunk relayed (streams)", ["model"],
                              buckets=TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("nanoroute_time_per_output_token_seconds",
                              "Decode time per output token after the first (streams)", ["model"],
                              buckets=TPOT_BUCKETS, registry=r)
        self.overhead = Histogram("nanoroute_gateway_overhead_seconds",
                                  "Time spent in the gateway itself before the response started, upstream "
                                  "waits excluded", buckets=OVERHEAD_BUCKETS, registry=r)
        self.tokens = Counter("nanoroute_tokens", "Tokens from upstream usage", ["model", "kind"], registry=r)
        self.cost = Counter("nanoroute_cost_usd", "Spend from usage and catalog prices, USD", ["policy", "model"],
                            registry=r)
        self.savings = Counter("nanoroute_savings_usd",
                               "Spend avoided against the policy's most expensive candidate, USD", ["policy"],
                               registry=r)
        self.decisions = Counter("nanoroute_route_decisions", "Routing decisions by first-choice model and reason",
                                 ["policy", "model", "reason"], registry=r)
        self.fallbacks = Counter("nanoroute_fallbacks", "Moves from a failed model to the next",
                                 ["policy", "from_model", "to_model", "reason"], registry=r)
        self.upstream_errors = Counter("nanoroute_upstream_errors", "Failed upstream attempts by kind",
                                       ["model", "kind"], registry=r)
        self.circuit_open = Gauge("nanoroute_circuit_open",
                                  "1 while no replica of the model is closed (breakers open, health checks failing)",
                                  ["model"], multiprocess_mode="max", registry=r)
        self.breaker_checks = Counter("nanoroute_breaker_checks",
                                      "Checks of a model before its breaker opens on failures one client could "
                                      "cause: failing (it opens) or answered (it stays closed)",
                                      ["model", "result"], registry=r)
        self.replica_up = Gauge("nanoroute_replica_up",
                                "0 while a backend replica is out (failed health checks, connection failures)",
                                ["backend", "replica"], multiprocess_mode="livemin", registry=r)
        self.in_flight = Gauge("nanoroute_in_flight_requests", "Upstream requests in flight per model",
                               ["model"], multiprocess_mode="livesum", registry=r)
        self.reloads = Counter("nanoroute_config_reloads", "Config loads by result", ["result"], registry=r)
        self.adapter_loads = Counter("nanoroute_adapter_loads", "LoRA adapter loads on vLLM replicas by outcome",
                                     ["backend", "adapter", "outcome"], registry=r)
        self.queue_wait = Gauge("nanoroute_backend_queue_wait_seconds",
                                "Expected queueing delay on the backend's least-loaded vLLM replica",
                                ["backend"], multiprocess_mode="livemax", registry=r)
        self.rollout_stage = Gauge("nanoroute_rollout_stage", "1 for the stage a policy's rollout is in",
                                   ["policy", "model", "stage"], multiprocess_mode="livemax", registry=r)
        self.rollout_share = Gauge("nanoroute_rollout_share", "Traffic share the rolled-out model serves",
                                   ["policy", "model"], multiprocess_mode="livemax", registry=r)
        self.rollout_score = Gauge("nanoroute_rollout_score", "Live score of the rolled-out model in its current stage",
                                   ["policy", "model"], multiprocess_mode="livemax", registry=r)
        self.rollout_transitions = Counter("nanoroute_rollout_transitions", "Rollout stage changes, by stage entered",
                                           ["policy", "model", "stage"], registry=r)
        self.rollout_comparisons = Counter("nanoroute_rollout_comparisons",
                                           "Answers compared off the request path, by outcome",
                                           ["policy", "model", "outcome"], registry=r)
        self.rollout_cost = Counter("nanoroute_rollout_mirror_cost_usd",
                                    "Spend on mirrored (shadow, audit) requests and on a judge grading them",
                                    ["policy", "model"], registry=r)
        self.config_info = Gauge("nanoroute_config_info", "1 for the config version being served",
                                 ["version"], multiprocess_mode="livemax", registry=r)
        self.capture_written = Counter("nanoroute_capture_written", "Captured requests written, by task file set",
                                       ["task"], registry=r)
        self.capture_dropped = Counter("nanoroute_capture_dropped",
                                       "Sampled requests not written: queue_full, too_large, write_error, invalid, "
                                       "shutdown", ["reason"], registry=r)
        self.spend = Counter("nanoroute_spend_usd", "Spend of governed keys by team, key (`-` unless "
                             "governance.key_labels) and answering model, USD: the ledger's figures",
                             ["team", "key", "model"], registry=r)
        self.limited = Counter("nanoroute_limited", "Requests refused by a key's or team's limits, by reason: "
                               "requests, tokens, in_flight, budget, reserved", ["team", "key", "reason"], registry=r)
        self.governance_store_errors = Counter("nanoroute_governance_store_errors",
                                               "Store failures of governance, by operation (admit, settle, keys) and "
                                               "what was done (allowed, denied, retried)", ["operation", "action"],
                                               registry=r)
        self.governance_pending = Gauge("nanoroute_governance_pending_settlements",
                                        "Ended requests whose counts wait for the store to be written",
                                        multiprocess_mode="livesum", registry=r)
        self.router_predicted = Histogram("nanoroute_router_predicted_quality",
                                          "`learned` policies: the predicted score of the model that answered",
                                          ["policy", "model"], buckets=QUALITY_BUCKETS, registry=r)
        self.router_observed = Counter("nanoroute_router_quality_observed",
                                       "`learned` policies: the sum of observed scores (feedback, rollout comparisons)"
                                       " of answers the router predicted", ["policy", "model", "source"], registry=r)
        self.router_expected = Counter("nanoroute_router_quality_predicted",
                                       "`learned` policies: the sum of the predicted scores of the same answers",
                                       ["policy", "model", "source"], registry=r)
        self.router_samples = Counter("nanoroute_router_quality_samples",
                                      "`learned` policies: answers with both a predicted and an observed score",
                                      ["policy", "model", "source"], registry=r)
        self._version: str | None = None
        self._children: dict[tuple[Any, ...], Any] = {}

    def reloads_result(self, result: str) -> None:
        self.reloads.labels(result).inc()

    def config_loaded(self, version: str, models: list[str]) -> None:
        if self._version is not None and self._version != version:
            self.config_info.labels(self._version).set(0)
        self._version = version
        self.config_info.labels(version).set(1)
        for name in models:  # so dashboards show every model from the start
            self.circuit_open.labels(name).set(0)
            self.in_flight.labels(name)

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, cached: labels() takes a lock and rebuilds its key on every call.
        The cache is as bounded as the label values (config names and fixed sets)."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def predicted(self, policy: str, model: str, score: float) -> None:
        self._child(self.router_predicted, policy, model).observe(score)

    def compared(self, policy: str, model: str, source: str, predicted: float, observed: float) -> None:
        """An observed score of an answer whose score a `learned` policy's router predicted."""
        self._child(self.router_samples, policy, model, source).inc()
        self._child(self.router_expected, policy, model, source).inc(predicted)
        self._child(self.router_observed, policy, model, source).inc(observed)

    def spent(self, team: str, key: str, model: str, usd: float) -> None:
        """A governed key's spend, as the ledger charges it."""
        self._child(self.spend, team, key, model).inc(usd)

    def observe(self, rec: RequestRecord) -> None:
        child = self._child
        model = rec.model.name if rec.model is not None else NONE
        policy = rec.policy
        child(self.requests, policy, model, rec.outcome, rec.op).inc()
        child(self.duration, policy, model, "true" if rec.stream else "false").observe(rec.duration_s)
        if rec.first_byte_s is not None:
            self.overhead.observe(max(0.0, rec.first_byte_s - rec.upstream_s))
        if rec.chosen is not None:
            child(self.decisions, policy, rec.chosen.name, rec.reason).inc()
        for i, err in enumerate(rec.failures):
            # Skips (circuit open, overloaded, too small) and cascade escalations count as fallbacks only.
            if err.attempted and not isinstance(err, CascadeEscalated):
                child(self.upstream_errors, err.model, err.kind).inc()
            nxt = rec.failures[i + 1].model if i + 1 < len(rec.failures) else model
            child(self.fallbacks, policy, err.model, nxt, err.kind).inc()
        if rec.model is None:
            return
        if rec.stream and rec.first_byte_s is not None:
            child(self.ttft, model).observe(rec.first_byte_s)
            if rec.completion_tokens and rec.completion_tokens > 1:
                decode = rec.duration_s - rec.first_byte_s
                child(self.tpot, model).observe(decode / (rec.completion_tokens - 1))
        if rec.prompt_tokens is not None:
            child(self.tokens, model, "prompt").inc(rec.prompt_tokens)
        if rec.completion_tokens is not None:
            child(self.tokens, model, "completion").inc(rec.completion_tokens)
        if rec.cost_usd is not None:
            child(self.cost, policy, model).inc(rec.cost_usd)
        if rec.savings_usd is not None:
            child(self.savings, policy).inc(rec.savings_usd)

    async def serve(self, host: str, port: int) -> Callable[[], Awaitable[None]]:
        """Serve GET /metrics on a port of its own (as well as on the API's port); returns the stopper.
        Several workers share the port (SO_REUSEPORT); any of them answers for all."""
        from aiohttp import web

        async def handler(_: web.Request) -> web.Response:
            return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE})

        app = web.Application()
        app.router.add_get("/metrics", handler)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_port=True).start()
        return runner.cleanup

    def exposition(self) -> bytes:
        if multiprocess():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

