"""Rollouts: a model (a freshly trained adapter, typically) earns its way into a policy's traffic.

    shadow   the policy serves as usual; `shadow_sample` of its requests are also sent to the model, off
             the request path, and its answer is scored against the one served
    canary   the model serves `canary_steps[i]` of the traffic (the policy's chain stays behind it as the
             fallback); `audit_sample` of its answers are checked against the policy's own first choice,
             asked the same question off the path, and the rest still shadow
    primary  the model serves all of the policy's traffic, audited the same way
    stopped  by an operator: no traffic, no mirroring

With `auto`, the live score (the mean of the last `window` scores of the current stage) moves it: once a
stage or canary step has `min_samples` scores, a score at or above the policy's `require.min_quality`
takes the next step; in canary or primary, a score clearly below it sends it back to shadow: clearly,
in that even the upper end of its 95% confidence interval is below (a model whose true score sits at
the floor does not flap between stages on noise). Every move is
logged, counted, and listed by `GET /admin/rollouts`; an operator can pin a stage, stop, or resume
(`POST /admin/rollouts/{policy}`). The live score also becomes the model's measured quality for the
request's task (`Signals.set_quality`), which `min_quality` checks and quality-aware strategies read.

On the request path this costs one random draw per request of a policy with a rollout; the mirrored
calls run in background tasks, at most `max_concurrency` at once (more are dropped and counted).
State lives in the gateway process and survives config reloads while the policy and model stay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from gateway.backends.base import Attempt, Backend, Operation
from gateway.capture.answer import from_reply, kept
from gateway.config.table import ModelRoute, RolloutRoute, RoutingTable
from gateway.distill.evaluate import (
    JUDGE_MAX_TOKENS,
    answer_text,
    exact,
    json_fields,
    judge_messages,
    judge_nonce,
    judge_verdict,
)
from gateway.errors import InvalidRequest, NotFound, UpstreamError
from gateway.record import Outcome, RequestRecord
from gateway.routing.decide import Decision
from gateway.routing.estimate import usage_cost
from gateway.routing.request import RoutedRequest
from gateway.routing.signals import Signals
from gateway.tasks import Background

if TYPE_CHECKING:
    from gateway.metrics import Metrics

log = logging.getLogger("nanoroute")

STAGES = ("shadow", "canary", "primary", "stopped")
MIRROR_TIMEOUT_S = 120.0
HISTORY = 50
Z_95 = 1.645
"""One-sided 95%: the z of the confidence bound that must fall below min_quality to move a rollout back."""


@dataclass(slots=True)
class RolloutState:
    policy: str
    route: RolloutRoute
    min_quality: float
    stage: str
    step: int = 0
    auto: bool = True
    window: deque[float] = field(default_factory=deque)
    scored: int = 0
    """Scores in the current stage (or canary step)."""
    total: int = 0
    mirroring: int = 0
    """Mirrored calls in flight now."""
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY))

    @property
    def share(self) -> float:
        if self.stage == "canary":
            return self.route.settings.canary_steps[self.step]
        return 1.0 if self.stage == "primary" else 0.0

    @property
    def score(self) -> float | None:
        return sum(self.window) / len(self.window) if self.window else None

    def describe(self) -> dict[str, Any]:
        s = self.route.settings
        return {"policy": self.policy, "model": self.route.model.name, "stage": self.stage,
                "canary_step": self.step if self.stage == "canary" else None, "share": self.share,
                "auto": self.auto, "score": self.score, "scored_in_stage": self.scored, "scored_total": self.total,
                "mirroring": self.mirroring,
                "min_quality": self.min_quality, "min_samples": s.min_samples, "evaluator": s.evaluator,
                "judge": self.route.judge.name if self.route.judge is not None else None,
                "history": list(self.history)}


class Probe:
    """One request's part in a rollout: whether the rolled-out model serves it, and which model is asked
    the same question off the path. The served answer is on the request's record, which the relay keeps."""

    __slots__ = ("body", "candidate_serves", "incumbent", "mirror", "state")

    def __init__(self, state: RolloutState, candidate_serves: bool, incumbent: ModelRoute, mirror: ModelRoute,
                 body: dict[str, Any]) -> None:
        self.state, self.candidate_serves, self.incumbent, self.mirror = state, candidate_serves, incumbent, mirror
        self.body = body


def served_answer(rec: RequestRecord) -> str | None:
    """The text of the answer the request was served, as its record kept it; None when it kept none."""
    answer = kept(rec)
    return answer_text(answer[0]) if answer is not None else None


class Rollouts:
    """Every rollout of one gateway process."""

    def __init__(self, signals: Signals, metrics: Metrics | None = None, *,
                 rng: Callable[[], float] = random.random) -> None:
        self.signals = signals
        self.metrics = metrics
        self._rng = rng
        self._states: dict[str, RolloutState] = {}
        self._comparing = Background("rollouts")
        self._backends: Mapping[str, Backend] = {}
        self._known_tasks: frozenset[str] = frozenset()
        """The tasks the config names: a score is kept per task only for these, never per client string."""

    # -- config -----------------------------------------------------------------------------------------

    def configure(self, table: RoutingTable, backends: Mapping[str, Backend]) -> None:
        """Take the rollouts of `table`; one whose policy and model are unchanged keeps its state, except
        that a changed `stage` or `auto` in the config applies (the way to move every gateway at once)."""
        states: dict[str, RolloutState] = {}
        for policy in table.policies:
            rr = policy.rollout
            if rr is None:
                continue
            assert policy.require.min_quality is not None
            old = self._states.get(policy.name)
            if old is not None and old.route.model.name == rr.model.name:
                before, new = old.route.settings, rr.settings
                old.route, old.min_quality = rr, policy.require.min_quality
                old.step = min(old.step, len(new.canary_steps) - 1)
                if new.auto != before.auto:
                    old.auto = new.auto
                if new.stage != before.stage:
                    self._move(old, new.stage, 0, "set by the config")
                states[policy.name] = old
            else:
                states[policy.name] = RolloutState(policy.name, rr, policy.require.min_quality, rr.settings.stage,
                                                   auto=rr.settings.auto)
                self._publish(states[policy.name])
        self._states, self._backends, self._known_tasks = states, backends, table.tasks

    # -- the request path -------------------------------------------------------------------------------

    def route(self, decision: Decision, req: RoutedRequest) -> tuple[Decision, Probe | None]:
        """The decision with the rolled-out model put first when it serves this request, and the probe
        that says what is mirrored (None: nothing)."""
        policy = decision.route
        assert policy is not None and policy.rollout is not None
        st = self._states.get(policy.name)
        if st is None or st.stage == "stopped" or req.op is not Operation.CHAT:
            return decision, None
        if decision.allowed is not None and not all(m.name in decision.allowed for m in st.route.models):
            return decision, None  # the key may not use (nor send its prompts to) the rolled-out model or judge
        s, model, incumbent = st.route.settings, st.route.model, decision.chain[0]
        share = st.share
        if share >= 1.0 or (share > 0.0 and self._rng() < share):
            chain = (model, *(m for m in decision.chain if m is not model))
            decision = dataclasses.replace(decision, chain=chain, reason="rollout")
            if incumbent is not model and self._rng() < s.audit_sample:
                return decision, Probe(st, True, incumbent, incumbent, req.body)
            return decision, None
        if self._rng() < s.shadow_sample:
            return decision, Probe(st, False, incumbent, model, req.body)
        return decision, None

    def finish(self, rec: RequestRecord, probe: Probe) -> None:
        """The request ended: ask the mirror model off the path, if the answer is one to compare with."""
        st = probe.state
        expected_model = st.route.model if probe.candidate_serves else probe.incumbent
        if rec.outcome != Outcome.SUCCESS or rec.model is not expected_model:
            self._count(st, "skipped")  # failed, or another model of the chain answered
            return
        served = served_answer(rec)
        if served is None:
            self._count(st, "skipped")
            return
        if st.mirroring >= st.route.settings.max_concurrency:
            self._count(st, "dropped")
            return
        st.mirroring += 1
        self._comparing.start(self._compare(probe, served, rec), f"{st.policy}: compare {rec.request_id}")

    async def _compare(self, probe: Probe, served: str, rec: RequestRecord) -> None:
        """One comparison, in a task of its own: a failure that is not an upstream's is logged and counted."""
        try:
            await self._mirror(probe, served, rec)
        except Exception:
            log.exception("rollout %s: comparing an answer of %s failed", probe.state.policy,
                          probe.state.route.model.name)
            self._count(probe.state, "error")
        finally:
            probe.state.mirroring -= 1

    async def _mirror(self, probe: Probe, served: str, rec: RequestRecord) -> None:
        st, model = probe.state, probe.mirror
        body = {k: v for k, v in probe.body.items() if k not in ("stream", "stream_options")}
        try:
            mirrored = await self._ask(st, model, body, f"{rec.request_id}-rollout")
        except UpstreamError as exc:
            log.info("rollout %s: mirrored request to %s failed: %s", st.policy, model.name, exc.message)
            self._count(st, "error")
            if not probe.candidate_serves:  # the rolled-out model could not answer: that scores nothing
                self.record(st, 0.0, rec.task)
            return
        if mirrored is None:
            return
        expected, got = (mirrored, served) if probe.candidate_serves else (served, mirrored)
        s = st.route.settings
        if s.evaluator == "judge":
            score = await self._judge(st, probe, expected, got, rec)
            if score is None:
                return
        elif s.evaluator == "exact":
            score = exact(expected, got)
        else:
            score = json_fields(expected, got, s.fields or None)
        self._count(st, "scored")
        self.record(st, score, rec.task)

    async def _judge(self, st: RolloutState, probe: Probe, expected: str, got: str, rec: RequestRecord) -> float | None:
        """The judge model's verdict on `got` against `expected` (1 PASS, 0 otherwise); None when the judge
        could not be asked: that says nothing about the rolled-out model, so nothing is scored."""
        judge = st.route.judge
        assert judge is not None
        nonce = judge_nonce()
        body = {"messages": judge_messages(probe.body["messages"], expected, got, nonce), "temperature": 0,
                "max_tokens": JUDGE_MAX_TOKENS}
        try:
            verdict = await self._ask(st, judge, body, f"{rec.request_id}-judge")
        except UpstreamError as exc:
            log.info("rollout %s: the judge %s failed: %s", st.policy, judge.name, exc.message)
            self._count(st, "error")
            return None
        if verdict is None:
            self._count(st, "skipped")
            return None
        return judge_verdict(verdict, nonce)

    async def _ask(self, st: RolloutState, model: ModelRoute, body: dict[str, Any], request_id: str) -> str | None:
        """`model`'s answer to `body`, asked off the request path, its spend counted as the rollout's; None
        when its backend is gone (a reload dropped it). Raises the backend's UpstreamError."""
        backend = self._backends.get(model.backend)
        if backend is None:
            return None
        attempt = Attempt(Operation.CHAT, model, orjson.dumps({**body, "model": model.upstream_name}), request_id,
                          None, asyncio.get_running_loop().time() + MIRROR_TIMEOUT_S)
        reply = await backend.call(attempt)
        self._spend(st, model, reply.parsed.get("usage"))
        return answer_text(from_reply(reply.parsed)[0])

    # -- scores and stages ------------------------------------------------------------------------------

    def record(self, st: RolloutState, score: float, task: str | None) -> None:
        """One score of the rolled-out model's answer; may move the rollout on or back."""
        s = st.route.settings
        st.window.append(score)
        if len(st.window) > s.window:
            st.window.popleft()
        st.scored += 1
        st.total += 1
        live = st.score
        assert live is not None
        if self.metrics is not None:
            self.metrics.rollout_score.labels(st.policy, st.route.model.name).set(live)
        if st.scored >= s.min_samples:
            self.signals.set_quality(st.route.model.name, task if task in self._known_tasks else None, live)
        if not st.auto or st.scored < s.min_samples or st.stage == "stopped":
            return
        if live >= st.min_quality:
            if st.stage == "shadow":
                self._move(st, "canary", 0, f"score {live:.3f} >= {st.min_quality} over {st.scored}")
            elif st.stage == "canary" and st.step + 1 < len(s.canary_steps):
                self._move(st, "canary", st.step + 1, f"score {live:.3f} >= {st.min_quality} over {st.scored}")
            elif st.stage == "canary":
                self._move(st, "primary", 0, f"score {live:.3f} >= {st.min_quality} over {st.scored}")
        elif st.stage in ("canary", "primary"):
            upper = upper_bound(live, len(st.window))
            if upper < st.min_quality:
                self._move(st, "shadow", 0, f"score {live:.3f} (at most {upper:.3f}) < {st.min_quality} "
                                            f"over {len(st.window)}")

    def _move(self, st: RolloutState, stage: str, step: int, why: str) -> None:
        before = st.stage if st.stage != "canary" else f"canary[{st.step}]"
        st.stage, st.step = stage, step
        st.window.clear()
        st.scored = 0
        after = stage if stage != "canary" else f"canary[{step}]"
        st.history.append({"at": time.time(), "from": before, "to": after, "share": st.share, "why": why})
        log.warning("rollout %s: %s %s -> %s (share %.2f): %s", st.policy, st.route.model.name, before, after,
                    st.share, why)
        if self.metrics is not None:
            self.metrics.rollout_transitions.labels(st.policy, st.route.model.name, stage).inc()
        self._publish(st)

    def _publish(self, st: RolloutState) -> None:
        if self.metrics is None:
            return
        for stage in STAGES:
            self.metrics.rollout_stage.labels(st.policy, st.route.model.name, stage).set(
                1 if stage == st.stage else 0)
        self.metrics.rollout_share.labels(st.policy, st.route.model.name).set(st.share)

    def _count(self, st: RolloutState, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.rollout_comparisons.labels(st.policy, st.route.model.name, outcome).inc()

    def _spend(self, st: RolloutState, model: ModelRoute, usage: Any) -> None:
        if self.metrics is None or not isinstance(usage, dict):
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens") or 0
        if isinstance(prompt, int) and isinstance(completion, int):
            cost = usage_cost(model, prompt, completion)
            if cost:
                self.metrics.rollout_cost.labels(st.policy, model.name).inc(cost)

    # -- operators --------------------------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        return [st.describe() for st in self._states.values()]

    def act(self, policy: str, action: str, stage: str | None = None, step: int = 0) -> dict[str, Any]:
        """`pin` a stage (and canary step; automatic moves stop), `stop` it, or `resume` automatic moves."""
        st = self._states.get(policy)
        if st is None:
            raise NotFound(f"Policy '{policy}' has no rollout")
        if action == "pin":
            if stage not in ("shadow", "canary", "primary"):
                raise InvalidRequest("pin needs a stage: shadow, canary or primary", param="stage")
            if not 0 <= step < len(st.route.settings.canary_steps):
                raise InvalidRequest(f"step must be 0..{len(st.route.settings.canary_steps) - 1}", param="step")
            st.auto = False
            self._move(st, stage, step if stage == "canary" else 0, "pinned by an operator")
        elif action == "stop":
            st.auto = False
            self._move(st, "stopped", 0, "stopped by an operator")
        elif action == "resume":
            st.auto = True
            if st.stage == "stopped":
                self._move(st, "shadow", 0, "resumed by an operator")
        else:
            raise InvalidRequest("action must be pin, stop or resume", param="action")
        return st.describe()

    async def stop(self) -> None:
        await self._comparing.stop()


def upper_bound(mean: float, n: int, z: float = Z_95) -> float:
    """The upper end of the one-sided 95% Wilson score interval of a mean of n scores in 0..1: what the
    true score could still be. A rollout moves back only when even this is below its floor."""
    if n == 0:
        return 1.0
    z2 = z * z
    centre = mean + z2 / (2 * n)
    margin = z * math.sqrt(mean * (1 - mean) / n + z2 / (4 * n * n))
    return min(1.0, (centre + margin) / (1 + z2 / n))
