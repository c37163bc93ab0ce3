"""The per-call delivery ledger: which device got which push, as plain data. Pure transitions;
the Firestore adapter (functions.notifier.adapters.ledger_store) applies them under transactions.

One record per call (`push_dedupe/{call_hash}`), shared by every notifier instance:

    {"callKey", "linkedid", "over": bool, "overAction", "overAt", "overEvent": {...},
     "devices": {<token hash>: {"token", "docId", "userId", "incoming", "claimedAt", "cancel"}}}

`incoming` is "claimed" while one instance sends, then "sent" or "failed"; a claim older than
CLAIM_SECONDS is abandoned (its instance died) and may be taken over. `over` is set by the
answered/ended event even when it arrives before the ringing one, so a late ring is not sent.
Each transition returns the new record (None: nothing to write) and what the caller must do.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CLAIM_SECONDS = 20.0
CLAIMED, SENT, FAILED = "claimed", "sent", "failed"

Record = dict[str, Any]


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class DeviceRef:
    token: str
    doc_id: str
    user_id: str

    @property
    def key(self) -> str:
        return token_key(self.token)


def devices_of(record: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    devices = (record or {}).get("devices")
    if not isinstance(devices, Mapping):
        return {}
    return {k: dict(v) for k, v in devices.items() if isinstance(v, Mapping)}


def _copy(record: Mapping[str, Any] | None, base: Mapping[str, Any]) -> Record:
    new = copy.deepcopy(dict(record)) if record else {**base, "over": False}
    new["devices"] = devices_of(record)
    return new


def plan_ring(
    record: Mapping[str, Any] | None, candidates: Iterable[DeviceRef], now: float
) -> tuple[list[DeviceRef], bool]:
    """Which devices this instance should ring now, and whether the call is already over."""
    if record and record.get("over"):
        return [], True
    known = devices_of(record)
    chosen: list[DeviceRef] = []
    for device in candidates:
        entry = known.get(device.key)
        state = entry.get("incoming") if entry else None
        abandoned = state == CLAIMED and now - float(entry.get("claimedAt", 0)) > CLAIM_SECONDS
        if entry is None or state == FAILED or abandoned:
            chosen.append(device)
    return chosen, False


def plan_cancel(record: Mapping[str, Any] | None) -> list[DeviceRef]:
    """Devices that were sent the incoming push and have not been sent a cancel yet."""
    refs = [
        DeviceRef(str(e.get("token", "")), str(e.get("docId", "")), str(e.get("userId", "")))
        for e in devices_of(record).values()
        if e.get("incoming") == SENT and not e.get("cancel")
    ]
    return [ref for ref in refs if ref.token]


def claim_ring(
    record: Mapping[str, Any] | None,
    candidates: Sequence[DeviceRef],
    now: float,
    base: Mapping[str, Any],
) -> tuple[Record | None, list[DeviceRef], bool]:
    """(new record, devices this instance now owns the ring of, call already over)."""
    chosen, over = plan_ring(record, candidates, now)
    if over or not chosen:
        return None, chosen, over
    new = _copy(record, base)
    for d in chosen:
        new["devices"][d.key] = {
            "token": d.token,
            "docId": d.doc_id,
            "userId": d.user_id,
            "incoming": CLAIMED,
            "claimedAt": now,
        }
    return new, chosen, False


def finish_ring(
    record: Mapping[str, Any] | None,
    sent: Sequence[DeviceRef],
    failed: Sequence[DeviceRef],
    now: float,
    base: Mapping[str, Any],
) -> tuple[Record, list[DeviceRef]]:
    """Record the results; if the call was closed meanwhile, claim the cancels to send now."""
    new = _copy(record, base)
    for device, state in [(d, SENT) for d in sent] + [(d, FAILED) for d in failed]:
        entry = new["devices"].setdefault(
            device.key, {"token": device.token, "docId": device.doc_id, "userId": device.user_id}
        )
        entry["incoming"] = state
    cancels = plan_cancel(new) if new.get("over") else []
    for device in cancels:
        new["devices"][device.key]["cancel"] = now
    return new, cancels


def close_call(
    record: Mapping[str, Any] | None,
    closing: Mapping[str, Any],
    now: float,
    base: Mapping[str, Any],
) -> tuple[Record | None, list[DeviceRef], bool]:
    """Mark the call over (the first close wins) and claim the cancels to send:
    (new record, devices, first close)."""
    first = not (record or {}).get("over")
    cancels = plan_cancel(record)
    if not first and not cancels:
        return None, [], False
    new = _copy(record, base)
    if first:
        new.update(closing, over=True, overAt=now)
    for device in cancels:
        new["devices"][device.key]["cancel"] = now
    return new, cancels, first


# -- the app's own endpoints (functions.app_endpoints) -------------------------------------------
# The record also remembers the ringing event (`ring`, the call event's JSON fields) so that
# the app's endpoints act only on calls the backend itself saw ring; `userCancels` notes which
# users confirmed or rejected the call on one of their devices.


def remember_ringing(
    record: Mapping[str, Any] | None, ringing: Mapping[str, Any], base: Mapping[str, Any]
) -> Record | None:
    """The record with the ringing event kept (None: nothing to write, it is known already)."""
    if record and isinstance(record.get("ring"), Mapping):
        return None
    new = _copy(record, base)
    new["ring"] = dict(ringing)
    return new


def rung_devices_of(record: Mapping[str, Any] | None, user_id: str) -> list[DeviceRef]:
    """The user's devices that were sent the incoming push for this call."""
    return [
        DeviceRef(str(e.get("token", "")), str(e.get("docId", "")), user_id)
        for e in devices_of(record).values()
        if e.get("userId") == user_id and e.get("incoming") == SENT and e.get("token")
    ]


def cancel_for_user(
    record: Mapping[str, Any] | None, user_id: str, action: str, now: float
) -> tuple[Record | None, list[DeviceRef]]:
    """One user stopped the call on one of their devices: claim the cancel of that user's rung
    devices that have had none (no other user's), and note the user's decision once.
    (new record or None when there is nothing to write, devices to send the cancel to)."""
    cancels = [d for d in plan_cancel(record) if d.user_id == user_id]
    user_cancels = (record or {}).get("userCancels")
    noted = isinstance(user_cancels, Mapping) and user_id in user_cancels
    if not cancels and noted:
        return None, []
    new = _copy(record, {})
    for device in cancels:
        new["devices"][device.key]["cancel"] = now
    if not noted:
        new["userCancels"] = {
            **(new.get("userCancels") or {}),
            user_id: {"action": action, "at": now},
        }
    return new, cancels
