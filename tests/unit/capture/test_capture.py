"""Sampling, the bounded queue and the writer (gateway/capture/capture.py), without HTTP."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from gateway.backends.base import Operation
from gateway.capture.capture import Capture, Sample, encode
from gateway.capture.sink import LocalSink, files_in
from gateway.config.loader import load_text
from gateway.config.table import PolicyRoute, RoutingTable
from gateway.errors import StorageUnavailable
from gateway.metrics import Metrics
from gateway.record import MAX_KEPT_BYTES, Outcome, RequestRecord
from gateway.routing.request import RoutedRequest, parse_request

CONFIG = """
backends: {{b: {{type: openai, url: http://127.0.0.1:9/v1}}}}
models: {{m: {{backend: b, name: up-m, quality: {{triage: 0.9}}}}}}
policies:
  - {{name: p, candidates: [m], capture: {capture}}}
"""


def table(capture: str = "{sample: 1.0}") -> RoutingTable:
    return load_text(CONFIG.format(capture=capture))


def route(t: RoutingTable) -> PolicyRoute:
    return t.policies[0]


def request(task: str | None = "triage", op: Operation = Operation.CHAT, content: str = "hi") -> RoutedRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": content}]} if op is Operation.CHAT else {
        "model": "m", "prompt": "hi"}
    return parse_request(op, orjson.dumps(body), task_header=task, key_id="k1", request_id="r1")


REPLY = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "billing"}, "finish_reason": "stop"}]}


def record(t: RoutingTable, outcome: str = Outcome.SUCCESS) -> RequestRecord:
    """A finished request whose answer its record kept, as the relay keeps a sampled request's."""
    rec = RequestRecord("r1", 0.0, op="chat", task="triage", policy="p", model=t.models["m"], status=200,
                        outcome=outcome, prompt_tokens=7, completion_tokens=5, duration_s=0.25, key_id="k1",
                        keep=True, reply=REPLY, kept_bytes=len(orjson.dumps(REPLY)))
    return rec


def test_sampling_takes_the_configured_share() -> None:
    t = table("{sample: 0.25}")
    random.seed(7)
    taken = sum(Capture.sample(route(t), request(), t) is not None for _ in range(4000))
    assert 850 <= taken <= 1150
    t0 = table("{sample: 0.0}")
    assert all(Capture.sample(route(t0), request(), t0) is None for _ in range(200))


def test_only_chat_and_only_the_listed_tasks_are_sampled() -> None:
    t = table("{sample: 1.0, tasks: [triage]}")
    assert Capture.sample(route(t), request("triage"), t) is not None
    assert Capture.sample(route(t), request("other"), t) is None
    assert Capture.sample(route(t), request(None), t) is None
    assert Capture.sample(route(t), request(op=Operation.COMPLETIONS), t) is None


def test_file_sets_come_from_the_config_never_from_the_client() -> None:
    t = table()
    assert Capture.sample(route(t), request("triage"), t).file_set == "triage"  # type: ignore[union-attr]
    assert Capture.sample(route(t), request("a/../../x"), t).file_set == "p"  # type: ignore[union-attr]
    assert Capture.sample(route(t), request(None), t).file_set == "p"  # type: ignore[union-attr]


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def capture_for(tmp_path: Path, queue: int = 10) -> tuple[Capture, Metrics]:
    metrics = Metrics(CollectorRegistry())
    return Capture(LocalSink(tmp_path, 1 << 20, 1 << 30), metrics, queue), metrics


def sampled(t: RoutingTable, content: str = "hi") -> Sample:
    s = Capture.sample(route(t), request(content=content), t)
    assert s is not None
    return s


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path: Path) -> None:
    t = table()
    cap, metrics = capture_for(tmp_path, queue=3)
    for _ in range(5):
        cap.offer(sampled(t), record(t))
    assert counter(metrics, "nanoroute_capture_dropped_total", reason="queue_full") == 2


def test_failed_requests_and_oversized_streams_are_not_queued(tmp_path: Path) -> None:
    t = table()
    cap, metrics = capture_for(tmp_path, queue=1)
    cap.offer(sampled(t), record(t, outcome=Outcome.STREAM_ERROR))
    big = record(t)
    big.reply, big.events, big.kept_bytes = None, [], MAX_KEPT_BYTES + 1  # a stream too long to keep
    cap.offer(sampled(t), big)
    assert counter(metrics, "nanoroute_capture_dropped_total", reason="too_large") == 1
    cap.offer(sampled(t), record(t))  # the queue (of one) is still empty
    assert counter(metrics, "nanoroute_capture_dropped_total", reason="queue_full") == 0


def test_the_writer_redacts_writes_and_counts(tmp_path: Path) -> None:
    t = table()
    cap, metrics = capture_for(tmp_path)

    async def run() -> None:
        cap.start()
        for i in range(3):
            cap.offer(sampled(t, content=f"ticket {i} from jo@example.com"), record(t))
        await cap.stop()

    asyncio.run(run())
    rows = [json.loads(line) for f in files_in(tmp_path / "tasks" / "triage") for line in f.read_text().splitlines()]
    assert [r["request"]["messages"][0]["content"] for r in rows] == [
        f"ticket {i} from [REDACTED:email]" for i in range(3)]
    assert rows[0]["answer"] == {"role": "assistant", "content": "billing"}
    assert counter(metrics, "nanoroute_capture_written_total", task="triage") == 3


class BrokenSink:
    def __init__(self) -> None:
        self.calls = 0

    def write(self, file_set: str, lines: Sequence[bytes]) -> None:
        self.calls += 1
        raise OSError(28, "No space left on device")

    def close(self) -> None:
        pass


def test_write_errors_are_counted_never_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    t = table()
    metrics = Metrics(CollectorRegistry())
    sink = BrokenSink()
    cap = Capture(sink, metrics, 100)

    async def run() -> None:
        cap.start()
        for _ in range(4):
            cap.offer(sampled(t), record(t))
            await asyncio.sleep(0.05)  # one batch each
        await cap.stop()
        with pytest.raises(StorageUnavailable):
            await cap.feedback({"request_id": "r1", "score": 1}, t.redactor)

    asyncio.run(run())
    assert sink.calls == 5
    assert counter(metrics, "nanoroute_capture_dropped_total", reason="write_error") == 4
    assert sum("No space left" in r.getMessage() for r in caplog.records) == 2  # once a minute, and feedback's


def test_stop_counts_what_it_could_not_write(tmp_path: Path) -> None:
    t = table()
    cap, metrics = capture_for(tmp_path)

    async def run() -> None:
        for _ in range(3):  # no writer started: nothing drains the queue
            cap.offer(sampled(t), record(t))
        cap.start()
        await cap._writer.stop()  # a writer that is gone
        await cap.stop(grace_s=0.05)

    asyncio.run(run())
    assert counter(metrics, "nanoroute_capture_dropped_total", reason="shutdown") == 3


def test_the_record_format() -> None:
    t = table()
    s = Capture.sample(route(t), request(content="call +1 415 555 0132"), t)
    assert s is not None
    rec = record(t)
    rec.reply, rec.events = None, [  # a stream, as the relay kept it
        b'data: {"choices": [{"index": 0, "delta": {"content": "bill"}, "finish_reason": null}]}\n\n',
        b'data: {"choices": [{"index": 0, "delta": {"content": "ing"}, "finish_reason": "stop"}]}\n\n'
        b"data: [DONE]\n\n"]
    rec.stream, rec.first_byte_s = True, 0.1
    row = json.loads(encode(s, rec))
    assert set(row) == {"ts", "request_id", "task", "policy", "model", "upstream_model", "stream", "request",
                        "answer", "finish_reason", "usage", "cost_usd", "latency_s", "ttft_s", "fallbacks", "client"}
    assert row["ts"].endswith("Z")
    assert (row["request_id"], row["task"], row["policy"], row["model"], row["upstream_model"]) == (
        "r1", "triage", "p", "m", "up-m")
    assert row["request"]["messages"] == [{"role": "user", "content": "call [REDACTED:phone]"}]
    assert (row["answer"], row["finish_reason"]) == ({"role": "assistant", "content": "billing"}, "stop")
    assert row["usage"] == {"prompt_tokens": 7, "completion_tokens": 5}
    assert (row["latency_s"], row["ttft_s"], row["fallbacks"], row["client"]) == (0.25, 0.1, 0, "k1")


def test_comparisons_are_written_to_their_file_set_off_the_path(tmp_path: Path) -> None:
    cap, metrics = capture_for(tmp_path, queue=3)

    async def run() -> None:
        cap.start()
        for i in range(5):  # queued at once: the queue takes 3
            cap.compared({"request_id": f"r{i}", "score": 1.0})
        await cap.stop()

    asyncio.run(run())
    rows = [json.loads(line) for f in files_in(tmp_path / "comparisons") for line in f.read_text().splitlines()]
    assert rows == [{"request_id": f"r{i}", "score": 1.0} for i in range(3)]
    assert counter(metrics, "nanoroute_capture_dropped_total", reason="queue_full") == 2


def test_a_comparison_that_cannot_be_written_is_counted_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(CollectorRegistry())
    sink = BrokenSink()
    cap = Capture(sink, metrics, 100)

    async def run() -> None:
        for i in range(3):
            cap.compared({"request_id": f"r{i}", "score": 0.0})
            await asyncio.sleep(0.05)  # one write each
        cap.compared({"request_id": "r4", "score": object()})  # not JSON: a bug, counted
        await cap.stop()

    asyncio.run(run())
    assert sink.calls == 3
    assert counter(metrics, "nanoroute_capture_dropped_total", reason="write_error") == 3
    assert counter(metrics, "nanoroute_capture_dropped_total", reason="invalid") == 1
    assert sum("No space left" in r.getMessage() for r in caplog.records) == 1  # once a minute
