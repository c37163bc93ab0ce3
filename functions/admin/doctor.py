"""The doctor: which documents stop a phone from ringing (errors) or may surprise an admin
(warnings), each with the path of the document to fix.

`diagnose` is pure apart from `resolve` (relay host names, injected): it takes plain documents
and applies the product's own rules (functions.core: tenancy, numbers, recipients,
address_policy, relay_candidates), never a copy of them. `run_doctor` reads Firestore first and,
with `live`, also tries each relay's upgrade with its credentials (functions.admin.live).

"error" = some phone will not ring because of it (or, for one number in two tenants, rings
another company's members); "warning" = worth knowing, nothing is broken by it alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from functions.adapters.relay_access import parse_access
from functions.admin.documents import (
    EXTENSIONS,
    RELAY_ACCESS,
    SETTINGS,
    TENANTS,
    TOKENS,
    USERS,
    Documents,
)
from functions.connector.adapters.relay_status import status_doc_id
from functions.core.address_policy import UNRESOLVABLE, Refusal, first_refusal
from functions.core.numbers import e164
from functions.core.recipients import (
    WEB_DUMMY_PREFIX,
    Selection,
    usable_devices,
    user_skip_reason,
)
from functions.core.relay_candidates import RelayCandidates, relay_candidates
from functions.core.relays import (
    RelayConfigError,
    RelaySpec,
    relay_from_url,
    relay_from_user,
    server_id_of_user,
)
from functions.core.tenancy import Tenant, TenantError, TenantIndex, parse_tenant
from functions.settings import Settings

ERROR, WARNING = "error", "warning"
Resolve = Callable[[str, int], Sequence[str]]


@dataclass(frozen=True)
class Problem:
    path: str  # "<collection>/<doc id>" (or "PBX_RELAYS" for the environment's relays)
    severity: str  # "error" | "warning"
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {
            "path": self.path,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
        }


def _default_resolve(host: str, port: int) -> Sequence[str]:
    from functions.admin.live import system_resolve

    return system_resolve(host, port)


def diagnose(
    documents: Documents, settings: Settings, *, resolve: Resolve = _default_resolve
) -> list[Problem]:
    """Every problem in these documents under these settings (TENANCY, RELAY_ALLOWED_NETWORKS,
    DEFAULT_REGION, PBX_RELAYS), errors first, then by path."""
    checker = _Checker(documents, settings, resolve)
    checker.run()
    return ordered(checker.problems)


def run_doctor(db: Any, settings: Settings, *, live: bool = False) -> list[Problem]:
    """Read the collections the doctor judges from Firestore (`db`, a firestore.Client), then
    diagnose; with `live`, also each relay's answer to an upgrade with its credentials."""
    from functions.admin.firestore_reader import read_documents

    documents = read_documents(db)
    problems = diagnose(documents, settings)
    if live:
        from functions.admin.live_checks import live_problems

        problems = ordered(problems + live_problems(documents, settings))
    return problems


def ordered(problems: Iterable[Problem]) -> list[Problem]:
    """Errors first, then by path; one finding reached two ways is listed once."""
    order = {ERROR: 0, WARNING: 1}
    unique = dict.fromkeys(problems)
    return sorted(unique, key=lambda p: (order.get(p.severity, 2), p.path, p.code, p.message))


def exit_code(problems: Iterable[Problem]) -> int:
    """0 when nothing stops a phone from ringing, 1 when something does."""
    return 1 if any(p.severity == ERROR for p in problems) else 0


def _path(collection: str, doc_id: str) -> str:
    return f"{collection}/{doc_id}"


class _Checker:
    def __init__(self, documents: Documents, settings: Settings, resolve: Resolve) -> None:
        self.docs = documents
        self.settings = settings
        self.region = settings.default_region
        self.resolve = resolve
        self.problems: list[Problem] = []
        self._refusals: dict[str, Refusal | None] = {}

    def add(self, path: str, severity: str, code: str, message: str) -> None:
        self.problems.append(Problem(path, severity, code, message))

    def run(self) -> None:
        self.check_extensions()
        self.check_tokens()
        self.check_settings_types()
        if self.settings.tenancy == "directory":
            self.check_directory()
        else:
            self.check_user_documents()

    # the relay address policy, as the connector applies it

    def refusal(self, spec: RelaySpec) -> Refusal | None:
        if spec.endpoint not in self._refusals:
            try:
                addresses = self.resolve(spec.host, spec.port)
            except (OSError, ValueError, TimeoutError) as exc:
                self._refusals[spec.endpoint] = Refusal(UNRESOLVABLE, type(exc).__name__)
            else:
                allowed = self.settings.relay_allowed_networks
                self._refusals[spec.endpoint] = first_refusal(addresses, allowed)
        return self._refusals[spec.endpoint]

    def refusal_message(self, endpoint: str, refused: Refusal) -> str:
        detail = f" ({refused.detail})" if refused.detail else ""
        return (
            f"relay {endpoint} is refused by the address policy: {refused.reason}{detail}; the "
            "connector will not connect to it (RELAY_ALLOWED_NETWORKS can allow a private range)"
        )

    # the app's own documents

    def check_extensions(self) -> None:
        for doc_id, doc in sorted(self.docs.my_extensions.items()):
            path = _path(EXTENSIONS, doc_id)
            code, uid = doc.get("accountCode"), doc.get("userId")
            if not isinstance(code, str) or not isinstance(uid, str) or not uid:
                self.add(
                    path,
                    ERROR,
                    "wrong_type",
                    "accountCode and userId must be strings; this claim never rings "
                    f"(accountCode {type(code).__name__}, userId {type(uid).__name__})",
                )
                continue
            if e164(code, self.region) is None:
                self.add(
                    path,
                    ERROR,
                    "number_not_normalized",
                    f"accountCode {code!r} is not a phone number (region {self.region}): "
                    "it never matches a call",
                )
            if uid not in self.docs.users:
                self.add(
                    path, WARNING, "extension_without_user", f"userId {uid} has no users document"
                )

    def check_tokens(self) -> None:
        by_token: dict[str, list[str]] = defaultdict(list)
        for doc_id, doc in sorted(self.docs.fcm_tokens.items()):
            path = _path(TOKENS, doc_id)
            token, uid = doc.get("fcmToken"), doc.get("userId")
            if not isinstance(token, str) or not token.strip() or not isinstance(uid, str):
                self.add(
                    path,
                    ERROR,
                    "wrong_type",
                    "fcmToken and userId must be non-empty strings; this device never rings",
                )
                continue
            if token.startswith(WEB_DUMMY_PREFIX):
                self.add(
                    path,
                    WARNING,
                    "dummy_token",
                    "a web device without a real token (web_dummy_token_*): it is never pushed",
                )
                continue
            for flag in ("isActive", "isApproved"):
                if doc.get(flag) is not None and not isinstance(doc.get(flag), bool):
                    self.add(path, WARNING, "wrong_type", f"{flag} should be true or false")
            by_token[token].append(doc_id)
        for doc_ids in by_token.values():
            for doc_id in doc_ids[1:]:
                owners = sorted({str(self.docs.fcm_tokens[d].get("userId")) for d in doc_ids})
                self.add(
                    _path(TOKENS, doc_id),
                    WARNING,
                    "duplicate_token",
                    f"the same device token as {_path(TOKENS, doc_ids[0])} (users "
                    f"{', '.join(owners)}): it is pushed once per user it is registered for",
                )

    def check_settings_types(self) -> None:
        for uid, doc in sorted(self.docs.user_notification_settings.items()):
            value = doc.get("pushEnabled")
            if value is not None and not isinstance(value, bool):
                self.add(
                    _path(SETTINGS, uid),
                    WARNING,
                    "wrong_type",
                    f"pushEnabled should be true or false, not {type(value).__name__}",
                )
        for uid, doc in sorted(self.docs.users.items()):
            for flag in ("isActive", "dcmiwsEnabled"):
                value = doc.get(flag)
                if value is not None and not isinstance(value, bool):
                    self.add(
                        _path(USERS, uid),
                        WARNING,
                        "wrong_type",
                        f"{flag} should be true or false, not {type(value).__name__}",
                    )

    def check_can_ring(self, uid: str, *, member_of: str = "") -> None:
        """A user who should ring: the app's own gates, then at least one deliverable device."""
        user = self.docs.users.get(uid)
        where = f" (member of {_path(TENANTS, member_of)})" if member_of else ""
        if user is None:
            self.add(
                _path(TENANTS, member_of) if member_of else _path(USERS, uid),
                ERROR,
                "member_without_user",
                f"member {uid} has no users document: never rung",
            )
            return
        settings_doc = self.docs.user_notification_settings.get(uid)
        reason = user_skip_reason(user, settings_doc, "", 0, check_relay=False)
        if reason == "suspended":
            self.add(_path(USERS, uid), WARNING, "user_inactive", f"isActive is false{where}")
            return
        if reason == "dcmiws_enabled":
            self.add(
                _path(USERS, uid),
                WARNING,
                "dcmiws_enabled",
                f"dcmiwsEnabled: the app listens to the relay itself, no call pushes{where}",
            )
            return
        if reason == "push_disabled":
            self.add(
                _path(SETTINGS, uid),
                WARNING,
                "push_disabled",
                f"pushEnabled is false: no call pushes{where}",
            )
            return
        if not usable_devices(self.docs.tokens_of(uid), Selection()):
            self.add(
                _path(USERS, uid),
                ERROR,
                "no_deliverable_device",
                "no fcm_tokens device that can be pushed (none, or only web dummies, "
                f"unapproved or logged-out devices){where}",
            )

    def claimed_numbers(self, uid: str) -> set[str]:
        claimed: set[str] = set()
        for _, ext in self.docs.extensions_of(uid):
            code = ext.get("accountCode")
            normalized = e164(code, self.region) if isinstance(code, str) else None
            if normalized is not None:
                claimed.add(normalized)
        return claimed

    # directory mode

    def check_directory(self) -> None:
        tenants: list[Tenant] = []
        for tenant_id, doc in sorted(self.docs.pbx_tenants.items()):
            path = _path(TENANTS, tenant_id)
            try:
                tenant = parse_tenant(tenant_id, doc, self.region)
            except TenantError as exc:
                self.add(
                    path, ERROR, "wrong_type", f"{exc}: the whole tenant is skipped, nobody rings"
                )
                continue
            tenants.append(tenant)
            for typed in tenant.bad_numbers:
                self.add(
                    path,
                    ERROR,
                    "number_not_normalized",
                    f"number {typed!r} is not a phone number (region {self.region}): "
                    "left out, calls to it ring nobody",
                )
            if not tenant.active:
                self.add(path, WARNING, "tenant_inactive", "active is false: nobody in it rings")
            if not tenant.pbx:
                self.add(path, ERROR, "tenant_without_pbx", "no pbx entry: its calls never ring")
        index = TenantIndex.build(tenants)
        self.check_number_conflicts(index)
        self.check_tenant_relays(index)
        self.check_members(index)

    def check_number_conflicts(self, index: TenantIndex) -> None:
        for (endpoint, server_id), listed in sorted(index.by_pbx.items()):
            owners: dict[str, list[str]] = defaultdict(list)
            for tenant in listed:
                for number in tenant.numbers:
                    owners[number].append(tenant.tenant_id)
            for number, ids in sorted(owners.items()):
                if len(ids) < 2:
                    continue
                for tenant_id in ids:
                    others = ", ".join(_path(TENANTS, t) for t in ids if t != tenant_id)
                    self.add(
                        _path(TENANTS, tenant_id),
                        ERROR,
                        "number_in_two_tenants",
                        f"{number} on PBX {endpoint} server {server_id} is also listed by "
                        f"{others}: a call to it rings both tenants' members",
                    )

    def check_tenant_relays(self, index: TenantIndex) -> None:
        naming: dict[str, list[str]] = defaultdict(list)
        for tenant in index.tenants.values():
            for pbx in tenant.pbx:
                if tenant.tenant_id not in naming[pbx.endpoint]:
                    naming[pbx.endpoint].append(tenant.tenant_id)
        chosen = index.relays()
        for endpoint in index.disagreements():
            winner = chosen[endpoint]
            for tenant_id in naming[endpoint]:
                entries = [p for p in index.tenants[tenant_id].pbx if p.endpoint == endpoint]
                if any(
                    (p.relay, p.auth_secret) != (winner.relay, winner.auth_secret) for p in entries
                ):
                    self.add(
                        _path(TENANTS, tenant_id),
                        WARNING,
                        "relay_settings_disagree",
                        f"names relay {endpoint} with other connection settings (scheme, path or "
                        "credentials) than the lowest tenant id naming it; the connector uses "
                        "those, not these",
                    )
        for endpoint, pbx in sorted(chosen.items()):
            refused = self.refusal(pbx.relay)
            if refused is not None:
                for tenant_id in naming[endpoint]:
                    self.add(
                        _path(TENANTS, tenant_id),
                        ERROR,
                        "relay_not_allowed",
                        self.refusal_message(endpoint, refused),
                    )
        for url in self.settings.pbx_relays:
            try:
                spec = relay_from_url(url)
            except RelayConfigError as exc:
                self.add("PBX_RELAYS", ERROR, "wrong_type", f"a PBX_RELAYS entry: {exc}")
                continue
            refused = self.refusal(spec)
            if refused is not None:
                self.add(
                    "PBX_RELAYS",
                    ERROR,
                    "relay_not_allowed",
                    self.refusal_message(spec.endpoint, refused),
                )

    def check_members(self, index: TenantIndex) -> None:
        tenant_of: dict[str, list[Tenant]] = defaultdict(list)
        for tenant in index.tenants.values():
            for uid in sorted(tenant.members):
                tenant_of[uid].append(tenant)
            for uid in sorted(tenant.suspended - tenant.members):
                self.add(
                    _path(TENANTS, tenant.tenant_id),
                    WARNING,
                    "suspended_not_member",
                    f"suspended lists {uid}, who is not a member",
                )
        for tenant in index.tenants.values():
            path = _path(TENANTS, tenant.tenant_id)
            for uid in sorted(tenant.members):
                if uid in tenant.suspended:
                    self.add(path, WARNING, "member_suspended", f"member {uid} is suspended")
                    continue
                if not tenant.active:
                    continue
                self.check_can_ring(uid, member_of=tenant.tenant_id)
                if uid in self.docs.users and not self.claimed_numbers(uid) & tenant.numbers:
                    self.add(
                        _path(USERS, uid),
                        WARNING,
                        "member_claims_no_number",
                        f"no my_extensions of {uid} claims a number of {path}: never rung by it",
                    )
        # owners of a tenant's number who are not its members: never rung (by design; shown so
        # that an admin who forgot to add a colleague sees why)
        numbers: dict[str, list[str]] = defaultdict(list)
        for tenant in index.tenants.values():
            for number in tenant.numbers:
                numbers[number].append(tenant.tenant_id)
        for doc_id, ext in sorted(self.docs.my_extensions.items()):
            code, uid = ext.get("accountCode"), ext.get("userId")
            if not isinstance(code, str) or not isinstance(uid, str):
                continue
            normalized = e164(code, self.region)
            listing = numbers.get(normalized or "", [])
            if listing and not any(uid in index.tenants[t].members for t in listing):
                owners = ", ".join(_path(TENANTS, t) for t in listing)
                self.add(
                    _path(EXTENSIONS, doc_id),
                    WARNING,
                    "claim_by_non_member",
                    f"{uid} claims {normalized} of {owners} without being a member of it: "
                    "never rung for it",
                )

    # user-documents mode

    def check_user_documents(self) -> None:
        by_user: dict[str, RelaySpec] = {}
        for uid, user in sorted(self.docs.users.items()):
            try:
                spec = relay_from_user(user)
                server_id_of_user(user)
            except RelayConfigError as exc:
                self.add(
                    _path(USERS, uid),
                    ERROR,
                    "wrong_type",
                    f"relay fields unusable ({exc}): this user is never rung",
                )
                continue
            if spec is None:
                if self.docs.extensions_of(uid):
                    self.add(
                        _path(USERS, uid),
                        WARNING,
                        "no_relay_configured",
                        "claims numbers but names no relay: never rung",
                    )
                continue
            by_user[uid] = spec
        static = []
        for url in self.settings.pbx_relays:
            try:
                static.append(relay_from_url(url))
            except RelayConfigError as exc:
                self.add("PBX_RELAYS", ERROR, "wrong_type", f"a PBX_RELAYS entry: {exc}")
        for endpoint, relay in sorted(relay_candidates(static, by_user).items()):
            self.check_user_relay(endpoint, relay)
        for uid in sorted(by_user):
            if self.docs.extensions_of(uid):
                self.check_can_ring(uid)

    def check_user_relay(self, endpoint: str, relay: RelayCandidates) -> None:
        users = sorted(uid for cand in relay.candidates for uid in cand.users)
        refused = self.refusal(relay.spec)
        if refused is not None:
            for uid in users:
                self.add(
                    _path(USERS, uid),
                    ERROR,
                    "relay_not_allowed",
                    self.refusal_message(endpoint, refused),
                )
        if len(relay.candidates) > 1:
            first = relay.candidates[0]
            for cand in relay.candidates[1:]:
                differs = _differences(first.spec, cand.spec)
                for uid in cand.users:
                    self.add(
                        _path(USERS, uid),
                        WARNING,
                        "relay_settings_disagree",
                        f"names relay {endpoint} with other settings ({differs}) than "
                        f"{len(first.users)} other user(s); only the settings the relay accepts "
                        "ring",
                    )
        if not users:
            return
        doc_id = status_doc_id(endpoint)  # where the connector writes it (relay_access.py)
        access_path = _path(RELAY_ACCESS, doc_id)
        record = self.docs.relay_access.get(doc_id)
        if record is None:
            self.add(
                access_path,
                ERROR,
                "relay_not_recorded",
                f"no connector has recorded relay {endpoint} yet: nobody naming it rings",
            )
            return
        access = parse_access(dict(record))
        assert access is not None
        if access.open:
            self.add(
                access_path,
                WARNING,
                "relay_open",
                f"relay {endpoint} accepts an upgrade without credentials: no proof of who "
                "belongs to it, everyone naming it is rung",
            )
            return
        for uid in users:
            if uid in access.refused:
                self.add(
                    _path(USERS, uid),
                    ERROR,
                    "relay_credentials_refused",
                    f"relay {endpoint} refused this user's relay settings: not rung",
                )
            elif uid not in access.users:
                self.add(
                    _path(USERS, uid),
                    WARNING,
                    "relay_credentials_unproven",
                    f"relay {endpoint} has not judged this user's settings yet: not rung until "
                    "it accepts them",
                )


def _differences(a: RelaySpec, b: RelaySpec) -> str:
    """Which connection settings differ, never their values."""
    names = []
    if a.tls != b.tls:
        names.append("scheme")
    if a.path != b.path:
        names.append("path")
    if a.auth_id != b.auth_id:
        names.append("authId")
    if a.auth_password != b.auth_password:
        names.append("password")
    return ", ".join(names) or "none"
