"""The PBX directory: `pbx_tenants/{tenantId}`, owned by admins, never by the app's users. Pure:
adapters read the documents, this parses them and answers "who may be rung from this PBX for this
number".

One document per company (the app's `companyId` is its id):

    name       the company's name, for admins
    active     false = nobody in this tenant is rung (default true)
    pbx        [{relay: "ws[s]://host:port", serverId: 1, authId, authPassword | authSecret}]
    numbers    the company numbers (DIDs) on those PBXs, in any format a person types
    members    user ids (Firebase Auth uids) who belong to the tenant
    suspended  member uids who must not be rung (an admin's suspension a user cannot undo)

A document with a value of the wrong type is refused whole (TenantError, with what is wrong):
the adapter logs it once and skips it, every other tenant keeps ringing. A number that does not
parse as a phone number is kept out and reported, never matched by accident.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from functions.core.numbers import e164
from functions.core.relays import RelayConfigError, RelaySpec, relay_from_url

TENANTS = "pbx_tenants"
SECRET_VERSION_PREFIX = "projects/"


class TenantError(ValueError):
    """A pbx_tenants document that cannot be used as it is."""


@dataclass(frozen=True, slots=True)
class Pbx:
    """One PBX a tenant's calls come from: a relay endpoint and amiws' server_id behind it."""

    relay: RelaySpec  # how to connect; credentials inline (local runs) or via auth_secret
    server_id: int = 1
    auth_secret: str = ""  # a Secret Manager version name holding "id:password"

    @property
    def endpoint(self) -> str:
        return self.relay.endpoint


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    name: str = ""
    active: bool = True
    pbx: tuple[Pbx, ...] = ()
    numbers: frozenset[str] = frozenset()  # E.164
    members: frozenset[str] = frozenset()
    suspended: frozenset[str] = frozenset()
    bad_numbers: tuple[str, ...] = ()  # as typed; reported, never matched


def _strings(doc: Mapping[str, Any], key: str, *, required: bool = False) -> list[str]:
    value = doc.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TenantError(f"{key} must be a list of strings")
    return [v.strip() for v in value if v.strip()]


def _server_id(value: Any) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TenantError("pbx serverId must be an integer")
    if isinstance(value, float) and not value.is_integer():
        raise TenantError("pbx serverId must be an integer")
    if isinstance(value, str) and not value.strip().isdigit():
        raise TenantError("pbx serverId must be an integer")
    server_id = int(value)
    if server_id < 0:
        raise TenantError("pbx serverId must not be negative")
    return server_id


def _optional_text(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TenantError(f"pbx {key} must be a string")
    return value.strip()


def parse_pbx(entry: Any) -> Pbx:
    if not isinstance(entry, Mapping):
        raise TenantError("each pbx entry must be a map")
    relay = entry.get("relay")
    if not isinstance(relay, str) or not relay.strip().startswith(("ws://", "wss://")):
        raise TenantError("pbx relay must be a ws:// or wss:// URL")
    auth_id = _optional_text(entry, "authId")
    auth_password = _optional_text(entry, "authPassword")
    auth_secret = _optional_text(entry, "authSecret")
    if auth_secret and auth_password:
        raise TenantError("pbx has both authPassword and authSecret")
    if auth_secret and not auth_secret.startswith(SECRET_VERSION_PREFIX):
        raise TenantError("pbx authSecret must be a Secret Manager version name (projects/...)")
    try:
        spec = relay_from_url(relay, auth_id=auth_id, auth_password=auth_password)
    except RelayConfigError as exc:
        raise TenantError(f"pbx relay: {exc}") from None
    return Pbx(spec, _server_id(entry.get("serverId")), auth_secret)


def parse_tenant(tenant_id: str, doc: Mapping[str, Any], region: str) -> Tenant:
    """The tenant in a pbx_tenants document; TenantError when a field has the wrong type."""
    name = doc.get("name", "")
    if not isinstance(name, str):
        raise TenantError("name must be a string")
    active = doc.get("active", True)
    if not isinstance(active, bool):
        raise TenantError("active must be true or false")
    pbx = doc.get("pbx", [])
    if not isinstance(pbx, list):
        raise TenantError("pbx must be a list of maps")
    numbers: set[str] = set()
    bad: list[str] = []
    for typed in _strings(doc, "numbers"):
        normalized = e164(typed, region)
        if normalized is None:
            bad.append(typed)
        else:
            numbers.add(normalized)
    return Tenant(
        tenant_id=tenant_id,
        name=name,
        active=active,
        pbx=tuple(parse_pbx(entry) for entry in pbx),
        numbers=frozenset(numbers),
        members=frozenset(_strings(doc, "members")),
        suspended=frozenset(_strings(doc, "suspended")),
        bad_numbers=tuple(bad),
    )


@dataclass(frozen=True, slots=True)
class Candidates:
    """The members who may be rung for a call, and why others of the matching tenants may not."""

    users: frozenset[str] = frozenset()
    tenants: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (user or tenant id, reason)


@dataclass(frozen=True)
class TenantIndex:
    """Every usable tenant, indexed by the PBX its calls come from."""

    tenants: Mapping[str, Tenant] = field(default_factory=dict)
    by_pbx: Mapping[tuple[str, int], tuple[Tenant, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, tenants: Iterable[Tenant]) -> TenantIndex:
        by_id = {t.tenant_id: t for t in sorted(tenants, key=lambda t: t.tenant_id)}
        by_pbx: dict[tuple[str, int], list[Tenant]] = {}
        for tenant in by_id.values():
            for pbx in tenant.pbx:
                listed = by_pbx.setdefault((pbx.endpoint, pbx.server_id), [])
                if tenant not in listed:
                    listed.append(tenant)
        return cls(by_id, {key: tuple(value) for key, value in by_pbx.items()})

    def candidates(self, endpoint: str, server_id: int, number: str) -> Candidates:
        """Who may be rung for a call from (endpoint, server_id) to `number` (E.164): members,
        not suspended, of an active tenant that lists both that PBX and that number."""
        users: set[str] = set()
        tenants: list[str] = []
        skipped: list[tuple[str, str]] = []
        for tenant in self.by_pbx.get((endpoint, server_id), ()):
            if number not in tenant.numbers:
                continue
            if not tenant.active:
                skipped.append((tenant.tenant_id, "tenant_inactive"))
                continue
            tenants.append(tenant.tenant_id)
            users |= tenant.members - tenant.suspended
            skipped += [(uid, "suspended_by_admin") for uid in sorted(tenant.suspended)]
        return Candidates(frozenset(users), tuple(tenants), tuple(skipped))

    def relays(self) -> dict[str, Pbx]:
        """One PBX entry per relay endpoint to connect to: when tenants disagree on how to reach
        one endpoint, the lowest tenant id's entry wins (every instance picks the same)."""
        chosen: dict[str, Pbx] = {}
        for tenant in self.tenants.values():  # sorted by id
            for pbx in tenant.pbx:
                chosen.setdefault(pbx.endpoint, pbx)
        return chosen

    def disagreements(self) -> list[str]:
        """Endpoints named with different connection settings by different entries."""
        seen: dict[str, tuple[RelaySpec, str]] = {}
        differ: set[str] = set()
        for tenant in self.tenants.values():
            for pbx in tenant.pbx:
                how = (pbx.relay, pbx.auth_secret)
                if seen.setdefault(pbx.endpoint, how) != how:
                    differ.add(pbx.endpoint)
        return sorted(differ)
