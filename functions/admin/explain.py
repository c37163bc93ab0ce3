"""`explain NUMBER --relay URL [--server-id N]`: who would be rung for a call from that PBX to
that number, and why every other owner of the number would not.

The answer for who rings is the notifier's own: the same FirestoreDirectory lookup the notifier
makes for a ringing event (functions.notifier.adapters.firestore_directory, with the PBX
directory or relay_access as TENANCY says, no cache). The notifier only reads the documents of
users who may ring; the owners it never looks at are found by reading every my_extensions
claiming the number (normalized), and each gets the rule that keeps it out.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from functions.adapters.tenant_directory import TenantDirectory
from functions.admin.documents import EXTENSIONS, SETTINGS, USERS
from functions.admin.firestore_reader import read_collection, read_document
from functions.core.call_event import CallEvent, Kind
from functions.core.numbers import e164
from functions.core.recipients import Selection, user_skip_reason
from functions.core.relays import RelayConfigError, RelaySpec, relay_from_url
from functions.core.tenancy import TenantIndex
from functions.notifier.adapters.firestore_directory import FirestoreDirectory
from functions.settings import Settings

DEVICE_REASONS = frozenset(
    {"web_dummy_token", "device_not_approved", "device_inactive", "bad_token_document"}
)

# why a user is not rung from a relay, before any of the app's own gates
RELAY_REASONS = frozenset(
    {"no_user_document", "bad_relay_fields", "no_relay_configured", "other_pbx"}
)


def parse_relay(text: str) -> RelaySpec:
    """`ws://host:port`, `wss://...` or a bare `host:port` (the relay's identity)."""
    text = text.strip()
    return relay_from_url(text if "://" in text else f"ws://{text}")


@dataclass
class Explanation:
    number: str
    normalized: str | None
    relay: str  # endpoint host:port
    server_id: int
    tenancy: str
    rings: list[dict[str, Any]] = field(default_factory=list)
    not_rung: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # reasons about the call, not a user
    skipped_devices: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "normalized": self.normalized,
            "relay": self.relay,
            "server_id": self.server_id,
            "tenancy": self.tenancy,
            "rings": self.rings,
            "not_rung": self.not_rung,
            "notes": self.notes,
            "skipped_devices": self.skipped_devices,
        }


def probe_event(number: str, relay: str, server_id: int, linkedid: str) -> CallEvent:
    now = time.time()
    return CallEvent(
        kind=Kind.RINGING,
        relay=relay,
        server_id=server_id,
        linkedid=linkedid,
        caller_number="",
        caller_name="",
        dialled_number=number,
        channel="",
        occurred_at=now,
        detected_at=now,
    )


def notifier_directory(
    db: Any, settings: Settings, pool: ThreadPoolExecutor
) -> tuple[FirestoreDirectory, TenantDirectory | None]:
    """The notifier's recipient lookup, wired as functions.notifier.app wires it (no caches)."""
    region = settings.default_region
    tenants = TenantDirectory(db, region, pool) if settings.tenancy == "directory" else None
    # without tenants (user-documents mode) it reads relay_access itself, uncached too
    directory = FirestoreDirectory(db, pool, region, cache_seconds=0.0, tenants=tenants)
    return directory, tenants


def explain(
    db: Any, settings: Settings, number: str, relay: str, server_id: int = 1
) -> Explanation:
    spec = parse_relay(relay)
    region = settings.default_region
    normalized = e164(number, region)
    answer = Explanation(number, normalized, spec.endpoint, server_id, settings.tenancy)
    event = probe_event(number, spec.endpoint, server_id, "admin-explain")
    extensions = read_collection(db, EXTENSIONS)  # first: an unreachable Firestore fails fast
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="explain") as pool:
        directory, tenants = notifier_directory(db, settings, pool)
        selection = directory.recipients_for(event)
        index = tenants.index() if tenants is not None else None
    owners = _owners(extensions, normalized, region)
    _from_selection(answer, selection, event, index, owners)
    _other_owners(answer, db, spec, index, owners)
    return answer


def _owners(extensions: dict[str, dict[str, Any]], normalized: str | None, region: str) -> set[str]:
    """Users with a my_extensions claiming the number (compared normalized)."""
    if normalized is None:
        return set()
    return {
        doc["userId"]
        for doc in extensions.values()
        if isinstance(doc.get("userId"), str)
        and isinstance(doc.get("accountCode"), str)
        and e164(doc["accountCode"], region) == normalized
    }


# tenant-level reasons: the notifier gives them for every member, owner of the number or not
TENANT_REASONS = frozenset({"suspended_by_admin", "tenant_inactive"})


def _from_selection(
    answer: Explanation,
    selection: Selection,
    event: CallEvent,
    index: TenantIndex | None,
    owners: set[str],
) -> None:
    for recipient in selection.recipients:
        answer.rings.append(
            {
                "user": recipient.user_id,
                "extension": recipient.extension,
                "devices": [d.doc_id for d in recipient.devices],
            }
        )
    seen = {r["user"] for r in answer.rings}
    for skip in selection.skipped:
        if skip.subject == event.call_key:
            answer.notes.append(skip.reason)
        elif skip.reason in DEVICE_REASONS:
            answer.skipped_devices.append({"device": skip.subject, "reason": skip.reason})
        elif skip.reason == "bad_extension_document":
            answer.notes.append(f"{EXTENSIONS}/{skip.subject}: bad_extension_document")
        elif index is not None and skip.subject in index.tenants:  # tenant_inactive
            for uid in sorted(index.tenants[skip.subject].members & owners):
                if uid not in seen:
                    seen.add(uid)
                    answer.not_rung.append({"user": uid, "reason": skip.reason})
        elif skip.reason in TENANT_REASONS and skip.subject not in owners:
            continue
        elif skip.subject not in seen:
            seen.add(skip.subject)
            answer.not_rung.append({"user": skip.subject, "reason": skip.reason})


def _other_owners(
    answer: Explanation, db: Any, spec: RelaySpec, index: TenantIndex | None, owners: set[str]
) -> None:
    """Owners of the number the notifier never looked at, each with the rule that keeps it out."""
    seen = {r["user"] for r in answer.rings} | {n["user"] for n in answer.not_rung}
    for uid in sorted(owners):
        if uid in seen:
            continue
        if index is not None:
            reason = _directory_reason(index, uid, spec.endpoint, answer.server_id, answer)
        else:
            reason = _user_documents_reason(db, uid, spec.endpoint, answer.server_id)
            if reason not in RELAY_REASONS:
                # names this relay, yet the notifier never read them: the relay's record
                # (relay_access) does not list them, or there is no record at all
                unrecorded = "relay_not_recorded" in answer.notes
                reason = "relay_not_recorded" if unrecorded else "not_recorded_for_relay"
        answer.not_rung.append({"user": uid, "reason": reason})


def _directory_reason(
    index: TenantIndex, uid: str, endpoint: str, server_id: int, answer: Explanation
) -> str:
    member_of = [t for t in index.tenants.values() if uid in t.members]
    here = index.by_pbx.get((endpoint, server_id), ())
    if any(t in here for t in member_of):
        return "number_not_in_tenant"  # a member of a tenant of this PBX that lacks the number
    if any(answer.normalized in t.numbers for t in member_of):
        return "tenant_on_other_pbx"
    return "not_a_member"


def _user_documents_reason(db: Any, uid: str, endpoint: str, server_id: int) -> str:
    user = read_document(db, USERS, uid)
    settings_doc = read_document(db, SETTINGS, uid)
    try:
        reason = user_skip_reason(user, settings_doc, endpoint, server_id)
    except RelayConfigError:
        reason = "bad_relay_fields"
    return reason
