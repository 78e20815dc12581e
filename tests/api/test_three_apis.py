"""One gateway for three APIs: a request that comes in by OpenAI's Responses API or Anthropic's Messages
API is matched by the same policies (the task header, `metadata.task`), falls back the same way (a stream
before its first content), is counted the same way (requests by API, tokens, cost, savings), meets the same
breakers, is mirrored and scored by the same rollouts, and is captured as chat completions, like a chat
completions request."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from gateway.capture.sink import files_in
from tests.api.observe import Scrape
from tests.api.support import Client, wait_until
from tests.api.test_rollout import ADMIN_KEY
from tests.api.test_rollout import config as rollout_config
from tests.fakes.servers import Servers
from tests.fakes.upstream import FakeUpstream


def config(small: FakeUpstream, big: FakeUpstream, capture: str = "", native: str = "") -> str:
    return f"""
backends:
  s: {{type: openai, url: {small.url}}}
  b: {{type: openai, url: {big.url}{native}}}
models:
  small: {{backend: s, name: up-small, price: {{input: 0.1, output: 0.1}}}}
  big: {{backend: b, name: up-big, price: {{input: 5.0, output: 15.0}}}}
policies:
  - {{name: triage, match: {{task: triage}}, candidates: [small], fallback: [big]{capture}}}
  - {{name: rest, candidates: [big]}}
"""


def messages_client(base: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base.removesuffix("/v1"), api_key="sk-client", max_retries=0, timeout=10)


def test_the_task_routes_every_api_alike(servers: Servers, client: Client) -> None:
    small, big = servers.upstream("small", answer="billing"), servers.upstream("big", answer="prose")
    base = servers.gateway(config(small, big))
    sdk = client(base)
    by_metadata = sdk.responses.with_raw_response.create(model="any", input="Invoice?", metadata={"task": "triage"})
    assert (by_metadata.headers["x-nanoroute-policy"], by_metadata.headers["x-nanoroute-model"]) == ("triage", "small")
    assert by_metadata.parse().output_text == "billing"
    other = sdk.responses.with_raw_response.create(model="any", input="Poem?")
    assert other.headers["x-nanoroute-policy"] == "rest" and other.parse().output_text == "prose"
    with messages_client(base) as a:
        by_header = a.messages.with_raw_response.create(model="any", max_tokens=5, extra_headers={
            "X-Nanoroute-Task": "triage"}, messages=[{"role": "user", "content": "Invoice?"}])
        assert by_header.headers["x-nanoroute-model"] == "small"
        assert by_header.parse().content[0].text == "billing"  # type: ignore[union-attr]
    assert [s.body["model"] for s in small.served] == ["up-small", "up-small"]


@pytest.mark.parametrize("api", ["responses", "messages"])
def test_a_stream_falls_back_before_its_first_content(servers: Servers, client: Client, api: str) -> None:
    small, big = servers.upstream("small", behaviour="status:500"), servers.upstream("big")
    base = servers.gateway(config(small, big))
    task = {"X-Nanoroute-Task": "triage"}
    if api == "responses":
        with client(base).responses.stream(model="any", input="hi", extra_headers=task) as s:
            text = s.get_final_response().output_text
    else:
        with messages_client(base) as a, a.messages.stream(model="any", max_tokens=5, extra_headers=task,
                                                           messages=[{"role": "user", "content": "hi"}]) as s:
            text = s.get_final_message().content[0].text  # type: ignore[union-attr]
    assert text == "tok0 tok1 tok2 "
    assert len(small.served) == 1 and len(big.served) == 1


def captured(root: Path, n: int) -> list[dict[str, Any]]:
    folder = root / "captures" / "tasks" / "triage"

    def rows() -> list[dict[str, Any]]:
        return [json.loads(line) for f in files_in(folder) for line in f.read_text().splitlines()]

    wait_until(lambda: len(rows()) >= n)
    return rows()


def test_requests_of_every_api_are_captured_as_chat_completions(servers: Servers, client: Client,
                                                                 tmp_path: Path) -> None:
    small, big = servers.upstream("small", answer="billing"), servers.upstream("big")
    base = servers.gateway(config(small, big, capture=", capture: {sample: 1.0}"), data_dir=tmp_path)
    task = {"X-Nanoroute-Task": "triage"}
    client(base).responses.create(model="any", instructions="Triage.", input="Invoice?", extra_headers=task)
    with client(base).responses.stream(model="any", input="Invoice?", extra_headers=task) as s:
        s.get_final_response()
    with messages_client(base) as a:
        a.messages.create(model="any", system="Triage.", max_tokens=5, extra_headers=task,
                          messages=[{"role": "user", "content": "Invoice?"}])
    rows = captured(tmp_path, 3)
    assert [r["stream"] for r in rows] == [False, True, False]
    assert rows[0]["request"]["messages"] == [{"role": "system", "content": "Triage."},
                                              {"role": "user", "content": "Invoice?"}]
    assert rows[2]["request"]["messages"] == rows[0]["request"]["messages"]
    assert [r["answer"]["content"] for r in rows] == ["billing", "tok0 tok1 tok2 ", "billing"]
    assert all(r["model"] == "small" for r in rows)


def test_a_native_answer_is_relayed_but_not_captured(servers: Servers, client: Client, tmp_path: Path) -> None:
    small = servers.upstream("small", answer="billing", switch_after=1, switch_to="status:500")
    big = servers.upstream("big", answer="Native.")
    native = ", native: [responses]"
    base = servers.gateway(config(small, big, capture=", capture: {sample: 1.0}", native=native), data_dir=tmp_path)
    task = {"X-Nanoroute-Task": "triage"}
    first = client(base).responses.create(model="any", input="Invoice?", extra_headers=task)  # small, translated
    second = client(base).responses.create(model="any", input="Refund?", extra_headers=task)  # big, natively
    assert (first.output_text, second.output_text) == ("billing", "Native.")
    assert [s.path for s in big.served] == ["/v1/responses"]
    [row] = captured(tmp_path, 1)
    time.sleep(0.5)  # the writer had time for the second one too
    assert [r["request"]["messages"][-1]["content"] for r in captured(tmp_path, 1)] == ["Invoice?"]
    assert row["answer"]["content"] == "billing"


def ask_each_api(sdk: Any, base: str, stream: bool, headers: dict[str, str]) -> list[str]:
    """One request by each API; the catalog model that answered each."""
    chat = sdk.chat.completions.with_raw_response.create(model="any", stream=stream, extra_headers=headers,
                                                         messages=[{"role": "user", "content": "Invoice?"}])
    responses = sdk.responses.with_raw_response.create(model="any", input="Invoice?", stream=stream,
                                                       extra_headers=headers)
    with messages_client(base) as a:
        messages = a.messages.with_raw_response.create(model="any", max_tokens=5, stream=stream, extra_headers=headers,
                                                       messages=[{"role": "user", "content": "Invoice?"}])
        answers = [chat, responses, messages]
        for raw in answers:
            if stream:
                for _ in raw.parse():  # read to the end: the usage comes last
                    pass
    return [raw.headers["x-nanoroute-model"] for raw in answers]


@pytest.mark.parametrize("stream", [False, True])
def test_requests_tokens_cost_and_savings_are_counted_for_every_api(servers: Servers, client: Client,
                                                                    stream: bool) -> None:
    small, big = servers.upstream("small"), servers.upstream("big")
    base = servers.gateway(config(small, big).replace("candidates: [small], fallback: [big]",
                                                      "candidates: [small, big]"))
    assert ask_each_api(client(base), base, stream, {"X-Nanoroute-Task": "triage"}) == ["small"] * 3

    def counted() -> bool:
        return Scrape(base).value("nanoroute_requests_total", policy="triage", model="small", outcome="success") == 3

    wait_until(counted)  # each is counted once its answer went out
    scrape = Scrape(base)
    for api in ("chat", "responses", "messages"):
        assert scrape.value("nanoroute_requests_total", policy="triage", model="small", outcome="success",
                            api=api) == 1
    # every upstream answer (and stream) carried a usage of 7 prompt tokens
    assert scrape.value("nanoroute_tokens_total", model="small", kind="prompt") == 21
    completion = scrape.value("nanoroute_tokens_total", model="small", kind="completion")
    assert completion == (3 * small.chunks if stream else 15)
    cost = (21 * 0.1 + completion * 0.1) / 1e6
    assert scrape.value("nanoroute_cost_usd_total", policy="triage", model="small") == pytest.approx(cost)
    baseline = (21 * 5.0 + completion * 15.0) / 1e6  # the policy's most expensive candidate
    assert scrape.value("nanoroute_savings_usd_total", policy="triage") == pytest.approx(baseline - cost)


def test_a_breaker_opened_by_one_apis_requests_holds_for_the_others(servers: Servers, client: Client) -> None:
    small, big = servers.upstream("small", behaviour="status:500"), servers.upstream("big")
    breaker = ", breaker: {consecutive_failures: 2, cooldown_s: 60}}"
    base = servers.gateway(config(small, big).replace(f"url: {small.url}}}", f"url: {small.url}{breaker}"))
    sdk, task = client(base), {"X-Nanoroute-Task": "triage"}
    for _ in range(2):  # two server errors by the Responses API open small's breaker
        raw = sdk.responses.with_raw_response.create(model="any", input="hi", extra_headers=task)
        assert raw.headers["x-nanoroute-model"] == "big"
    assert len(small.served) == 2
    with messages_client(base) as a:
        raw_message = a.messages.with_raw_response.create(model="any", max_tokens=5, extra_headers=task,
                                                          messages=[{"role": "user", "content": "hi"}])
    assert raw_message.headers["x-nanoroute-model"] == "big"
    chat = sdk.chat.completions.with_raw_response.create(model="any", extra_headers=task,
                                                         messages=[{"role": "user", "content": "hi"}])
    assert chat.headers["x-nanoroute-model"] == "big"
    assert len(small.served) == 2  # skipped, whatever the API
    assert Scrape(base).value("nanoroute_circuit_open", model="small") == 1


def test_a_rollout_mirrors_and_scores_requests_of_every_api(servers: Servers, client: Client, tmp_path: Path) -> None:
    teacher, student = servers.upstream("teacher", answer="billing"), servers.upstream("student", answer="Billing.")
    base = servers.gateway(rollout_config(teacher, student), admin_key=ADMIN_KEY, data_dir=tmp_path)
    root = base.removesuffix("/v1")
    assert ask_each_api(client(base), base, False, {"X-Nanoroute-Task": "triage"}) == ["large"] * 3

    def scored() -> float:
        return Scrape(base).value("nanoroute_rollout_comparisons_total", policy="triage", model="small",
                                  outcome="scored")

    wait_until(lambda: scored() == 3)
    mirrored = [s.body["messages"][-1]["content"] for s in student.served]
    assert mirrored == ["Invoice?"] * 3  # each API's request, mirrored to the student as chat completions
    state = httpx.get(f"{root}/admin/rollouts", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["rollouts"]
    assert state[0]["scored_total"] == 3
