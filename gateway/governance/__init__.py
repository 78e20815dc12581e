"""Governance: client keys, teams, limits, budgets and the spend ledger, shared by every process and replica.

    records.py    keys made by the admin API: what an operator sends (`KeyCreate`, `KeyUpdate`), what the store keeps
    principal.py  `Principal`: a key resolved for the request path (its access, its scopes, its labels)
    registry.py   `Registry`: every key by digest, from NANOROUTE_API_KEYS, the config and the admin API (in sync
                  through the store)
    counters.py   `Counters`: rate windows, holds, budgets and the ledger, atomically in one round trip
    sqlite.py     ... in the embedded SQLite store;  redis.py  ... in Redis (one Lua script a call)
    governor.py   `Governor`: the counters as the request path uses them, and store failures (`on_store_error`)

A key's text (its format, digest, new keys) is `config/secrets.py`, which the config's loader reads too.
On the request path: `pipeline/admission/keys.py` finds the Principal (before the body is read),
`pipeline/admission/limits.py` admits it against its scopes once routed, and the `Settle` observer
(`pipeline/observers.py`) charges what it really used. The admin API is `api/keys.py`; docs/governance.md says
what operators and clients see.
"""
