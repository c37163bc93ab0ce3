"""The per-call delivery ledger: which device got which push, as plain data. Pure decisions; the
Firestore adapter (functions.adapters.ledger_store) runs them inside transactions.

One record per call (`push_dedupe/{call_hash}`), shared by every notifier instance:

    {"callKey": ..., "linkedid": ..., "over": bool, "overAction": str, "expiresAt": ts,
     "devices": {<token hash>: {"token", "docId", "userId", "incoming", "claimedAt", "cancel"}}}

`incoming` is "claimed" while one instance sends, then "sent" or "failed"; a claim older than
CLAIM_SECONDS is abandoned (its instance died) and may be taken over. `over` is set by the
answered/ended event even when it arrives before the ringing one, so a late ring is not sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CLAIM_SECONDS = 20.0
CLAIMED, SENT, FAILED = "claimed", "sent", "failed"


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


def devices_of(record: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    devices = (record or {}).get("devices")
    return dict(devices) if isinstance(devices, Mapping) else {}


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
        if (
            entry is None
            or entry.get("incoming") == FAILED
            or (
                entry.get("incoming") == CLAIMED
                and now - float(entry.get("claimedAt", 0)) > (CLAIM_SECONDS)
            )
        ):
            chosen.append(device)
    return chosen, False


def plan_cancel(record: Mapping[str, Any] | None) -> list[DeviceRef]:
    """Devices that were sent the incoming push and have not been sent a cancel yet."""
    refs = []
    for entry in devices_of(record).values():
        if entry.get("incoming") == SENT and not entry.get("cancel"):
            refs.append(
                DeviceRef(
                    str(entry.get("token", "")),
                    str(entry.get("docId", "")),
                    str(entry.get("userId", "")),
                )
            )
    return [ref for ref in refs if ref.token]
