"""`Principal`: who a request comes from, as admission, routing and the ledger need it, resolved once per key.

A key comes from one of three sources: `NANOROUTE_API_KEYS` (`env`), the config's `keys:` with a `digest` or a
`secret_file` (`config`), or the admin API (`admin`). Whatever the source, it becomes a Principal when the keys
or the config change, never per request: the request path only looks one up by the key's digest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gateway.config import schema
from gateway.config.table import KeyAccess
from gateway.governance.counters import Scope, nano

Source = Literal["env", "config", "admin"]
NO_LABEL = "-"


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    """The key's name (env and config keys), its short hash (an unnamed env key), or `key_...` (admin keys)."""
    name: str
    source: Source
    team: str | None = None
    access: KeyAccess | None = None
    """The models and policies it may use; None: all."""
    scopes: tuple[Scope, ...] = ()
    """What limits it: its own limits and budget, then its team's; empty: nothing to check (no store call)."""
    ledger: bool = False
    """Its requests are added to the spend ledger (and the spend metric)."""
    expires_at: float | None = None
    team_label: str = NO_LABEL
    key_label: str = NO_LABEL
    """The metric labels: the team's name, and the key's id when `governance.key_labels` is on."""


def scope(prefix: str, name: str, limits: schema.Limits, budget: schema.Budget | None) -> Scope | None:
    """The scope of a key or a team, or None when it limits nothing."""
    if limits.rpm is None and limits.tpm is None and limits.max_in_flight is None and budget is None:
        return None
    return Scope(f"{prefix}:{name}", limits.rpm, limits.tpm, limits.max_in_flight,
                 None if budget is None else nano(budget.usd), budget.period if budget is not None else "month")


def principal(key_id: str, name: str, source: Source, *, team: str | None, models: list[str] | None,
              policies: list[str] | None, limits: schema.Limits, budget: schema.Budget | None,
              expires_at: float | None, teams: Mapping[str, schema.Team], gov: schema.Governance) -> Principal:
    """A key's Principal. A team that the config does not (or no longer) declare limits nothing and labels
    nothing: its keys go on with their own limits."""
    own = scope("key", key_id, limits, budget)
    team_spec = teams.get(team) if team is not None else None
    shared = scope("team", team, team_spec.limits, team_spec.budget) if team_spec is not None and team else None
    scopes = tuple(s for s in (own, shared) if s is not None)
    access = None if models is None and policies is None else KeyAccess(
        None if models is None else frozenset(models), None if policies is None else frozenset(policies))
    governed = bool(scopes) or team_spec is not None or source != "env"
    return Principal(key_id, name, source, team if team_spec is not None else None, access, scopes,
                     governed or gov.ledger == "all", expires_at,
                     team if team_spec is not None and team else NO_LABEL,
                     key_id if gov.key_labels else NO_LABEL)
