"""gateway/governance/registry.py and principal.py: keys from the environment, the config and the admin API,
resolved into principals; kept in sync between processes through the store."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.config.loader import load_text
from gateway.config.secrets import PREFIX, digest
from gateway.errors import InvalidRequest, NotFound
from gateway.governance.counters import Scope
from gateway.governance.records import KeyCreate, KeyUpdate
from gateway.governance.registry import Registry
from gateway.store.sqlite import SqliteStore

ENV_KEY = "sk-env-0123456789abcdef"
GITOPS_KEY = "sk-gitops-0123456789abcdef"

CONFIG = f"""
backends:
  b: {{type: openai, url: http://127.0.0.1:9/v1}}
models:
  small: {{backend: b}}
  big: {{backend: b}}
policies:
  - {{name: support, match: {{task: support}}, candidates: [small, big]}}
teams:
  search: {{limits: {{rpm: 100}}, budget: {{usd: 50, period: week}}}}
  quiet: {{}}
keys:
  ops: {{limits: {{max_in_flight: 4}}}}
  gitops: {{digest: "sha256:{hashlib.sha256(GITOPS_KEY.encode()).hexdigest()}", team: search, models: [small]}}
governance: {{key_labels: true}}
"""


Stores = tuple[SqliteStore, SqliteStore]


def with_stores(tmp_path: Path, body: Callable[[Stores], Awaitable[None]]) -> None:
    """Run `body` with two stores on one file: two gateway processes of one host."""
    async def run() -> None:
        a, b = SqliteStore(tmp_path / "state.db"), SqliteStore(tmp_path / "state.db")
        await a.start()
        await b.start()
        try:
            await body((a, b))
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())


def registry(store: SqliteStore) -> Registry:
    r = Registry([("ops", ENV_KEY)], store)
    r.configure(load_text(CONFIG))
    return r


def test_env_and_config_keys_resolve_into_principals(tmp_path: Path) -> None:
    async def body(stores: Stores) -> None:
        r = registry(stores[0])
        ops = r.lookup(digest(ENV_KEY.encode()))
        assert ops is not None
        assert (ops.id, ops.source, ops.ledger) == ("ops", "env", True)
        assert ops.scopes == (Scope("key:ops", max_in_flight=4),)
        gitops = r.lookup(digest(GITOPS_KEY.encode()))
        assert gitops is not None
        assert (gitops.source, gitops.team) == ("config", "search")
        assert (gitops.team_label, gitops.key_label) == ("search", "gitops")
        assert gitops.access is not None and gitops.access.models == frozenset({"small"})
        assert gitops.scopes == (Scope("team:search", rpm=100, budget_nusd=50 * 10**9, period="week"),)
        assert r.lookup(digest(b"sk-unknown-0123456789")) is None
        assert not r.open

    with_stores(tmp_path, body)

def test_a_key_made_in_one_process_is_known_to_the_other_and_revoked_in_both(
        tmp_path: Path) -> None:
    async def body(stores: Stores) -> None:
        one, two = registry(stores[0]), registry(stores[1])
        record, secret = await one.create(KeyCreate(name="search-api", team="search", limits={"rpm": 5}))
        assert secret.startswith(PREFIX) and secret not in record.model_dump_json()
        assert record.digest == hashlib.sha256(secret.encode()).hexdigest()
        assert one.lookup(digest(secret.encode())) is not None
        assert two.lookup(digest(secret.encode())) is None  # not read yet
        assert await two.sync()
        made = two.lookup(digest(secret.encode()))
        assert made is not None and made.id == record.id and made.source == "admin"
        assert [s.id for s in made.scopes] == [f"key:{record.id}", "team:search"]
        await two.revoke(record.id)
        assert two.lookup(digest(secret.encode())) is None
        assert await one.sync()
        assert one.lookup(digest(secret.encode())) is None
        assert not await one.sync()  # nothing changed since

    with_stores(tmp_path, body)

def test_the_sync_task_picks_changes_up_within_its_interval(tmp_path: Path) -> None:
    async def body(stores: Stores) -> None:
        one, two = registry(stores[0]), registry(stores[1])
        two.sync_s = 0.05
        await two.start()
        try:
            _, secret = await one.create(KeyCreate(name="late"))
            await asyncio.sleep(0.3)
            assert two.lookup(digest(secret.encode())) is not None
        finally:
            await two.stop()

    with_stores(tmp_path, body)

def test_updates_replace_what_is_sent_and_keep_the_rest(tmp_path: Path) -> None:
    async def body(stores: Stores) -> None:
        r = registry(stores[0])
        record, secret = await r.create(KeyCreate(name="batch", models=["small"], limits={"rpm": 5, "tpm": 900},
                                                  metadata={"owner": "search"}))
        updated = await r.update(record.id, KeyUpdate.model_validate({"limits": {"rpm": 10}, "models": None}))
        assert (updated.limits.rpm, updated.limits.tpm, updated.models) == (10, None, None)
        assert updated.metadata == {"owner": "search"}
        who = r.lookup(digest(secret.encode()))
        assert who is not None and who.access is None and who.scopes[0].rpm == 10

    with_stores(tmp_path, body)

@pytest.mark.parametrize(("spec", "param"), [
    ({"name": "x", "team": "nobody"}, "team"),
    ({"name": "x", "models": ["huge"]}, "models"),
    ({"name": "x", "policies": ["nope"]}, "policies"),
    ({"name": "ops"}, "name"),  # the name of a key of NANOROUTE_API_KEYS
])
def test_a_key_may_name_only_what_exists(tmp_path: Path, spec: dict[str, object],
                                               param: str) -> None:
    async def body(stores: Stores) -> None:
        with pytest.raises(InvalidRequest) as info:
            await registry(stores[0]).create(KeyCreate.model_validate(spec))
        assert info.value.param == param

    with_stores(tmp_path, body)

def test_revoked_and_unknown_keys_cannot_be_changed(tmp_path: Path) -> None:
    async def body(stores: Stores) -> None:
        r = registry(stores[0])
        record, _ = await r.create(KeyCreate(name="gone"))
        await r.revoke(record.id)
        for call in (r.revoke(record.id), r.update(record.id, KeyUpdate(name="back")), r.revoke("key_nothing")):
            with pytest.raises(NotFound):
                await call
        assert (await r.record(record.id)).revoked_at is not None

    with_stores(tmp_path, body)

def test_admin_keys_survive_a_restart(tmp_path: Path) -> None:
    async def body() -> None:
        store = SqliteStore(tmp_path / "state.db")
        await store.start()
        _, secret = await registry(store).create(KeyCreate(name="kept"))
        await store.close()
        again = SqliteStore(tmp_path / "state.db")
        await again.start()
        try:
            r = registry(again)
            await r.sync()
            assert r.lookup(digest(secret.encode())) is not None
        finally:
            await again.close()

    asyncio.run(body())

def test_a_team_the_config_drops_limits_nothing_and_labels_nothing() -> None:
    r = Registry([("ops", ENV_KEY)], SqliteStore(Path("unused.db")))
    r.configure(load_text(CONFIG.replace("  search: {limits: {rpm: 100}, budget: {usd: 50, period: week}}\n", "")
                          .replace("team: search, ", "")))
    gitops = r.lookup(digest(GITOPS_KEY.encode()))
    assert gitops is not None and (gitops.team, gitops.scopes, gitops.team_label) == (None, (), "-")


def test_revoking_the_last_key_leaves_the_api_closed(tmp_path: Path) -> None:
    async def body(stores: Stores) -> None:
        r = Registry([], stores[0], admin_api=True)
        assert not r.open  # the admin API may have made keys: closed until the store is read
        await r.sync()
        assert r.open
        record, _ = await r.create(KeyCreate(name="only"))
        assert not r.open
        await r.revoke(record.id)
        assert not r.open and r.lookup(digest(b"anything-at-all-123")) is None

    with_stores(tmp_path, body)


def test_a_store_never_read_keeps_an_api_with_an_admin_api_closed() -> None:
    """Fail closed: keys the admin API made cannot be told from wrong ones until the store is read."""
    assert not Registry([], SqliteStore(Path("unused.db")), admin_api=True).complete
    assert Registry([], SqliteStore(Path("unused.db"))).open  # no admin API: nothing could have made a key
