"""The flywheel demo's dataset and teacher (examples/flywheel/): the committed tickets are what the generator
makes, the held-out split shares no wording with the training one, and the teacher, started as its README
says, answers each ticket with its queue over the official `openai` SDK, as JSON and as a stream."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from examples.flywheel import make_tickets, teacher
from gateway.config.redact import Redactor

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return teacher.load_tickets()


def test_the_committed_tickets_are_what_the_generator_makes(rows: list[dict[str, str]]) -> None:
    assert make_tickets.render(make_tickets.generate()) == teacher.TICKETS.read_text(encoding="utf-8")
    assert teacher.TICKETS.stat().st_size < 200_000


def test_make_tickets_check_passes_on_the_committed_file() -> None:
    done = subprocess.run([sys.executable, str(REPO / "examples" / "flywheel" / "make_tickets.py"), "--check"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "is up to date (614 tickets)" in done.stdout


def test_the_first_kinds_keep_their_tickets_when_a_later_kind_is_added(rows: list[dict[str, str]]) -> None:
    # STREAMS: the hard kind is drawn from its own stream and appended after the 479 tickets it found
    first = [r for r in rows if r["kind"] in make_tickets.STREAMS[0]]
    assert [r["id"] for r in first] == [f"t{i:04d}" for i in range(479)]
    assert [r["id"] for r in rows] == [f"t{i:04d}" for i in range(len(rows))]
    hard = [r for r in rows if r["kind"] == "hard"]
    assert 100 <= len(hard) <= 150
    assert len({t for ts in make_tickets.TEMPLATES.values() for k, t in ts if k == "hard"}) >= 50


def test_the_split_holds_out_whole_templates_of_every_queue_and_kind(rows: list[dict[str, str]]) -> None:
    assert 550 <= len(rows) <= 700
    assert len({r["id"] for r in rows}) == len({r["text"] for r in rows}) == len(rows)
    held = [r for r in rows if r["split"] == "heldout"]
    assert 0.25 <= len(held) / len(rows) <= 0.35
    for split in ("train", "heldout"):
        assert {(r["queue"], r["kind"]) for r in rows if r["split"] == split} == {
            (q, k) for q in teacher.QUEUES for k in make_tickets.KINDS}
    # no held-out ticket is (nearly) a training one, greetings and closings aside
    assert make_tickets.near_duplicates(rows) == []
    train_texts = {teacher.normalise(r["text"]) for r in rows if r["split"] == "train"}
    assert not [r["text"] for r in held if teacher.normalise(r["text"]) in train_texts]


def test_tickets_hold_nothing_that_capture_would_redact(rows: list[dict[str, str]]) -> None:
    redactor = Redactor()
    assert [r["text"] for r in rows if redactor.text(r["text"]) != r["text"]] == []


def test_the_prompt_is_the_demo_adapters(rows: list[dict[str, str]]) -> None:
    first = json.loads((REPO / "adapters" / "ticket-triage" / "train.jsonl").read_text().splitlines()[0])
    assert first["messages"][0]["content"] == teacher.SYSTEM_PROMPT
    assert {r["queue"] for r in rows} == set(teacher.QUEUES)
    assert teacher.example(rows[0])["messages"][-1] == {"role": "assistant", "content": rows[0]["queue"]}


@pytest.fixture(scope="module")
def teacher_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The teacher as a user starts it: `python examples/flywheel/teacher.py --port 0`."""
    log = tmp_path_factory.mktemp("teacher") / "stderr.log"
    with log.open("w") as err, subprocess.Popen(
            [sys.executable, str(REPO / "examples" / "flywheel" / "teacher.py"), "--port", "0"],
            stdout=subprocess.PIPE, stderr=err, text=True) as proc:
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            assert line.startswith("teacher listening on "), (line, log.read_text())
            yield line.split()[-1]
        finally:
            proc.terminate()
            proc.wait(10)


def test_the_teacher_answers_each_ticket_with_its_queue(teacher_url: str, rows: list[dict[str, str]]) -> None:
    client = openai.OpenAI(base_url=teacher_url, api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini"]
    sample = [r for i, r in enumerate(rows) if i % 20 == 0]
    for row in sample:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=teacher.chat(row["text"]))  # type: ignore[arg-type]
        assert reply.choices[0].message.content == row["queue"]
        assert (reply.model, reply.choices[0].finish_reason) == ("gpt-4o-mini", "stop")
        assert reply.usage is not None and reply.usage.completion_tokens == 1
        assert 60 < reply.usage.prompt_tokens < 140  # the system prompt is 57 of cl100k's tokens
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + 1
    # a ticket it has never seen: the keyword classifier
    unseen = teacher.chat("Hello, my invoice lists a charge I can't place.")
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=unseen)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "billing"


def test_the_teacher_streams(teacher_url: str, rows: list[dict[str, str]]) -> None:
    client = openai.OpenAI(base_url=teacher_url, api_key="unused", max_retries=0)
    row = next(r for r in rows if r["queue"] == "returns")
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=teacher.chat(row["text"]),  # type: ignore[arg-type]
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "returns"
    assert Counter(c.choices[0].finish_reason for c in chunks if c.choices)["stop"] == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 1
    plain = list(client.chat.completions.create(model="gpt-4o-mini", messages=teacher.chat(row["text"]),  # type: ignore[arg-type]
                                                stream=True))
    assert all(c.usage is None for c in plain) and all(c.choices for c in plain)


def test_the_teacher_refuses_a_malformed_request_as_openai_does(teacher_url: str) -> None:
    for body in (b"{not json", b'{"model": "gpt-4o-mini", "messages": []}'):
        r = httpx.post(f"{teacher_url}/chat/completions", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_the_routing_tickets_are_another_seeds_of_every_kind(rows: list[dict[str, str]], tmp_path: Path) -> None:
    routing = make_tickets.routing(2000)
    assert routing == make_tickets.routing(2000)  # deterministic
    assert [r["id"] for r in routing] == [f"r{i:04d}" for i in range(2000)]
    kinds = Counter(r["kind"] for r in routing)
    assert set(kinds) == set(make_tickets.KINDS) and kinds["hard"] == 400
    assert set(Counter(r["queue"] for r in routing)) == set(teacher.QUEUES)
    keys = {teacher.normalise(r["text"]) for r in routing}
    assert len(keys) == 2000  # none repeats another
    assert not keys & {teacher.normalise(r["text"]) for r in rows}  # nor a ticket of tickets.jsonl
    for r in routing[:50]:
        queue, index = r["template"].split("/")
        assert (queue, make_tickets.TEMPLATES[queue][int(index)][0]) == (r["queue"], r["kind"])
    out = tmp_path / "routing.jsonl"
    subprocess.run([sys.executable, str(REPO / "examples" / "flywheel" / "make_tickets.py"), "--routing", "300",
                    "--out", str(out)], check=True, capture_output=True, timeout=60)
    assert [json.loads(line) for line in out.read_text().splitlines()] == make_tickets.routing(300)


def test_tickets_name_their_template_when_asked(rows: list[dict[str, str]]) -> None:
    tagged = make_tickets.generate(templates=True)
    assert [{k: v for k, v in r.items() if k != "template"} for r in tagged] == rows
    for r in tagged:
        queue, index = r["template"].split("/")
        assert (queue, make_tickets.TEMPLATES[queue][int(index)][0]) == (r["queue"], r["kind"])
    # the split is by template: no template has tickets on both sides
    sides = {(r["template"], r["split"]) for r in tagged}
    assert len(sides) == len({r["template"] for r in tagged})


def test_routing_tickets_can_come_from_some_templates_only(rows: list[dict[str, str]]) -> None:
    heldout = {r["template"] for r in make_tickets.generate(templates=True) if r["split"] == "heldout"}
    live = make_tickets.routing(300, templates=heldout, hard_share=0.4)
    assert live == make_tickets.routing(300, templates=heldout, hard_share=0.4)
    assert {r["template"] for r in live} <= heldout
    assert Counter(r["kind"] for r in live)["hard"] == 120
    assert not {teacher.normalise(r["text"]) for r in live} & {teacher.normalise(r["text"]) for r in rows}
    with pytest.raises(ValueError, match="cannot make"):
        make_tickets.routing(10, templates={"billing/0"}, hard_share=0.5)  # a plain template: no hard ticket
