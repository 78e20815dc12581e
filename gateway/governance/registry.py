"""`Registry`: every client key of the gateway, resolved into a `Principal` and looked up by its digest.

The request path reads one dict (`lookup`), swapped whole when something changes:

- at start and at each config reload (`configure`): the keys of `NANOROUTE_API_KEYS`, the config's `keys:`
  (their limits, team, models and policies, and the keys it declares by `digest` or `secret_file`), and the
  config's `teams`;
- when the admin API makes, changes or revokes a key, on any process or replica: the store holds each admin
  key as a `KeyRecord` under ("keys", id) and a version under ("governance", "keys"), which every process
  reads every `sync_s` (0.5 s); a changed version reloads the records. So a key revoked on one replica is
  refused by all within a second.

The store failing leaves the last keys read in place (logged once a minute); an admin call then gets 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Iterable
from types import MappingProxyType

from gateway.config import schema
from gateway.config.secrets import digest, new_id, new_key
from gateway.config.table import RoutingTable
from gateway.errors import InvalidRequest, NotFound, StorageUnavailable
from gateway.governance.principal import Principal, principal
from gateway.governance.records import KeyCreate, KeyRecord, KeySettings, KeyUpdate
from gateway.store.base import Store
from gateway.tasks import Background

log = logging.getLogger("nanoroute")

KEYS = "keys"
VERSION = ("governance", "keys")
LOG_EVERY_S = 60.0


class Registry:
    """The client keys of one gateway process. `env`: (id, key) of each `NANOROUTE_API_KEYS` entry."""

    def __init__(self, env: Iterable[tuple[str, str]], store: Store, *, admin_api: bool = False,
                 sync_s: float = 0.5) -> None:
        self._env = [(key_id, digest(secret.encode())) for key_id, secret in env]
        self._store = store
        self._admin_api = admin_api
        self.sync_s = sync_s
        self.loaded = False
        """The admin API's keys have been read from the store at least once."""
        self.open = False
        """No key of any source: the API is open to anyone who can reach it."""
        self._table: RoutingTable | None = None
        self._records: dict[str, KeyRecord] = {}
        self._version: bytes | None = None
        self._by_digest: MappingProxyType[bytes, Principal] = MappingProxyType({})
        self._by_id: MappingProxyType[str, Principal] = MappingProxyType({})
        self._tasks = Background("keys")
        self._logged_at = -math.inf
        self._lock = asyncio.Lock()
        self._rebuild()  # the keys of NANOROUTE_API_KEYS hold from the start, before any config

    @property
    def complete(self) -> bool:
        """Every key is known: the admin API's were read, or there is no admin API to have made any."""
        return self.loaded or not self._admin_api

    # -- the request path --------------------------------------------------------------------------------

    def lookup(self, key_digest: bytes) -> Principal | None:
        return self._by_digest.get(key_digest)

    def by_id(self, key_id: str) -> Principal | None:
        return self._by_id.get(key_id)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._by_id)

    # -- building ------------------------------------------------------------------------------------------

    def configure(self, table: RoutingTable) -> None:
        """Resolve the keys anew for a new config (at start, at each reload)."""
        self._table = table
        self._rebuild()

    def _rebuild(self) -> None:
        table = self._table
        cfg = table.config if table is not None else None
        keys = cfg.keys if cfg is not None else {}
        teams = cfg.teams if cfg is not None else {}
        gov = cfg.governance if cfg is not None else schema.Governance()
        found: dict[bytes, Principal] = {}

        def from_config(key_id: str, source: str, spec: schema.Key | None) -> Principal:
            spec = spec or schema.Key()
            return principal(key_id, key_id, "env" if source == "env" else "config", team=spec.team,
                             models=spec.models, policies=spec.policies, limits=spec.limits, budget=spec.budget,
                             expires_at=spec.expires_at.timestamp() if spec.expires_at else None, teams=teams,
                             gov=gov)

        for key_id, key_digest in self._env:
            found[key_digest] = from_config(key_id, "env", keys.get(key_id))
        if table is not None:
            for name, key_digest in table.declared_keys.items():
                if key_digest in found:
                    log.warning("config %s: key '%s' has the same secret as a key of NANOROUTE_API_KEYS; the "
                                "config's entry is ignored", table.source, name)
                    continue
                found[key_digest] = from_config(name, "config", keys[name])
        taken = {p.id for p in found.values()}
        for record in self._records.values():
            if record.revoked_at is not None:
                continue
            key_digest = bytes.fromhex(record.digest)
            if key_digest in found or record.id in taken:
                continue
            found[key_digest] = principal(
                record.id, record.name, "admin", team=record.team, models=record.models, policies=record.policies,
                limits=record.limits, budget=record.budget,
                expires_at=record.expires_at.timestamp() if record.expires_at else None, teams=teams, gov=gov)
        self._by_digest = MappingProxyType(found)
        self._by_id = MappingProxyType({p.id: p for p in found.values()})
        # Open only while no key was ever given: a revoked last key leaves it closed, and so does a store that
        # could not be read yet where the admin API may have made keys (fail closed).
        self.open = not found and not self._records and self.complete

    # -- the store -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the admin keys (a store that fails is logged, and read again later), and keep them in sync."""
        with contextlib.suppress(StorageUnavailable):
            await self.sync()
        self._tasks.start(self._sync_every(), "sync")

    async def stop(self) -> None:
        await self._tasks.stop()

    async def sync(self, *, force: bool = False) -> bool:
        """Read the keys again if their version in the store changed; True when they did. Raises
        StorageUnavailable (logged once a minute)."""
        try:
            version = await self._store.get(*VERSION)
            if version == self._version and self.loaded and not force:
                return False
            items = await self._store.items(KEYS)
        except StorageUnavailable as exc:
            now = time.monotonic()
            if now - self._logged_at >= LOG_EVERY_S:
                self._logged_at = now
                log.error("the keys made by the admin API could not be read from the store (%s); the last ones "
                          "read stay in force", exc.message)
            raise
        records = {}
        for key_id, raw in items:
            try:
                records[key_id] = KeyRecord.model_validate_json(raw)
            except ValueError as exc:
                log.error("the store holds a key record %s that cannot be read: %s", key_id, exc)
        self._records, self._version, self.loaded = records, version, True
        self._rebuild()
        return True

    async def _sync_every(self) -> None:
        while True:
            await asyncio.sleep(self.sync_s)
            with contextlib.suppress(StorageUnavailable):
                await self.sync()

    async def _save(self, record: KeyRecord) -> None:
        await self._store.put(KEYS, record.id, record.model_dump_json().encode(), None)
        await self._store.put(*VERSION, secrets.token_bytes(8), None)
        self._records[record.id] = record
        self._rebuild()

    # -- the admin API -------------------------------------------------------------------------------------

    async def create(self, spec: KeyCreate) -> tuple[KeyRecord, str]:
        """A new key: its record and the key itself, which is shown this once and kept nowhere."""
        async with self._lock:
            await self.sync()
            self._check(spec, spec.name, None)
            secret = new_key()
            record = KeyRecord(**spec.model_dump(), id=new_id(), digest=digest(secret.encode()).hex(),
                               created_at=time.time())
            await self._save(record)
        return record, secret

    async def update(self, key_id: str, change: KeyUpdate) -> KeyRecord:
        async with self._lock:
            await self.sync()
            record = self._live(key_id)
            try:
                updated = record.updated(change)
            except ValueError as exc:
                raise InvalidRequest(f"Invalid key settings: {exc}") from None
            self._check(updated, updated.name, key_id)
            await self._save(updated)
        return updated

    async def revoke(self, key_id: str) -> KeyRecord:
        """Refused from now on by every process; the record stays, for the ledger and the audit."""
        async with self._lock:
            await self.sync()
            record = self._live(key_id).model_copy(update={"revoked_at": time.time()})
            await self._save(record)
        return record

    async def records(self) -> list[KeyRecord]:
        await self.sync()
        return sorted(self._records.values(), key=lambda r: r.created_at)

    async def record(self, key_id: str) -> KeyRecord:
        await self.sync()
        record = self._records.get(key_id)
        if record is None:
            raise NotFound(f"No key with id '{key_id}'", param="id")
        return record

    def _live(self, key_id: str) -> KeyRecord:
        record = self._records.get(key_id)
        if record is None or record.revoked_at is not None:
            raise NotFound(f"No live key with id '{key_id}'", param="id")
        return record

    def _check(self, settings: KeySettings, name: str, key_id: str | None) -> None:
        """What a key may name must exist: its team, models and policies (400 otherwise); its name is unique."""
        table = self._table
        if table is None:
            return
        cfg = table.config
        if settings.team is not None and settings.team not in cfg.teams:
            raise InvalidRequest(f"No team '{settings.team}' in the config's teams", param="team")
        for model in settings.models or ():
            if model not in table.models:
                raise InvalidRequest(f"No model '{model}' in the catalog", param="models")
        names = {p.name for p in table.policies}
        for policy in settings.policies or ():
            if policy not in names:
                raise InvalidRequest(f"No policy '{policy}' in the config", param="policies")
        taken = {p.name for p in self._by_id.values() if p.id != key_id}
        taken |= {r.name for r in self._records.values() if r.revoked_at is None and r.id != key_id}
        if name in taken:
            raise InvalidRequest(f"A key named '{name}' exists already", param="name")
