"""`Rollouts`: every rollout of one gateway process: routing its requests, comparing answers off the path
(each comparison also handed to `compared`, which the gateway points at the capture's `comparisons` file
set), and keeping its state in step with the store."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from gateway.backends.base import Attempt, Backend, Operation
from gateway.capture.answer import from_reply, kept
from gateway.capture.capture import stamp
from gateway.config.table import ModelRoute, RoutingTable
from gateway.distill.evaluate import (
    JUDGE_MAX_TOKENS,
    answer_text,
    exact,
    json_fields,
    judge_messages,
    judge_nonce,
    judge_verdict,
)
from gateway.errors import InvalidRequest, NotFound, StorageUnavailable, UpstreamError
from gateway.record import Outcome, RequestRecord
from gateway.rollout.state import (
    STAGES,
    Change,
    Move,
    RolloutState,
    configured,
    decode,
    pinned,
    resumed,
    scored,
    stopped,
)
from gateway.routing.decide import Decision
from gateway.routing.estimate import usage_cost
from gateway.routing.request import RoutedRequest
from gateway.routing.signals import Signals
from gateway.store.base import Store
from gateway.tasks import Background

if TYPE_CHECKING:
    from gateway.metrics import Metrics

log = logging.getLogger("nanoroute")

MIRROR_TIMEOUT_S = 120.0
NAMESPACE = "rollouts"
"""The store's namespace: one value per policy with a rollout, its shared state (`RolloutState.encode`)."""
SYNC_S = 1.0
"""How often each process reads every rollout back from the store."""
SWAP_TRIES = 5
STOP_S = 5.0
COMPLAIN_EVERY_S = 60.0


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


def comparison(probe: Probe, rec: RequestRecord, score: float) -> dict[str, Any]:
    """The record of one scored comparison (docs/configuration.md): the rolled-out model's answer to the
    request `rec` served, scored against the policy's first choice's. No prompt text: the capture of the
    same request (the same `client` and `request_id`) holds it, when the request was captured."""
    st = probe.state
    return {"ts": stamp(time.time()), "request_id": rec.request_id, "client": rec.key_id, "task": rec.task,
            "policy": st.policy, "model": st.route.model.name, "reference": probe.incumbent.name, "score": score,
            "evaluator": st.route.settings.evaluator, "stage": st.stage}


class Rollouts:
    """Every rollout of one gateway process.

    With a `store`, a rollout's shared state (`RolloutState` but `mirroring`) is one JSON value under
    ("rollouts", policy), tagged with the rolled-out model's name, and every process works on it alike:

    - A change (a score, an operator's action, the config's stage) is applied to this process's copy at
      once, so that its requests and the answer to the operator see it, and queued; a background task writes
      the queue to the store by compare and set: it reads the stored state, applies the same changes to it,
      swaps it in, and reads again and retries when another process came first. The move a change makes is
      logged and counted by the process whose write made it, once.
    - Every `sync_s`, and at start, each process reads every rollout back: its copy becomes the stored state
      with its own changes not yet written on top. The request path reads only that copy; no request waits
      on the store.
    - A stored state of another model than this process's config names is left alone (the rollout runs here
      only, `"shared": false`), unless this process's config has just changed the model (at start, or at a
      reload): then the new model starts afresh, over it.
    - While the store is unavailable, each process moves its rollouts on its own, from the state it read
      last, and says so once a minute; once the store is back its state wins again: the operators' and the
      config's changes made meanwhile are written to it then, the scores are not.

    Without a store, the state is this process's alone (as for a gateway of one process without its store).

    `compared`, when given, receives each scored comparison as a record (`comparison`); it must neither
    wait nor raise (`Capture.compared` queues it).
    """

    def __init__(self, signals: Signals, metrics: Metrics | None = None, *, store: Store | None = None,
                 sync_s: float = SYNC_S, rng: Callable[[], float] = random.random,
                 compared: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.signals = signals
        self.metrics = metrics
        self.store = store
        self.compared = compared
        self.sync_s = sync_s
        self._rng = rng
        self._states: dict[str, RolloutState] = {}
        self._comparing = Background("rollouts")
        self._backends: Mapping[str, Backend] = {}
        self._known_tasks: frozenset[str] = frozenset()
        """The tasks the config names: a score is kept per task only for these, never per client string."""
        self._pending: dict[str, list[Change]] = {}
        """Per policy, the changes applied to this process's copy and not yet to the stored state."""
        self._unsettled: dict[str, list[Move]] = {}
        """The moves those changes made in this copy: logged if they come to stay in this process only."""
        self._stored: dict[str, bytes] = {}
        """Per policy, the stored value this process's copy was last built on."""
        self._claims: set[str] = set()
        """Policies whose rollout model this process's config has just set: theirs replaces another model's."""
        self._foreign: set[str] = set()
        """Policies whose stored state is another model's: the rollout runs in this process only."""
        self._down = False
        """The last exchange with the store failed."""
        self._complained = -math.inf
        self._wake = asyncio.Event()
        self._refresh_soon = False
        self._closing = False
        self._syncing = Background("rollouts")
        self._sync_task: asyncio.Task[None] | None = None

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
            st = self._states.get(policy.name)
            if st is not None and st.route.model.name == rr.model.name:
                st.route, st.min_quality = rr, policy.require.min_quality
                st.step = min(st.step, len(rr.settings.canary_steps) - 1)
            else:
                st = RolloutState.fresh(policy.name, rr, policy.require.min_quality)
                self._forget(policy.name)
                if self.store is not None:
                    self._claims.add(policy.name)
                self._publish(st)
            states[policy.name] = st
        for gone in self._states.keys() - states.keys():
            self._forget(gone)
        self._states, self._backends, self._known_tasks = states, backends, table.tasks
        for st in states.values():  # a no-op unless the config's stage or auto differ from what one said last
            self._change(st, Change(functools.partial(configured, stage=st.route.settings.stage,
                                                      auto=st.route.settings.auto)))
        if self.store is not None:
            self._refresh_soon = True
            self._wake.set()

    def _forget(self, policy: str) -> None:
        for d in (self._pending, self._unsettled, self._stored):
            d.pop(policy, None)
        self._claims.discard(policy)
        self._foreign.discard(policy)

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
        entry = comparison(probe, rec, score)  # the stage it was scored in, before the score moves it
        self.record(st, score, rec.task)
        if self.compared is not None:
            self.compared(entry)

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
        self._change(st, Change(functools.partial(scored, score=score,
                                                  task=task if task in self._known_tasks else None), kept=False))

    def _change(self, st: RolloutState, change: Change) -> None:
        """Apply `change` to this process's copy now and, with a store, queue it to be written there; without
        one (or while it is unavailable, or the state there is another model's) the moves are this process's."""
        policy = st.policy
        current = self._states.get(policy) is st  # else a reload replaced it: a late score of the old model
        shared = current and self.store is not None and policy not in self._foreign
        if shared and (change.kept or not self._down):
            self._pending.setdefault(policy, []).append(change)
            self._wake.set()
        before = st.label
        moves = change.apply(st)
        if shared and not self._down:
            self._unsettled.setdefault(policy, []).extend(moves)
        else:
            for m in moves:
                self._made(st, m)
        if st.label != before:
            self._publish(st)
        self._observe(st)

    def _made(self, st: RolloutState, m: Move) -> None:
        """A move this process made: logged and counted here (the others only follow it)."""
        log.warning("rollout %s: %s %s -> %s (share %.2f): %s", st.policy, st.route.model.name, m["from"], m["to"],
                    m["share"], m["why"])
        if self.metrics is not None:
            self.metrics.rollout_transitions.labels(st.policy, st.route.model.name, m["to"].partition("[")[0]).inc()

    def _observe(self, st: RolloutState) -> None:
        if st.quality is not None:
            self.signals.set_quality(st.route.model.name, st.task, st.quality)
        if self.metrics is not None and st.live is not None:
            self.metrics.rollout_score.labels(st.policy, st.route.model.name).set(st.live)

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
        """Each rollout as `describe` on its state says, with `shared`: whether it is the store's state
        (False: without a store, while it is unavailable, or while the state there is another model's)."""
        up = self.store is not None and not self._down
        return [{**st.describe(), "shared": up and st.policy not in self._foreign} for st in self._states.values()]

    def act(self, policy: str, action: str, stage: str | None = None, step: int = 0) -> dict[str, Any]:
        """`pin` a stage (and canary step; automatic moves stop), `stop` it, or `resume` automatic moves.

        Applied to this process's copy at once and written to the store within moments, for every process.
        It never answers 503: the admin API answers at once, and an operator who stops a bad model needs it
        stopped at least where the action landed. While the store is unavailable the answer says
        `"shared": false`: the action holds in this process, and is written to the store once it is back."""
        st = self._states.get(policy)
        if st is None:
            raise NotFound(f"Policy '{policy}' has no rollout")
        if action == "pin":
            if stage not in ("shadow", "canary", "primary"):
                raise InvalidRequest("pin needs a stage: shadow, canary or primary", param="stage")
            if not 0 <= step < len(st.route.settings.canary_steps):
                raise InvalidRequest(f"step must be 0..{len(st.route.settings.canary_steps) - 1}", param="step")
            change = Change(functools.partial(pinned, stage=stage, step=step if stage == "canary" else 0))
        elif action == "stop":
            change = Change(stopped)
        elif action == "resume":
            change = Change(resumed)
        else:
            raise InvalidRequest("action must be pin, stop or resume", param="action")
        self._change(st, change)
        if self.store is not None and self._down:
            log.warning("rollout %s: %s holds in this process only until the store is back", policy, action)
        return next(d for d in self.describe() if d["policy"] == policy)

    # -- the store --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read every rollout from the store (writing those it lacks), then keep them in step in the
        background. Nothing to do without a store."""
        if self.store is None:
            return
        self._refresh_soon = False
        await self._sync(refresh=True)
        self._sync_task = self._syncing.start(self._run(), "sync with the store")

    async def stop(self) -> None:
        """Stop the comparisons, then write the changes still queued (within a few seconds) and stop."""
        await self._comparing.stop()
        self._closing = True
        self._wake.set()
        if self._sync_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._sync_task), STOP_S)
        await self._syncing.stop()

    async def _run(self) -> None:
        """Write the queued changes as they come; read every rollout every `sync_s`."""
        loop = asyncio.get_running_loop()
        due = loop.time() + self.sync_s
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, due - loop.time()))
            self._wake.clear()
            refresh = self._refresh_soon or loop.time() >= due
            if refresh:
                due, self._refresh_soon = loop.time() + self.sync_s, False
            await self._sync(refresh=refresh and not self._closing)
        if any(self._pending.values()):  # queued while the last round was writing
            await self._sync(refresh=False)

    async def _sync(self, *, refresh: bool) -> None:
        assert self.store is not None
        pending = [p for p, changes in self._pending.items() if changes]
        if not pending and not refresh:
            return
        try:
            for policy in pending:
                await self._commit(policy)
            if refresh:
                await self._refresh(dict(await self.store.items(NAMESPACE)))
        except Exception as exc:  # StorageUnavailable, or a bug: either way the rollouts go on in this process
            self._unavailable(exc)
            return
        if self._down:
            self._down = False
            log.warning("rollouts: the store is back: the rollouts follow its state again")

    def _unavailable(self, exc: Exception) -> None:
        """The store failed: the scores not written move only this process's copies from now on (the moves
        they made there are this process's), the operators' and the config's changes wait for it."""
        self._down = True
        for changes in self._pending.values():
            changes[:] = [c for c in changes if c.kept]
        for policy, moves in self._unsettled.items():
            if (st := self._states.get(policy)) is not None:
                for m in moves:
                    self._made(st, m)
        self._unsettled.clear()
        now = time.monotonic()
        if now - self._complained >= COMPLAIN_EVERY_S:
            self._complained = now
            if isinstance(exc, StorageUnavailable):
                log.error("rollouts: %s; each process moves its rollouts on its own until it is back", exc.message)
            else:
                log.error("rollouts: keeping them in the store failed; each process moves its rollouts on its "
                          "own meanwhile", exc_info=exc)

    async def _refresh(self, stored: dict[str, bytes]) -> None:
        """Every rollout's copy from the stored state (with this process's changes not yet written on top);
        a rollout the store lacks, or whose model this process's config has just set, is written first."""
        for policy, st in list(self._states.items()):
            if self._states.get(policy) is not st:
                continue  # a reload replaced it while this awaited
            raw = stored.get(policy)
            if raw is not None and raw == self._stored.get(policy) and policy not in self._foreign:
                continue
            found = self._read(st, raw)
            if isinstance(found, RolloutState) and raw is not None and not self._pending.get(policy):
                self._adopt(st, found, raw, [])
            elif isinstance(found, str) and policy not in self._claims:
                self._follow_not(st, found)
            else:
                await self._commit(policy)

    async def _commit(self, policy: str) -> None:
        """Apply the policy's queued changes to the stored state by compare and set, retried a few times
        against other writers (then left queued for the next round), and take the result as this copy."""
        assert self.store is not None
        st = self._states.get(policy)
        if st is None:
            return
        changes = list(self._pending.get(policy, ()))
        raw = self._stored.get(policy)
        for _ in range(SWAP_TRIES):
            found = self._read(st, raw)
            if isinstance(found, str) and policy not in self._claims:
                self._follow_not(st, found)
                return
            base = found if isinstance(found, RolloutState) else RolloutState.fresh(policy, st.route, st.min_quality)
            moves = [m for c in changes for m in c.apply(base)]
            value = base.encode()
            if value == raw or await self.store.swap(NAMESPACE, policy, raw, value, None):
                break
            raw = await self.store.get(NAMESPACE, policy)
        else:
            return
        if self._states.get(policy) is not st:
            return
        del self._pending.get(policy, [])[:len(changes)]
        self._adopt(st, base, value, moves)

    def _read(self, st: RolloutState, raw: bytes | None) -> RolloutState | str | None:
        """The stored value as this rollout's state; the model's name when it is another model's; None when
        there is none to build on (nothing stored, or a value that is not a rollout's: it is replaced)."""
        if raw is None:
            return None
        try:
            return decode(raw, st)
        except ValueError as exc:
            log.error("rollout %s: the stored state is replaced: %s", st.policy, exc)
            return None

    def _adopt(self, st: RolloutState, base: RolloutState, raw: bytes, moves: list[Move]) -> None:
        """Make this copy the stored state `base` (`raw`) with the changes still queued on top; `moves`:
        the ones this process's write made."""
        self._stored[st.policy] = raw
        self._claims.discard(st.policy)  # it follows this model's state now: another's is left alone again
        self._foreign.discard(st.policy)
        before = st.label
        st.take(base)
        self._unsettled[st.policy] = [m for c in self._pending.get(st.policy, ()) for m in c.apply(st)]
        for m in moves:
            self._made(st, m)
        if st.label != before:
            self._publish(st)
        self._observe(st)

    def _follow_not(self, st: RolloutState, model: str) -> None:
        """The stored state is another model's: this process runs its rollout on its own."""
        if st.policy not in self._foreign:
            log.warning("rollout %s: the store holds a rollout of %s, this config one of %s: it runs in this "
                        "process only, until a config sets the same model everywhere", st.policy, model,
                        st.route.model.name)
        self._foreign.add(st.policy)
        self._pending.pop(st.policy, None)
        for m in self._unsettled.pop(st.policy, []):
            self._made(st, m)
