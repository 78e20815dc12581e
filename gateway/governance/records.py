"""Keys made by the admin API: what an operator sends, and what the store keeps.

A key's settings are the same whether the config declares it (`keys:`, gateway/config/schema.py `Key`) or the
admin API makes it: the models and policies it may use, its team, limits, budget, expiry and metadata. The
store keeps a `KeyRecord` per key, as JSON under ("keys", id), with the key's SHA-256 digest and never the key.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AwareDatetime, Field

from gateway.config.schema import Budget, Limits, Metadata, Name, Strict

KeyName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")]


class KeySettings(Strict):
    """What a key may do. Unset lists allow everything; an empty list allows nothing."""

    team: Name | None = None
    models: list[Name] | None = None
    policies: list[Name] | None = None
    limits: Limits = Limits()
    budget: Budget | None = None
    expires_at: AwareDatetime | None = None
    metadata: Metadata = Field(default_factory=dict)


class KeyCreate(KeySettings):
    """`POST /admin/keys`."""

    name: KeyName


class KeyUpdate(Strict):
    """`PATCH /admin/keys/{id}`: the fields sent replace the key's (null clears one); the others stay."""

    name: KeyName | None = None
    team: Name | None = None
    models: list[Name] | None = None
    policies: list[Name] | None = None
    limits: Limits | None = None
    budget: Budget | None = None
    expires_at: AwareDatetime | None = None
    metadata: Metadata | None = None


class KeyRecord(KeySettings):
    """A key as the store keeps it."""

    id: str
    name: KeyName
    digest: str
    """SHA-256 of the key, in hex."""
    created_at: float
    revoked_at: float | None = None

    def public(self) -> dict[str, object]:
        """What the admin API shows of it: everything but the digest."""
        return self.model_dump(mode="json", exclude={"digest"})

    def updated(self, change: KeyUpdate) -> KeyRecord:
        fields = {name: getattr(change, name) for name in change.model_fields_set}
        if fields.get("limits") is None and "limits" in fields:
            fields["limits"] = Limits()
        if fields.get("metadata") is None and "metadata" in fields:
            fields["metadata"] = {}
        if fields.get("name") is None:
            fields.pop("name", None)
        return self.model_validate({**self.model_dump(), **fields})
