"""The app's own call endpoints (cancelIncomingCallNotification, sendIncomingCallNotification)
as decisions on plain data. Pure: functions.app_endpoints reads the ledger and history, verifies
the ID token and sends; this says what a request is, whether it may act, and on what.

Both endpoints act only on calls this backend saw ring: the delivery ledger's record of the call
(`push_dedupe`, functions.core.ledger) keeps the ringing event and which user's devices got the
incoming push. A request names a call by its `linkedid`, which several PBXs may use: the record
the request matches is chosen here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from functions.core import ledger
from functions.core.call_event import CallEvent
from functions.core.numbers import same_as_given

# Why a user stopped the call on one device; the app sends "answered" or "rejected" (and names
# "timeout" in its documentation). Anything else is refused rather than pushed to devices.
CANCEL_ACTIONS = ("answered", "rejected", "timeout")
DEFAULT_ACTION = "answered"
MAX_TEXT = 256  # longer identifiers are not the app's: refused before any lookup
RING_REQUIRED = ("callerNumber", "receiverNumber", "linkedid")


class Refused(Exception):
    """A request this backend will not act on. `code` is a Firebase callable status name
    (lower-case, as firebase-functions spells them); `reason` a stable label for the logs."""

    def __init__(self, code: str, message: str, reason: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CancelRequest:
    linkedid: str
    user_id: str
    action: str


@dataclass(frozen=True, slots=True)
class RingRequest:
    caller_number: str
    receiver_number: str
    linkedid: str
    caller_name: str = ""
    channel: str = ""
    call_type: str = "external"


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        return None
    return value.strip()


def parse_cancel(data: Any) -> CancelRequest:
    """The callable's `data`: {linkedid, userId, action?}."""
    if not isinstance(data, Mapping):
        raise Refused("invalid-argument", "data must be an object", "bad_request")
    linkedid, user_id = _text(data.get("linkedid")), _text(data.get("userId"))
    if linkedid is None or user_id is None:
        raise Refused("invalid-argument", "linkedid and userId are required", "bad_request")
    action = data.get("action", DEFAULT_ACTION)
    if action is None:
        action = DEFAULT_ACTION
    if action not in CANCEL_ACTIONS:
        raise Refused(
            "invalid-argument", f"action must be one of {', '.join(CANCEL_ACTIONS)}", "bad_action"
        )
    return CancelRequest(linkedid, user_id, action)


def missing_ring_fields(body: Any) -> list[str]:
    if not isinstance(body, Mapping):
        return list(RING_REQUIRED)
    return [name for name in RING_REQUIRED if _text(body.get(name)) is None]


def parse_ring(body: Any) -> RingRequest:
    """The app's sendIncomingCallNotification body (callerNumber, callerName, receiverNumber,
    linkedid, channel, callType). Refused("invalid-argument") names no field: the caller
    lists them with missing_ring_fields."""
    if missing_ring_fields(body):
        raise Refused("invalid-argument", "Missing required parameters", "bad_request")

    def optional(name: str) -> str:
        value = body.get(name)
        return value if isinstance(value, str) and len(value) <= MAX_TEXT else ""

    return RingRequest(
        caller_number=str(_text(body["callerNumber"])),
        receiver_number=str(_text(body["receiverNumber"])),
        linkedid=str(_text(body["linkedid"])),
        caller_name=optional("callerName"),
        channel=optional("channel"),
        call_type=optional("callType") or "external",
    )


def check_caller(uid: str | None, request: CancelRequest) -> None:
    """Only the signed-in user may stop their own call."""
    if uid is None:
        raise Refused("unauthenticated", "a Firebase ID token is required", "no_token")
    if uid != request.user_id:
        raise Refused("permission-denied", "userId is not the signed-in user", "other_uid")


def call_of_user(
    calls: Sequence[tuple[CallEvent, Mapping[str, Any]]], user_id: str
) -> tuple[CallEvent, Mapping[str, Any]]:
    """The call (of those with the linkedid) on which the user's devices were rung; the latest
    when a linkedid was reused. Refused("not-found") when the user was rung for none: an
    unknown linkedid and someone else's call are told apart only in the logs."""
    rung = [(event, record) for event, record in calls if ledger.rung_devices_of(record, user_id)]
    if not rung:
        reason = "user_not_rung" if calls else "unknown_call"
        raise Refused("not-found", "no call of this user with this linkedid", reason)
    return max(rung, key=lambda item: item[0].detected_at)


def call_to_ring(
    calls: Sequence[tuple[CallEvent, Mapping[str, Any]]], request: RingRequest, region: str
) -> CallEvent:
    """The ringing call the request describes: same linkedid, dialled number and caller number
    as the PBX gave them to this backend, and not over. Refused("not-found") otherwise."""
    if not calls:
        raise Refused("not-found", "Call not found", "unknown_call")
    matching = [
        (event, record)
        for event, record in calls
        if same_as_given(request.receiver_number, event.dialled_number, region)
        and same_as_given(request.caller_number, event.caller_number, region)
    ]
    if not matching:
        raise Refused("not-found", "Call not found", "call_does_not_match")
    ringing = [(event, record) for event, record in matching if not record.get("over")]
    if not ringing:
        raise Refused("not-found", "Call not found", "call_over")
    return max(ringing, key=lambda item: item[0].detected_at)[0]


def device_of_caller(
    devices: Sequence[ledger.DeviceRef], instance_token: str | None
) -> ledger.DeviceRef | None:
    """The device that made the request, when the callable protocol named it
    (Firebase-Instance-ID-Token is the FCM token of the calling app instance)."""
    if not instance_token:
        return None
    return next((d for d in devices if d.token == instance_token), None)


def others_still_ringing(record: Mapping[str, Any], user_id: str) -> bool:
    """Whether any other user's device still rings for this call (sent, not cancelled)."""
    if record.get("over"):
        return False
    return any(d.user_id != user_id for d in ledger.plan_cancel(record))


def history_marks_cancelled(
    doc_id: str, doc: Mapping[str, Any], linkedid: str, user_id: str, *, shared_closes: bool
) -> bool:
    """Whether a user's cancel marks this `call_history` document cancelled. Only the user's own
    documents; the call's own document (`call_history/{linkedid}`) is watched by every rung
    user's incoming screen, so it is marked only when nobody else is still ringing
    (`shared_closes`): a colleague's confirm does not stop anyone else's phone."""
    if doc.get("userId") != user_id or doc.get("cancelled") is True:
        return False
    shared = doc_id == linkedid.replace("/", "_")
    return shared_closes or not shared
