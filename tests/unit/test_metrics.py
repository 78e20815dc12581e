from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.config.loader import load_text
from gateway.errors import UpstreamConnectError, UpstreamServerError
from gateway.metrics import Metrics
from gateway.record import Outcome, RequestRecord

TABLE = load_text("""
backends:
  b: {type: openai, url: http://127.0.0.1:9/v1}
models:
  cheap: {backend: b, price: {input: 1, output: 2}}
  dear:  {backend: b, price: {input: 10, output: 20}}
  spare: {backend: b}
""")


def value(m: Metrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_a_successful_request_counts_everything_once() -> None:
    m = Metrics(CollectorRegistry())
    cheap = TABLE.models["cheap"]
    rec = RequestRecord("r1", 0.0, op="chat", policy="p", reason="cheapest", chosen=cheap, model=cheap, stream=True,
                        status=200, upstream_s=0.5, first_byte_s=0.6, duration_s=1.6,
                        prompt_tokens=10, completion_tokens=11, cost_usd=0.25, savings_usd=1.5)
    m.observe(rec)
    assert value(m, "nanoroute_requests_total", policy="p", model="cheap", outcome="success", api="chat") == 1
    assert value(m, "nanoroute_request_duration_seconds_count", policy="p", model="cheap", stream="true") == 1
    assert value(m, "nanoroute_time_to_first_token_seconds_sum", model="cheap") == 0.6
    assert abs(value(m, "nanoroute_time_per_output_token_seconds_sum", model="cheap") - 0.1) < 1e-9
    assert abs(value(m, "nanoroute_gateway_overhead_seconds_sum") - 0.1) < 1e-9
    assert value(m, "nanoroute_tokens_total", model="cheap", kind="prompt") == 10
    assert value(m, "nanoroute_tokens_total", model="cheap", kind="completion") == 11
    assert value(m, "nanoroute_cost_usd_total", policy="p", model="cheap") == 0.25
    assert value(m, "nanoroute_savings_usd_total", policy="p") == 1.5
    assert value(m, "nanoroute_route_decisions_total", policy="p", model="cheap", reason="cheapest") == 1


def test_fallbacks_name_where_each_failed_attempt_moved_to() -> None:
    m = Metrics(CollectorRegistry())
    models = TABLE.models
    failures = [
        UpstreamConnectError("x", model="dear", backend="b"),
        UpstreamServerError("y", model="spare", backend="b"),
    ]
    m.observe(RequestRecord("r", 0.0, op="chat", policy="p", reason="ordered", chosen=models["dear"],
                            model=models["cheap"],
                            failures=failures, status=200))
    assert value(m, "nanoroute_fallbacks_total", policy="p", from_model="dear", to_model="spare", reason="connect") == 1
    assert value(m, "nanoroute_fallbacks_total", policy="p", from_model="spare", to_model="cheap",
                 reason="server_error") == 1
    assert value(m, "nanoroute_upstream_errors_total", model="dear", kind="connect") == 1


def test_when_every_attempt_fails_the_last_fallback_goes_nowhere() -> None:
    m = Metrics(CollectorRegistry())
    failures = [UpstreamConnectError("x", model="dear", backend="b")]
    m.observe(RequestRecord("r", 0.0, op="chat", policy="p", reason="ordered", chosen=TABLE.models["dear"],
                            failures=failures,
                            status=503, outcome=Outcome.UPSTREAM_ERROR))
    assert value(m, "nanoroute_fallbacks_total", policy="p", from_model="dear", to_model="none", reason="connect") == 1
    assert value(m, "nanoroute_requests_total", policy="p", model="none", outcome="upstream_error", api="chat") == 1
    assert value(m, "nanoroute_tokens_total", model="dear", kind="prompt") == 0


def test_config_info_marks_only_the_served_version() -> None:
    m = Metrics(CollectorRegistry())
    m.config_loaded("aaa", ["cheap"])
    m.config_loaded("bbb", ["cheap"])
    m.reloads_result("success")
    assert value(m, "nanoroute_config_info", version="aaa") == 0
    assert value(m, "nanoroute_config_info", version="bbb") == 1
    assert value(m, "nanoroute_config_reloads_total", result="success") == 1
    assert value(m, "nanoroute_circuit_open", model="cheap") == 0
