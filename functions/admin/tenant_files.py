"""Declarative directory management: `pbx_tenants` documents as YAML files an admin keeps.

    id: demo-company            # the tenant id (the app's companyId)
    name: 데모상사
    active: true
    pbx:
      - {relay: "ws://relay.example:7099", serverId: 1, authId: ops, authPassword: "..."}
    numbers: ["070-4514-4801"]
    members: [demo-kim, demo-lee]
    suspended: []

A file holds one tenant, or several under `tenants:`. `show` prints a stored tenant in the same
shape with inline passwords replaced by `<redacted>`; `apply` keeps the stored password wherever
the file says `<redacted>`, so a shown file can be edited and applied back. Validation is the
product's own (parse_tenant) plus the doctor's rules on the directory as it would be. Pure: the
CLI reads and writes Firestore.
"""

from __future__ import annotations

import copy
import difflib
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from functions.admin.doctor import ERROR, Problem, Resolve, diagnose
from functions.admin.documents import TENANTS, Documents
from functions.core.numbers import e164
from functions.core.relay_candidates import relay_candidates
from functions.core.relays import RelayConfigError, RelaySpec, relay_from_user, server_id_of_user
from functions.core.tenancy import TenantError, parse_tenant
from functions.settings import Settings

REDACTED = "<redacted>"
FIELDS = ("name", "active", "pbx", "numbers", "members", "suspended")
# Problems on the tenant itself that refuse an apply: it would not be used as written, or it
# would take a number another tenant owns on the same PBX. Problems of its members (no device
# yet) are shown, not refused: members are often added before they install the app.
REFUSING = frozenset(
    {
        "wrong_type",
        "number_not_normalized",
        "relay_not_allowed",
        "number_in_two_tenants",
        "tenant_without_pbx",
    }
)


class TenantFileError(ValueError):
    """A tenant file that cannot be applied as it is."""


def redact(doc: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(doc))
    for entry in out.get("pbx") or []:
        if isinstance(entry, dict) and entry.get("authPassword"):
            entry["authPassword"] = REDACTED
    return out


PBX_FIELDS = ("relay", "serverId", "authId", "authPassword", "authSecret")


def _canonical_pbx(entry: Any) -> Any:
    """Firestore gives a map's keys in no set order: a stable one, so diffs show changes only."""
    if not isinstance(entry, dict):
        return entry
    ordered = {k: entry[k] for k in PBX_FIELDS if k in entry}
    ordered.update({k: entry[k] for k in sorted(entry) if k not in ordered})
    return ordered


def to_yaml(tenant_id: str, doc: Mapping[str, Any]) -> str:
    """A tenant as a file: `id` first, then the fields in their documented order."""
    shown = redact(doc)
    if isinstance(shown.get("pbx"), list):
        shown["pbx"] = [_canonical_pbx(entry) for entry in shown["pbx"]]
    ordered = {"id": tenant_id}
    ordered.update({k: shown[k] for k in FIELDS if k in shown})
    ordered.update({k: shown[k] for k in sorted(shown) if k not in ordered})
    return yaml.safe_dump(ordered, allow_unicode=True, sort_keys=False, default_flow_style=False)


def load_tenants(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(tenant id, document) per tenant in a file; TenantFileError when it is not one."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TenantFileError(f"not YAML: {exc}") from None
    items = data.get("tenants") if isinstance(data, dict) and "tenants" in data else [data]
    if not isinstance(items, list) or not items:
        raise TenantFileError("a tenant file holds one tenant or a `tenants:` list")
    out: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        if not isinstance(item, dict):
            raise TenantFileError("each tenant must be a mapping")
        tenant_id = item.get("id")
        if not isinstance(tenant_id, str) or not tenant_id.strip() or "/" in tenant_id:
            raise TenantFileError("each tenant needs an `id` (a document id, no '/')")
        unknown = sorted(set(item) - {"id", *FIELDS})
        if unknown:
            raise TenantFileError(f"{tenant_id}: unknown field(s) {', '.join(unknown)}")
        out.append((tenant_id.strip(), {k: item[k] for k in FIELDS if k in item}))
    return out


def restore_passwords(doc: dict[str, Any], current: Mapping[str, Any] | None) -> dict[str, Any]:
    """`<redacted>` in a file means "the password stored now" for that relay and server id."""
    stored: dict[tuple[Any, Any], Any] = {}
    for entry in (current or {}).get("pbx") or []:
        if isinstance(entry, dict):
            stored[(entry.get("relay"), entry.get("serverId", 1))] = entry.get("authPassword")
    out = copy.deepcopy(doc)
    for entry in out.get("pbx") or []:
        if isinstance(entry, dict) and entry.get("authPassword") == REDACTED:
            password = stored.get((entry.get("relay"), entry.get("serverId", 1)))
            if not password:
                raise TenantFileError(
                    f"pbx {entry.get('relay')}: authPassword is {REDACTED} but none is stored"
                )
            entry["authPassword"] = password
    return out


@dataclass
class ApplyPlan:
    tenant_id: str
    doc: dict[str, Any]  # what would be written (passwords restored)
    diff: str
    refused: list[Problem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # shown, not refused

    @property
    def unchanged(self) -> bool:
        return not self.diff

    @property
    def path(self) -> str:
        return f"{TENANTS}/{self.tenant_id}"


def plan_apply(
    documents: Documents,
    settings: Settings,
    tenant_id: str,
    doc: dict[str, Any],
    *,
    resolve: Resolve | None = None,
) -> ApplyPlan:
    current = documents.pbx_tenants.get(tenant_id)
    doc = restore_passwords(doc, current)
    before = to_yaml(tenant_id, current).splitlines(keepends=True) if current else []
    after = to_yaml(tenant_id, doc).splitlines(keepends=True)
    diff = "".join(difflib.unified_diff(before, after, f"firestore:{TENANTS}/{tenant_id}", "file"))
    plan = ApplyPlan(tenant_id, doc, diff)
    try:
        parse_tenant(tenant_id, doc, settings.default_region)
    except TenantError as exc:
        plan.refused.append(Problem(plan.path, ERROR, "wrong_type", str(exc)))
        return plan
    kwargs = {"resolve": resolve} if resolve is not None else {}
    was = set(diagnose(documents, settings, **kwargs))
    for problem in diagnose(documents.with_tenant(tenant_id, doc), settings, **kwargs):
        own = problem.path == plan.path
        if own and problem.severity == ERROR and problem.code in REFUSING:
            plan.refused.append(problem)
        elif own or problem not in was:
            plan.problems.append(problem)
    return plan


# tenant import --from-users


@dataclass
class Proposal:
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    conflicted: set[str] = field(default_factory=set)  # tenant ids named in a conflict
    notes: list[str] = field(default_factory=list)


def _pbx_entry(spec: RelaySpec, server_id: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"relay": spec.url, "serverId": server_id}
    if spec.auth_id:
        entry["authId"] = spec.auth_id
    if spec.auth_password:
        entry["authPassword"] = spec.auth_password
    return entry


def propose_from_users(
    documents: Documents, settings: Settings, company: str | None = None
) -> Proposal:
    """One tenant per `companyId` from today's user documents: its PBXs (the relay settings
    most of its users share, and their amiServerId), its numbers (normalized), its members.
    A PBX named by users of two companies is reported as a conflict, never merged."""
    region = settings.default_region
    proposal = Proposal()
    by_company: dict[str, list[str]] = defaultdict(list)
    for uid, user in sorted(documents.users.items()):
        cid = user.get("companyId")
        if isinstance(cid, str) and cid.strip():
            by_company[cid.strip()].append(uid)
        else:
            proposal.notes.append(f"users/{uid}: no companyId, left out")
    pbx_owners: dict[tuple[str, int], dict[str, int]] = defaultdict(Counter)
    for cid, uids in sorted(by_company.items()):
        specs: dict[str, RelaySpec] = {}
        servers: dict[str, set[int]] = defaultdict(set)
        for uid in uids:
            user = documents.users[uid]
            try:
                spec = relay_from_user(user)
                server_id = server_id_of_user(user)
            except RelayConfigError as exc:
                proposal.notes.append(f"users/{uid}: relay fields unusable ({exc}), no PBX taken")
                continue
            if spec is None:
                continue
            specs[uid] = spec
            servers[spec.endpoint].add(server_id)
            pbx_owners[(spec.endpoint, server_id)][cid] += 1
        pbx: list[dict[str, Any]] = []
        for endpoint, relay in sorted(relay_candidates((), specs).items()):
            if len(relay.candidates) > 1:
                others = sorted(u for c in relay.candidates[1:] for u in c.users)
                proposal.notes.append(
                    f"{cid}: users {', '.join(others)} name {endpoint} with other settings; "
                    "the settings most users share were taken"
                )
            for server_id in sorted(servers[endpoint]):
                pbx.append(_pbx_entry(relay.spec, server_id))
        numbers: set[str] = set()
        for uid in uids:
            for doc_id, ext in documents.extensions_of(uid):
                code = ext.get("accountCode")
                normalized = e164(code, region) if isinstance(code, str) else None
                if normalized is None:
                    proposal.notes.append(f"my_extensions/{doc_id}: {code!r} is not a number")
                else:
                    numbers.add(normalized)
        names = Counter(
            documents.users[u].get("companyName")
            for u in uids
            if isinstance(documents.users[u].get("companyName"), str)
        )
        proposal.tenants[cid] = {
            "name": names.most_common(1)[0][0] if names else cid,
            "active": True,
            "pbx": pbx,
            "numbers": sorted(numbers),
            "members": sorted(uids),
            "suspended": [],
        }
    for (endpoint, server_id), owners in sorted(pbx_owners.items()):
        if len(owners) > 1:
            named = ", ".join(
                f"{cid} ({n} user{'s' * (n > 1)})" for cid, n in sorted(owners.items())
            )
            proposal.conflicts.append(
                f"PBX {endpoint} server {server_id} is named by companies {named}: not merged; "
                "decide which company owns it and write that tenant with `tenant apply`"
            )
            proposal.conflicted.update(owners)
    if company is not None:
        proposal.tenants = {k: v for k, v in proposal.tenants.items() if k == company}
        keep = {company}
        proposal.conflicts = [c for c in proposal.conflicts if f" {company} (" in c]
        proposal.conflicted &= keep
    return proposal
