"""Who gets rung for a call, from plain Firestore documents. Pure: adapters fetch, this decides.

A user is rung when one of their `my_extensions` has an `accountCode` equal (normalized) to the
dialled number, they belong to the PBX the call came from, they are not suspended
(`isActive == false`), not listening to the relay themselves (`dcmiwsEnabled == true`) and have
not turned call pushes off (`pushEnabled == false`). Their devices are the `fcm_tokens` with a
real token that are approved and active.

Who belongs to a PBX: in directory mode (the default) the members of a tenant that lists the PBX
and the number (functions.core.tenancy; the caller passes only those users' documents here, and
`allowed_users`); the user's own relay fields are then ignored. In user-documents mode, the users
whose own relay endpoint and `amiServerId` are that PBX.

Documents edited by hand can hold anything: a value of the wrong type never raises here, it
becomes a `Skip` (or a `Problem` for a device) with a reason the notifier logs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from functions.core.numbers import same_number
from functions.core.relays import RelayConfigError, relay_from_user, server_id_of_user

Doc = Mapping[str, Any]
WEB_DUMMY_PREFIX = "web_dummy_token"


@dataclass(frozen=True, slots=True)
class Device:
    doc_id: str
    token: str
    platform: str = ""
    device_id: str = ""


@dataclass(frozen=True, slots=True)
class Recipient:
    user_id: str
    extension: str
    company_name: str = ""
    external_cid_name: str = ""
    external_cid_number: str = ""
    forward_enabled: bool = False
    forward_destination: str = ""
    devices: tuple[Device, ...] = ()


@dataclass(frozen=True, slots=True)
class Skip:
    """A user or document that does not get this call, and why (a stable label)."""

    subject: str  # user id or document id
    reason: str


@dataclass(slots=True)
class Selection:
    recipients: list[Recipient] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _is_false(value: Any) -> bool:
    """An explicit "off": False, or a string an admin typed for it."""
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def matching_extensions(
    extensions: Iterable[tuple[str, Doc]],
    dialled: str,
    region: str,
    selection: Selection,
    allowed_users: frozenset[str] | None = None,
) -> dict[str, Doc]:
    """The first matching extension document per user (by document id, for a stable choice);
    with `allowed_users`, only theirs (a tenant's members)."""
    chosen: dict[str, Doc] = {}
    for doc_id, doc in sorted(extensions, key=lambda item: item[0]):
        account_code, user_id = doc.get("accountCode"), doc.get("userId")
        if not isinstance(account_code, str) or not isinstance(user_id, str) or not user_id:
            selection.skipped.append(Skip(doc_id, "bad_extension_document"))
            continue
        if allowed_users is not None and user_id not in allowed_users:
            continue
        if same_number(account_code, dialled, region):
            chosen.setdefault(user_id, doc)
    return chosen


def user_skip_reason(
    user: Doc | None,
    settings: Doc | None,
    relay: str,
    server_id: int,
    *,
    check_relay: bool = True,
    ring_dcmiws: bool = False,
) -> str:
    """Why a user who owns the number is not rung for a call from (relay, server_id), or "".
    `check_relay=False` (directory mode): the directory already said the user belongs there.
    `ring_dcmiws`: users who listen to the relay in the app are rung too (the app's
    sendIncomingCallNotification, asked by the device that holds the relay connection)."""
    if user is None:
        return "no_user_document"
    if not check_relay:
        return _gate_reason(user, settings, ring_dcmiws)
    try:
        spec = relay_from_user(user)
        user_server = server_id_of_user(user)
    except RelayConfigError:
        return "bad_relay_fields"
    if spec is None:
        return "no_relay_configured"
    if spec.endpoint != relay or user_server != server_id:
        return "other_pbx"
    return _gate_reason(user, settings, ring_dcmiws)


def _gate_reason(user: Doc, settings: Doc | None, ring_dcmiws: bool) -> str:
    """The app's own gates, which a user (or the app) sets."""
    if _is_false(user.get("isActive")):
        return "suspended"
    if not ring_dcmiws and _is_true(user.get("dcmiwsEnabled")):
        return "dcmiws_enabled"
    if settings is not None and _is_false(settings.get("pushEnabled")):
        return "push_disabled"
    return ""


def usable_devices(tokens: Iterable[tuple[str, Doc]], selection: Selection) -> list[Device]:
    seen: set[str] = set()
    devices: list[Device] = []
    for doc_id, doc in sorted(tokens, key=lambda item: item[0]):
        token = doc.get("fcmToken")
        if not isinstance(token, str) or not token.strip():
            selection.skipped.append(Skip(doc_id, "bad_token_document"))
            continue
        if token.startswith(WEB_DUMMY_PREFIX):
            selection.skipped.append(Skip(doc_id, "web_dummy_token"))
            continue
        if _is_false(doc.get("isApproved")):
            selection.skipped.append(Skip(doc_id, "device_not_approved"))
            continue
        if _is_false(doc.get("isActive")):
            selection.skipped.append(Skip(doc_id, "device_inactive"))
            continue
        if token in seen:  # one device registered twice must not ring twice
            continue
        seen.add(token)
        devices.append(Device(doc_id, token, _str(doc.get("platform")), _str(doc.get("deviceId"))))
    return devices


def build_recipient(
    user_id: str, user: Doc, extension: Doc, forward: Doc | None, devices: list[Device]
) -> Recipient:
    ext = _str(extension.get("extension"))
    forward = forward or {}
    return Recipient(
        user_id=user_id,
        extension=ext,
        company_name=_str(user.get("companyName")),
        external_cid_name=_str(extension.get("externalCidName")),
        external_cid_number=_str(extension.get("externalCidNumber")),
        forward_enabled=_is_true(forward.get("isEnabled")),
        forward_destination=_str(forward.get("destinationNumber")),
        devices=tuple(devices),
    )


def forward_doc_id(user_id: str, extension: str) -> str:
    return f"{user_id}_{extension}"


def select_recipients(
    matched: Mapping[str, Doc],
    users: Mapping[str, Doc | None],
    settings: Mapping[str, Doc | None],
    forwards: Mapping[str, Doc | None],
    tokens_by_user: Mapping[str, list[tuple[str, Doc]]],
    *,
    relay: str,
    server_id: int,
    selection: Selection,
    check_relay: bool = True,
    ring_dcmiws: bool = False,
) -> Selection:
    """Apply the rules to everything fetched for the users whose extension matched."""
    for user_id, extension in matched.items():
        user = users.get(user_id)
        reason = user_skip_reason(
            user,
            settings.get(user_id),
            relay,
            server_id,
            check_relay=check_relay,
            ring_dcmiws=ring_dcmiws,
        )
        if reason:
            selection.skipped.append(Skip(user_id, reason))
            continue
        assert user is not None  # user_skip_reason returns a reason for a missing user
        devices = usable_devices(tokens_by_user.get(user_id, []), selection)
        if not devices:
            selection.skipped.append(Skip(user_id, "no_devices"))
            continue
        forward = forwards.get(forward_doc_id(user_id, _str(extension.get("extension"))))
        selection.recipients.append(build_recipient(user_id, user, extension, forward, devices))
    return selection
