"""The route stage: where the request goes and why, and what else watches it on the way.

`routing.decide` picks the policy and the chain of models; then a policy's rollout may put its model
first (and choose the request for comparison), its capture may sample the request, and a cascade sets
its checks. A request that something will read the answer of has its record keep the answer.
"""

from __future__ import annotations

from gateway.capture.capture import Capture
from gateway.pipeline.context import RequestContext
from gateway.rollout import Rollouts
from gateway.routing.cascade import Gate, wants_logprobs
from gateway.routing.decide import decide


class Route:
    def __init__(self, rollouts: Rollouts, capture: Capture) -> None:
        self.rollouts = rollouts
        self.capture = capture

    def decide(self, ctx: RequestContext) -> None:
        req, rec, state = ctx.request, ctx.record, ctx.state
        assert req is not None
        decision = decide(state.table, req, state.signals)
        route = decision.route
        if route is not None and route.rollout is not None:
            decision, ctx.probe = self.rollouts.route(decision, req)
        rec.policy, rec.reason, rec.chosen = decision.policy, decision.reason, decision.chain[0]
        if route is not None and route.capture is not None:
            ctx.sample = self.capture.sample(route, req, state.table)
        if ctx.sample is not None or ctx.probe is not None:
            rec.keep = True
            if req.stream:
                rec.events = []
        if Gate.wanted(decision, req):
            if req.native is not None:
                req.native.passthrough = False  # the checks read chat completions answers
            gate = ctx.gate = Gate(decision, req)
            if not req.stream and wants_logprobs(gate.policy):  # asked for upstream, stripped from the answer
                req.add_logprobs = not req.body.get("logprobs")
        ctx.decision = decision

