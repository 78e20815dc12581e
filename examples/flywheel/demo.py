"""The flywheel, end to end, on this machine: a hosted model's answers become a LoRA adapter that earns the
traffic, first per task (a rollout), then per prompt (a learned router).

    .venv/bin/python examples/flywheel/demo.py [--work DIR] [--report FILE] [--epochs 3] [--live 320]

Needs the local stack built (scripts/stack/build.sh: the vLLM venv with torch/transformers/peft and the
converted SmolLM2-135M-Instruct, and the project venv's `router` extra); it builds nothing itself. Every
server it starts listens on a free loopback port and is stopped at the end. Steps, each timed:

1. **teacher**: examples/flywheel/teacher.py stands in for a hosted large model (`gpt-4o-mini` prices); it
   knows the queue of every ticket the demo sends.
2. **capture**: the gateway serves task `triage` from the teacher with `capture: {sample: 1.0}`; the
   tickets of the dataset's `train` split, but the `hard` kind, are sent through it with the official
   `openai` SDK: the traffic of the time before the hard tickets came.
3. **export, train, eval**: `nanoroute distill export` (a tenth held out), `distill train` (peft on the
   CPU); then vLLM is started, `nanoroute adapters load` loads the adapter into it, and `distill eval`
   scores it on the export's held-out split.
4. **rollout**: the gateway's config is replaced (a live reload) by one where the adapter is a catalog
   model and the policy rolls it out, still capturing every request. Live traffic from here on comes from
   the dataset's held-out templates, situations the adapter never saw, hard ones among them: first
   `--live` fresh tickets of those templates (`make_tickets.routing`), which the rollout scores (shadow,
   canary, primary, as it earns them) and records as comparisons.
5. **router**: `nanoroute router dataset` joins those captures and comparisons, `nanoroute router train`
   trains a router on them.
6. **final, per task**: tickets of the dataset's `heldout` split, which neither the adapter nor the router
   saw (its hard ones, and as many others as make them `--hard-share` of it), through the policy as its
   rollout left it (pinned there, so that it does not move while it is measured).
7. **final, learned**: a live reload to `strategy: learned` between the adapter and the teacher, with the
   router and the same quality floor; the same tickets again.
8. **agreement**: the adapter, the base model and the teacher asked every final ticket directly: the
   adapter's agreement with the teacher, and what a random split at the learned router's share would give.

Quality is the served answers' agreement with the teacher's; cost per 1,000 requests comes from the
gateway's cost and savings metrics. The report (JSON) has every figure; docs/flywheel.md shows one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import make_tickets  # noqa: E402  (beside this file)
import teacher  # noqa: E402

sys.path.insert(0, str(REPO))
from gateway.distill.evaluate import exact  # noqa: E402

STACK = Path(os.environ.get("NANOROUTE_STACK_DIR", REPO / ".stack"))
BASE_DIR = STACK / "models" / "smollm2-135m-instruct"
BASE_NAME = "smollm2-135m-instruct"
ADAPTER = "triage-distilled"
TASK = "triage"
ADMIN_KEY = "flywheel-demo-admin-key"
NANOROUTE = [str(Path(sys.executable).with_name("nanoroute"))]
MAX_TOKENS = 8
MIN_QUALITY = 0.9
"""The task's quality floor: the rollout's, and the learned policy's."""
LIVE = 320
"""Fresh tickets of the held-out templates sent while the adapter is rolled out: the router's data."""
HARD_SHARE = 0.4
"""The share of hard tickets in the traffic once they have come (none in the capture)."""
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""LoRA on every projection: 95.8% held-out agreement after 3 epochs, against 90.9% for q and v alone."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(msg: str) -> None:
    print(f"[flywheel {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait_for(check: Callable[[], bool], what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {seconds:.0f} s")
        time.sleep(0.2)


@contextmanager
def process(cmd: list[str], logfile: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with logfile.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run(cmd: list[str], what: str, logfile: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    log(f"{what}: {' '.join(cmd)}")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})
    logfile.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


class Metrics:
    """The gateway's /metrics, read as {(name, labels...): value}."""

    def __init__(self, root: str) -> None:
        self.root = root

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in httpx.get(f"{self.root}/metrics", timeout=10).text.splitlines():
            m = re.match(r"^([a-z_:]+)(\{.*\})? (\S+)$", line)
            if m:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return out

    @staticmethod
    def total(snapshot: dict[str, float], name: str, **labels: str) -> float:
        want = [f'{k}="{v}"' for k, v in labels.items()]
        return sum(v for k, v in snapshot.items()
                   if (k == name or k.startswith(name + "{")) and all(w in k for w in want))


class Demo:
    def __init__(self, work: Path, train_args: list[str], live: int, hard_share: float) -> None:
        self.work, self.train_args, self.live, self.hard_share = work, train_args, live, hard_share
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.report: dict[str, Any] = {"steps_s": {}}
        self.config = work / "gateway.yaml"
        self.gateway_port, self.teacher_port, self.vllm_port = free_port(), free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.gateway_port}/v1"
        self.root = self.base.removesuffix("/v1")
        self.metrics = Metrics(self.root)
        self.client = openai.OpenAI(base_url=self.base, api_key="demo", max_retries=0, timeout=120)
        self.served: dict[str, list[tuple[str, str]]] = {}
        """Each final run's (model, answer) per final ticket."""
        self.answers: list[tuple[str, str, str]] = []
        """The teacher's, the adapter's and the base model's answer to each final ticket, asked directly."""

    # -- steps ------------------------------------------------------------------------------------------

    def step(self, name: str) -> Any:
        demo = self

        class Timer:
            def __enter__(self) -> None:
                self.t0 = time.monotonic()
                log(f"== {name}")

            def __exit__(self, *exc: object) -> None:
                demo.report["steps_s"][name] = round(time.monotonic() - self.t0, 1)

        return Timer()

    def config_text(self, phase: str) -> str:
        """The gateway's config for `phase`: "capture" (the teacher alone), "rollout" (the per-task policy
        rolls the adapter out) or "learned" (a learned router splits the task between the two)."""
        hosted = f"""\
backends:
  hosted: {{type: openai, url: 'http://127.0.0.1:{self.teacher_port}/v1'}}
"""
        local = f"""\
  local: {{type: vllm, urls: ['http://127.0.0.1:{self.vllm_port}/v1'], poll_interval_s: 1}}
"""
        models = """\
models:
  gpt-4o-mini: {backend: hosted, price: {input: 0.15, output: 0.60}, quality: {triage: 0.95}}
"""
        adapter = f"""\
  {ADAPTER}: {{backend: local, adapter: {ADAPTER}, context_window: 2048, price: {{input: 0.02, output: 0.02}}}}
"""
        if phase == "capture":
            return hosted + models + f"""\
policies:
  - name: triage
    match: {{task: {TASK}}}
    candidates: [gpt-4o-mini]
    capture: {{sample: 1.0}}
"""
        head = f"adapters_dir: {self.work / 'adapters'}\n" + hosted + local + models + adapter
        if phase == "learned":
            return head + f"""\
policies:
  - name: triage
    match: {{task: {TASK}}}
    strategy: learned
    router: routers/{TASK}
    candidates: [{ADAPTER}, gpt-4o-mini]
    require: {{min_quality: {MIN_QUALITY}}}
"""
        return head + f"""\
policies:
  - name: triage
    match: {{task: {TASK}}}
    candidates: [gpt-4o-mini]
    require: {{min_quality: {MIN_QUALITY}}}
    capture: {{sample: 1.0}}
    rollout:
      model: {ADAPTER}
      shadow_sample: 1.0
      audit_sample: 0.25
      min_samples: 20
      window: 40
      canary_steps: [0.25, 0.5, 0.75]
      max_concurrency: 8
"""

    def ask(self, text: str) -> tuple[str, str]:
        """The model that answered a ticket through the gateway, and its answer."""
        def create() -> Any:
            return self.client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=teacher.chat(text), temperature=0, max_tokens=MAX_TOKENS,
                extra_headers={"X-Nanoroute-Task": TASK})

        try:
            raw = create()
        except openai.APIConnectionError:
            # The gateway closes a keep-alive connection idle for NANOROUTE_KEEP_ALIVE_S (5 s); a request sent on
            # one just as it closes never reaches it ("Server disconnected without sending a response") and is
            # safe to send again once, as the SDK's own retries (off here, to see every failure) would.
            raw = create()
        return raw.headers["x-nanoroute-model"], raw.parse().choices[0].message.content or ""

    def send(self, tickets: list[dict[str, str]], concurrency: int = 8) -> list[tuple[str, str]]:
        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(lambda row: self.ask(row["text"]), tickets))

    def reload(self, phase: str) -> None:
        self.config.write_text(self.config_text(phase))
        reloaded = httpx.post(f"{self.root}/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                              timeout=60)
        assert reloaded.status_code == 200, reloaded.text

    def rollout(self) -> dict[str, Any]:
        data = httpx.get(f"{self.root}/admin/rollouts", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                         timeout=10).json()
        return data["rollouts"][0]  # type: ignore[no-any-return]

    def capture(self, tickets: list[dict[str, str]]) -> None:
        with self.step("capture"):
            before = self.metrics.read()
            served = self.send(tickets)
            assert {model for model, _ in served} == {"gpt-4o-mini"}, served
            wait_for(lambda: self.metrics.total(self.metrics.read(), "nanoroute_capture_written_total",
                                                task=TASK) >= len(tickets), "the captures being written", 60)
            after = self.metrics.read()
            self.report["before"] = self.costs(before, after)
            log(f"captured {len(tickets)} answers; cost per 1,000 requests "
                f"${self.report['before']['cost_per_1000_usd']:.4f}")

    def costs(self, before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        def delta(name: str, **labels: str) -> float:
            return self.metrics.total(after, name, **labels) - self.metrics.total(before, name, **labels)

        n = delta("nanoroute_requests_total", policy="triage", outcome="success")
        return {
            "requests": n,
            "cost_per_1000_usd": 1000 * delta("nanoroute_cost_usd_total", policy="triage") / n,
            "savings_per_1000_usd": 1000 * delta("nanoroute_savings_usd_total", policy="triage") / n,
            "mirror_cost_per_1000_usd": 1000 * delta("nanoroute_rollout_mirror_cost_usd_total", policy="triage") / n,
        }

    def distill(self) -> None:
        data_dir = self.work / "data"
        with self.step("export"):
            run([*NANOROUTE, "distill", "export", "--task", TASK, "--capture-dir", str(data_dir / "captures"),
                 "--out", str(self.work / "dataset"), "--eval-fraction", "0.1"],
                "export", self.logs / "export.log", 120)
            self.report["dataset"] = json.loads((self.work / "dataset" / "stats.json").read_text())
        with self.step("train"):
            run([*NANOROUTE, "distill", "train", "--task", TASK, "--base", str(BASE_DIR), "--base-name", BASE_NAME,
                 "--data", str(self.work / "dataset"), "--name", ADAPTER, "--adapters-dir", str(self.work / "adapters"),
                 "--out", str(self.work / "weights" / ADAPTER), *self.train_args],
                "train", self.logs / "train.log", 40 * 60)

    def evaluate(self, vllm_url: str) -> None:
        with self.step("eval"):
            run([*NANOROUTE, "adapters", "load", ADAPTER, "--url", vllm_url, "--dir", str(self.work / "adapters")],
                "load into vLLM", self.logs / "adapters-load.log", 300)
            run([*NANOROUTE, "distill", "eval", "--adapter", ADAPTER, "--adapters-dir", str(self.work / "adapters"),
                 "--url", vllm_url], "eval", self.logs / "eval.log", 20 * 60)
            import yaml

            manifest = yaml.safe_load((self.work / "adapters" / f"{ADAPTER}.yaml").read_text())
            self.report["manifest"] = {"training": manifest.get("training"), "eval": manifest.get("eval")}

    def roll_out(self, tickets: list[dict[str, str]]) -> None:
        """The per-task policy rolls the adapter out on `tickets`, sent 8 at a time, the mirrored requests
        settling between batches; it moves on (or back) as its live score earns, and records each score."""
        with self.step("rollout"):
            self.reload("rollout")
            wait_for(lambda: ADAPTER in self.backends_adapters(), "the gateway loading the adapter", 120)
            served = self.paced(tickets)
            state = self.rollout()
            self.report["rollout"] = {
                "requests": len(tickets), "adapter_share": share(served), "stage": state["stage"],
                "share": state["share"], "score": state["score"], "scored": state["scored_total"],
                "history": state["history"]}
            log(f"rollout: {state['scored_total']} scores, now {state['stage']} (share {state['share']}, live "
                f"score {state['score']:.3f}); moves: " + (", ".join(h["to"] for h in state["history"]) or "none"))

    def paced(self, tickets: list[dict[str, str]]) -> list[tuple[str, str]]:
        """`tickets` sent 8 at a time, 4 at once, the rollout's mirrored requests settling between batches (it
        mirrors at most `max_concurrency` at once and skips the rest: unpaced, most would go unscored)."""
        served: list[tuple[str, str]] = []
        for start in range(0, len(tickets), 8):
            served += self.send(tickets[start:start + 8], concurrency=4)
            wait_for(lambda: self.rollout()["mirroring"] == 0, "the mirrored requests settling", 120)
        return served

    def backends_adapters(self) -> list[str]:
        info = httpx.get(f"{self.root}/admin/backends", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                         timeout=10).json()
        return [a for r in info["backends"]["local"]["replicas"] for a in r["adapters"]]

    def route(self, final: list[dict[str, str]]) -> None:
        """`nanoroute router dataset` from what the rollout recorded, then `router train`: the artifact the
        learned policy loads. Built before any final ticket is sent: none of them can be in its data."""
        data, out = self.work / "router-data.jsonl", self.work / "routers" / TASK
        with self.step("router"):
            sent = self.report["tickets"]["capture"] + self.report["tickets"]["live"]
            wait_for(lambda: self.metrics.total(self.metrics.read(), "nanoroute_capture_written_total",
                                                task=TASK) >= sent, "the rollout's captures being written", 60)
            stats = json.loads(run([*NANOROUTE, "router", "dataset", "--task", TASK, "--captures",
                                    str(self.work / "data" / "captures"), "--out", str(data)],
                                   "router dataset", self.logs / "router-dataset.log", 120))
            manifest = json.loads(run([*NANOROUTE, "router", "train", "--data", str(data), "--out", str(out)],
                                      "router train", self.logs / "router-train.log", 600))
        asked = {teacher.normalise(m["content"]) for line in data.read_text().splitlines()
                 for m in json.loads(line)["messages"] if m["role"] == "user"}
        metrics = manifest["metrics"]
        self.report["router"] = {
            "dataset": {k: stats[k] for k in ("records", "comparisons", "rows", "dropped_one_model", "models")},
            "final_tickets_in_data": sum(teacher.normalise(r["text"]) in asked for r in final),
            "train": {"rows": manifest["data"]["train"], "heldout": manifest["data"]["heldout"],
                      "seconds": manifest["training"]["seconds"]},
            "heldout_metrics": {k: metrics[k] for k in ("rows", "cheap", "strong", "mean_scores", "learned",
                                                         "random")}}
        log(f"router: {stats['rows']} rows ({stats['comparisons']['joined']} comparisons joined), "
            f"trained on {manifest['data']['train']}, {manifest['data']['heldout']} held out")

    def final(self, name: str, tickets: list[dict[str, str]]) -> None:
        """The final tickets through the policy the config has now: who answered, what, and at what cost."""
        with self.step(f"final {name}"):
            rolling = name == "per_task"
            if rolling:
                self.pin()
            before = self.metrics.read()
            served = self.paced(tickets) if rolling else self.send(tickets, concurrency=4)
            after = self.metrics.read()
            out: dict[str, Any] = {**self.costs(before, after), "adapter_share": share(served)}
            if rolling:
                state = self.rollout()
                out.update({"stage": state["stage"], "share": state["share"], "live_score": state["score"]})
            else:
                out["calibration"] = self.explain(tickets[0])
            self.report[name] = out
            self.served[name] = served

    def pin(self) -> None:
        """Hold the rollout where it ended (its moves stop; its scoring does not): the per-task policy is
        measured on the final tickets as it was when the router was trained."""
        state = self.rollout()
        body = {"action": "pin", "stage": state["stage"], "step": state["canary_step"] or 0}
        pinned = httpx.post(f"{self.root}/admin/rollouts/triage", json=body, timeout=10,
                            headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert pinned.status_code == 200, pinned.text

    def explain(self, ticket: dict[str, str]) -> dict[str, Any]:
        """The learned policy's threshold and what it gave on the router's held-out prompts (/admin/explain)."""
        body = {"model": "gpt-4o-mini", "messages": teacher.chat(ticket["text"])}
        got = httpx.post(f"{self.root}/admin/explain", json=body, timeout=10,
                         headers={"Authorization": f"Bearer {ADMIN_KEY}", "X-Nanoroute-Task": TASK}).json()
        assert got["strategy"] == "learned", got
        learned = got["learned"]
        return {"threshold": learned["threshold"], "heldout_rows": learned["heldout"]["rows"],
                "heldout_quality": learned["heldout"]["quality"],
                "heldout_adapter_share": learned["heldout"]["shares"][ADAPTER]}

    def agreement(self, vllm_url: str, final: list[dict[str, str]]) -> None:
        """Each final ticket asked of the teacher, the adapter and the base model directly."""
        with self.step("agreement"):
            small = openai.OpenAI(base_url=vllm_url, api_key="unused", max_retries=0, timeout=120)
            large = openai.OpenAI(base_url=f"http://127.0.0.1:{self.teacher_port}/v1", api_key="unused",
                                  max_retries=0, timeout=60)

            def both(row: dict[str, str]) -> tuple[str, str, str]:
                msgs: Any = teacher.chat(row["text"])
                ref = large.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=MAX_TOKENS)
                got = small.chat.completions.create(model=ADAPTER, messages=msgs, temperature=0,
                                                    max_tokens=MAX_TOKENS)
                base = small.chat.completions.create(model=BASE_NAME, messages=msgs, temperature=0,
                                                     max_tokens=MAX_TOKENS)
                return (ref.choices[0].message.content or "", got.choices[0].message.content or "",
                        base.choices[0].message.content or "")

            with ThreadPoolExecutor(4) as pool:
                self.answers = list(pool.map(both, final))
            rows = self.answers
            agree = [exact(r, g) for r, g, _ in rows]
            kinds = {k: [a for a, t in zip(agree, final, strict=True) if t["kind"] == k] for k in make_tickets.KINDS}
            misses = [{"ticket": t["text"], "kind": t["kind"], "teacher": r, "adapter": g}
                      for t, (r, g, _) in zip(final, rows, strict=True) if not exact(r, g)]
            self.report["agreement"] = {
                "final": len(rows), "adapter": mean(agree), "base_model": mean([exact(r, b) for r, _, b in rows]),
                "teacher_is_label": mean([exact(t["queue"], r) for t, (r, _, _) in zip(final, rows, strict=True)]),
                "adapter_by_kind": {k: {"tickets": len(v), "adapter": mean(v)} for k, v in kinds.items() if v},
                "disagreements": misses[:40]}
            log(f"agreement with the teacher on the {len(rows)} final tickets: adapter {mean(agree):.3f}, base model "
                f"{self.report['agreement']['base_model']:.3f}")

    def compare(self, final: list[dict[str, str]]) -> None:
        """Per task, learned, and a random split at the learned router's share, on the same final tickets:
        the adapter's share and the served answers' agreement with the teacher's (by kind too)."""
        reference = [r for r, _, _ in self.answers]
        for name in ("per_task", "learned"):
            right = [exact(ref, answer) for ref, (_, answer) in zip(reference, self.served[name], strict=True)]
            self.report[name]["quality"] = mean(right)
            self.report[name]["by_kind"] = {
                kind: {"tickets": len(idx), "adapter_share": share([self.served[name][i] for i in idx]),
                       "quality": mean([right[i] for i in idx])}
                for kind in make_tickets.KINDS if (idx := [i for i, t in enumerate(final) if t["kind"] == kind])}
        s, adapter = self.report["learned"]["adapter_share"], self.report["agreement"]["adapter"]
        teacher_alone = self.report["agreement"]["teacher_is_label"]
        self.report["random_at_learned_share"] = {"adapter_share": s, "quality": s * adapter + (1 - s) * teacher_alone}
        rows = [("teacher only (capture)", {"adapter_share": 0.0, "quality": teacher_alone, **self.report["before"]}),
                ("per task (rollout)", self.report["per_task"]), ("learned router", self.report["learned"]),
                ("random split, same share", self.report["random_at_learned_share"])]
        self.report["comparison"] = [
            {"policy": name, "adapter_share": round(r["adapter_share"], 4), "quality": round(r["quality"], 4),
             **({"cost_per_1000_usd": round(r["cost_per_1000_usd"], 6)} if "cost_per_1000_usd" in r else {})}
            for name, r in rows]
        for row in self.report["comparison"]:
            log(f"{row['policy']}: adapter share {row['adapter_share']:.3f}, quality {row['quality']:.3f}"
                + (f", ${row['cost_per_1000_usd']:.5f} per 1,000" if "cost_per_1000_usd" in row else ""))

    # -- the whole run ----------------------------------------------------------------------------------

    def tickets(self) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
        """The capture's tickets (the `train` split but the hard kind), the rollout's (fresh tickets of the
        held-out templates, `hard_share` of them hard) and the final ones (the `heldout` split's hard
        tickets and, in file order, as many others as make them `hard_share` of it)."""
        rows = make_tickets.generate(templates=True)
        capture = [r for r in rows if r["split"] == "train" and r["kind"] != "hard"]
        heldout = [r for r in rows if r["split"] == "heldout"]
        hard = sum(r["kind"] == "hard" for r in heldout)
        others = sorted(r["id"] for r in heldout if r["kind"] != "hard")
        keep = set(others[: round(hard * (1 - self.hard_share) / self.hard_share)])
        final = [r for r in heldout if r["kind"] == "hard" or r["id"] in keep]
        live = make_tickets.routing(self.live, templates={r["template"] for r in heldout}, hard_share=self.hard_share)
        (self.work / "live.jsonl").write_text(make_tickets.render(live), encoding="utf-8")
        self.report["tickets"] = {
            "capture": len(capture), "live": len(live), "final": len(final),
            "live_hard": sum(r["kind"] == "hard" for r in live), "final_hard": hard,
            "heldout_templates": len({r["template"] for r in heldout})}
        return capture, live, final

    def main(self) -> dict[str, Any]:
        capture, live, final = self.tickets()
        py = sys.executable
        env = {"NANOROUTE_DATA_DIR": str(self.work / "data"), "NANOROUTE_ADMIN_KEY": ADMIN_KEY,
               "NANOROUTE_LOG_LEVEL": "info", "NANOROUTE_RELOAD_INTERVAL_S": "0"}
        self.config.write_text(self.config_text("capture"))
        started = time.monotonic()
        with process([py, str(HERE / "teacher.py"), "--port", str(self.teacher_port), "--know",
                      str(self.work / "live.jsonl")], self.logs / "teacher.log"), \
                process([*NANOROUTE, "serve", "--config", str(self.config), "--port", str(self.gateway_port)],
                        self.logs / "gateway.log", env):
            wait_for(lambda: httpx.get(f"http://127.0.0.1:{self.teacher_port}/v1/models").status_code == 200,
                     "the teacher", 30)
            wait_for(lambda: httpx.get(f"{self.root}/readyz").status_code == 200, "the gateway", 60)
            self.capture(capture)
            self.distill()
            tag = f"flywheel-{self.vllm_port}"
            with self.step("vllm start"):
                run(["bash", str(REPO / "scripts" / "stack" / "start-vllm.sh")], "vLLM", self.logs / "vllm-start.log",
                    15 * 60, env={"VLLM_PORT": str(self.vllm_port), "VLLM_TAG": tag})
            try:
                vllm_url = f"http://127.0.0.1:{self.vllm_port}/v1"
                self.evaluate(vllm_url)
                # Live traffic from here on is of situations the adapter was not trained on.
                self.roll_out(live)
                self.route(final)
                self.final("per_task", final)
                self.reload("learned")
                self.final("learned", final)
                self.agreement(vllm_url, final)
                self.compare(final)
            finally:
                subprocess.run(["bash", str(REPO / "scripts" / "stack" / "down.sh"), tag], check=False,
                               capture_output=True, timeout=120)
        self.report["total_s"] = round(time.monotonic() - started, 1)
        return self.report


def share(served: list[tuple[str, str]]) -> float:
    """The share of `served` (model, answer) pairs the adapter answered."""
    return sum(model == ADAPTER for model, _ in served) / len(served) if served else 0.0


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, help="working folder (default: a new temporary one, removed after)")
    p.add_argument("--report", type=Path, help="write the report (JSON) here")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--target-modules", nargs="+", default=list(TARGETS))
    p.add_argument("--live", type=int, default=LIVE,
                   help=f"fresh tickets of the held-out templates sent during the rollout ({LIVE})")
    p.add_argument("--hard-share", type=float, default=HARD_SHARE,
                   help=f"the share of hard tickets in the live traffic and in the final tickets ({HARD_SHARE})")
    args = p.parse_args(argv)
    if not (BASE_DIR / "config.json").exists():
        print(f"no base model at {BASE_DIR}: build the local stack first (scripts/stack/build.sh)", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="nanoroute-flywheel-"))
    try:
        train_args = ["--epochs", str(args.epochs), "--lr", str(args.lr), "--rank", str(args.rank),
                      "--alpha", str(2 * args.rank), "--target-modules", *args.target_modules]
        report = Demo(work, train_args, args.live, args.hard_share).main()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2)
    if args.report:
        args.report.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
