"""Capture through a real gateway and the official SDK: JSON and streamed answers land, redacted, in the
task's JSONL files; requests never wait for capture nor fail because of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai

from gateway.capture.sink import files_in
from tests.api.observe import Scrape
from tests.api.support import Client, wait_until
from tests.fakes.servers import Servers

SECRET_PROMPT = "My card was charged twice, write to jane@example.com or call +1 415 555 0132"


def config(url: str, capture: str = ", capture: {sample: 1.0}") -> str:
    return f"""
backends:
  b: {{type: openai, url: {url}}}
models:
  teacher: {{backend: b, name: up-teacher, price: {{input: 1.0, output: 2.0}}}}
policies:
  - {{name: support, match: {{task: support}}, candidates: [teacher]{capture}}}
  - {{name: rest, candidates: [teacher]}}
"""


def captured(root: Path, task: str = "support", n: int = 1) -> list[dict[str, Any]]:
    folder = root / "captures" / "tasks" / task

    def rows() -> list[dict[str, Any]]:
        return [json.loads(line) for f in files_in(folder) for line in f.read_text().splitlines()]

    wait_until(lambda: len(rows()) >= n)
    return rows()


def ask(sdk: openai.OpenAI, stream: bool = False, task: str = "support") -> str:
    messages: Any = [{"role": "system", "content": "Triage."}, {"role": "user", "content": SECRET_PROMPT}]
    headers = {"X-Nanoroute-Task": task}
    if stream:
        streamed = sdk.chat.completions.with_raw_response.create(model="teacher", messages=messages, stream=True,
                                                                 extra_headers=headers)
        assert "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices) == "tok0 tok1 tok2 "
        return streamed.headers["x-request-id"]
    raw = sdk.chat.completions.with_raw_response.create(model="teacher", messages=messages, extra_headers=headers)
    assert raw.parse().choices[0].message.content is not None
    return raw.headers["x-request-id"]


def test_a_json_answer_is_captured_redacted(servers: Servers, client: Client, tmp_path: Path) -> None:
    up = servers.upstream(answer="Refund sent; key sk-abcdefghijklmnopqrstuvwx noted")
    sdk = client(servers.gateway(config(up.url), data_dir=tmp_path))
    request_id = ask(sdk)
    [row] = captured(tmp_path)
    assert row["request_id"] == request_id
    assert (row["task"], row["policy"], row["model"], row["upstream_model"], row["stream"]) == (
        "support", "support", "teacher", "up-teacher", False)
    assert row["request"]["model"] == "teacher"
    assert row["request"]["messages"][1]["content"] == (
        "My card was charged twice, write to [REDACTED:email] or call [REDACTED:phone]")
    assert row["answer"] == {"role": "assistant", "content": "Refund sent; key [REDACTED:key] noted"}
    assert (row["finish_reason"], row["usage"]) == ("stop", {"prompt_tokens": 7, "completion_tokens": 5})
    assert row["cost_usd"] > 0 and row["latency_s"] > 0
    raw = "\n".join(f.read_text() for f in files_in(tmp_path / "captures" / "tasks" / "support"))
    assert "jane@example.com" not in raw and "555 0132" not in raw and "sk-abc" not in raw


def test_a_streamed_answer_is_put_together_from_its_chunks(servers: Servers, client: Client, tmp_path: Path) -> None:
    up = servers.upstream()
    base = servers.gateway(config(up.url), data_dir=tmp_path)
    request_id = ask(client(base), stream=True)
    [row] = captured(tmp_path)
    assert (row["request_id"], row["stream"]) == (request_id, True)
    assert row["answer"] == {"role": "assistant", "content": "tok0 tok1 tok2 "}
    assert row["finish_reason"] == "stop"
    assert row["usage"] == {"prompt_tokens": 7, "completion_tokens": 3}  # the usage the gateway asked for
    assert row["ttft_s"] is not None
    assert Scrape(base).value("nanoroute_capture_written_total", task="support") == 1


def test_only_policies_with_capture_record(servers: Servers, client: Client, tmp_path: Path) -> None:
    up = servers.upstream()
    base = servers.gateway(config(up.url), data_dir=tmp_path)
    sdk = client(base)
    ask(sdk, task="other")  # the `rest` policy: no capture
    ask(sdk)
    assert len(captured(tmp_path)) == 1
    assert not (tmp_path / "captures" / "tasks" / "other").exists()
    assert not (tmp_path / "captures" / "tasks" / "rest").exists()


def test_sample_zero_records_nothing(servers: Servers, client: Client, tmp_path: Path) -> None:
    up = servers.upstream()
    base = servers.gateway(config(up.url, ", capture: {sample: 0.0}"), data_dir=tmp_path)
    for _ in range(3):
        ask(client(base))
    assert not (tmp_path / "captures").exists()


def test_a_broken_capture_dir_never_fails_a_request(servers: Servers, client: Client, tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the captures should go")
    up = servers.upstream()
    base = servers.gateway(config(up.url), capture_dir=blocked)
    sdk = client(base)
    for stream in (False, True, False):
        ask(sdk, stream=stream)
    wait_until(lambda: Scrape(base).value("nanoroute_capture_dropped_total", reason="write_error") == 3)
    assert Scrape(base).value("nanoroute_capture_written_total") == 0
