"""The pushes the MakeCall app understands, as plain values (the FCM adapter turns them into
firebase-admin messages). Formats: README.md "Push payloads" and design.md.

- incoming: notification + data, high priority, lives only as long as the ring window;
- cancel: data only, closes the incoming screen;
- missed: a visible notification replacing the incoming one (same tag), without `call_type`
  so the app does not open the incoming screen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from functions.core.call_event import CallEvent, EndReason
from functions.core.clean_text import clean, clip
from functions.core.recipients import Device, Recipient

INCOMING_TITLE = "수신전화"
MISSED_TITLE = "부재중 전화"
INCOMING_CHANNEL = "incoming_call_channel"
MISSED_CHANNEL = "missed_call_channel"
FCM_PAYLOAD_LIMIT = 4096
_FIELD_LIMIT = 120  # characters kept of free-text fields (names), far below the 4 KB budget


@dataclass(frozen=True, slots=True)
class Push:
    kind: str  # incoming | cancel | missed
    token: str
    data: dict[str, str]
    title: str | None = None  # None: data-only message
    body: str | None = None
    ttl_seconds: int = 60
    collapse_key: str | None = None
    tag: str | None = None  # Android notification tag: a later push with it replaces this one
    channel_id: str | None = None
    apns_headers: dict[str, str] = field(default_factory=dict)
    apns_background: bool = False  # content-available, no alert
    device_doc_id: str = ""


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _clip(text: str) -> str:
    """Free text for a screen (names from carriers, company names from documents): without
    control or bidi characters, clipped on a character boundary."""
    return clip(clean(text), _FIELD_LIMIT)


def call_tag(event: CallEvent) -> str:
    """Per-call id for collapse key, notification tag and apns-collapse-id (<= 64 bytes)."""
    return f"call_{event.call_hash}"


def remaining_ring_seconds(event: CallEvent, now: float, ring_window: int) -> float:
    """Time left to ring, from when the connector saw the call (its clock is synced; the PBX's
    clock may not be)."""
    return ring_window - max(0.0, now - event.detected_at)


def incoming_push(
    event: CallEvent, recipient: Recipient, device: Device, *, now: float, ring_window: int
) -> Push:
    ttl = max(1, int(remaining_ring_seconds(event, now, ring_window)))
    caller_name = _clip(event.caller_name or event.caller_number)
    data = {
        "type": "incoming_call",
        "caller_number": event.caller_number,
        "caller_name": caller_name,
        "receiver_number": event.dialled_number,
        "linkedid": event.linkedid,
        "channel": event.channel,
        "call_type": "external",
        "timestamp": iso(event.occurred_at),
        "user_id": recipient.user_id,
        "my_extension": recipient.extension,
        "my_company_name": _clip(recipient.company_name),
        "my_external_cid_name": _clip(recipient.external_cid_name),
        "my_external_cid_number": recipient.external_cid_number,
        "is_call_forward_enabled": "true" if recipient.forward_enabled else "false",
        "call_forward_destination": recipient.forward_destination,
    }
    tag = call_tag(event)
    return Push(
        kind="incoming",
        token=device.token,
        data=data,
        title=INCOMING_TITLE,
        body=caller_name or "발신번호 없음",
        ttl_seconds=ttl,
        collapse_key=tag,
        tag=tag,
        channel_id=INCOMING_CHANNEL,
        apns_headers={
            "apns-priority": "10",
            "apns-expiration": str(int(now + ttl)),
            "apns-collapse-id": tag,
        },
        device_doc_id=device.doc_id,
    )


def cancel_push(event: CallEvent, device: Device, *, action: str, now: float) -> Push:
    return Push(
        kind="cancel",
        token=device.token,
        data={
            "type": "incoming_call_cancelled",
            "linkedid": event.linkedid,
            "action": action,
            "timestamp": iso(now),
        },
        ttl_seconds=300,
        collapse_key=None,  # must not replace the incoming push in FCM's queue; it follows it
        apns_headers={"apns-priority": "5", "apns-push-type": "background"},
        apns_background=True,
        device_doc_id=device.doc_id,
    )


def missed_push(event: CallEvent, device: Device, *, now: float) -> Push:
    caller_name = _clip(event.caller_name or event.caller_number)
    tag = call_tag(event)
    return Push(
        kind="missed",
        token=device.token,
        data={
            "type": "missed_call",
            "caller_number": event.caller_number,
            "caller_name": caller_name,
            "receiver_number": event.dialled_number,
            "missed_linkedid": event.linkedid,
            "timestamp": iso(event.occurred_at),
        },
        title=MISSED_TITLE,
        body=caller_name or "발신번호 없음",
        ttl_seconds=24 * 3600,
        collapse_key=tag,
        tag=tag,
        channel_id=MISSED_CHANNEL,
        apns_headers={"apns-priority": "10", "apns-collapse-id": tag},
        device_doc_id=device.doc_id,
    )


def payload_size(push: Push) -> int:
    """Bytes FCM counts against its 4 KB limit: data plus notification text."""
    body = {"data": push.data, "title": push.title or "", "body": push.body or ""}
    return len(orjson.dumps(body))


# Why the phones stop ringing, sent as the cancel push's `action` and `cancelledBy`.
CANCEL_ACTIONS = {
    "answered": "answered_elsewhere",  # a desk phone, queue agent or another device picked up
    "caller_abandoned": "caller_hung_up",
    "no_answer": "no_answer",
    "busy": "rejected",
    "unknown": "call_ended",
}
# Outcome `unknown`: the connector ended the call without seeing its end (docs/lifecycle.md).
END_REASON_ACTIONS = {
    EndReason.RING_TIMEOUT.value: "ring_timeout",  # rang past the ring window
    EndReason.RELAY_GAP.value: "call_lost",  # events lost: relay reconnect, re-login, takeover
}


def cancel_action(kind: str, outcome: str, end_reason: str = "") -> str:
    if kind == "answered":
        return CANCEL_ACTIONS["answered"]
    if outcome == "unknown" and end_reason in END_REASON_ACTIONS:
        return END_REASON_ACTIONS[end_reason]
    return CANCEL_ACTIONS.get(outcome, "call_ended")
