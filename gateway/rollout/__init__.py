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
The state is the gateway's store's (`Rollouts`): every process and replica moves one rollout, an operator's
action on one applies to all, and it survives restarts, and config reloads while the policy and model stay.
The request path reads each process's copy, which follows the store within `sync_s`.

    state.py     `RolloutState` and the changes made to it: scores, moves, operators' actions, the config's
    rollouts.py  `Rollouts`: routing, mirrored comparisons, and the state kept in the store
"""

from __future__ import annotations

from gateway.rollout.rollouts import NAMESPACE, Probe, Rollouts, served_answer
from gateway.rollout.state import STAGES, RolloutState, upper_bound

__all__ = ["NAMESPACE", "STAGES", "Probe", "RolloutState", "Rollouts", "served_answer", "upper_bound"]
