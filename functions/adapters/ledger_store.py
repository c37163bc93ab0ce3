"""Firestore transactions over the per-call delivery ledger (`push_dedupe/{call_hash}`); the
decisions are functions.core.ledger's. Records expire by themselves through a TTL policy on
`expiresAt` (infra/)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore

from functions.core.call_event import CallEvent, Kind
from functions.core.ledger import CLAIMED, FAILED, SENT, DeviceRef, plan_cancel, plan_ring

LEDGER = "push_dedupe"
RECORD_TTL = timedelta(days=2)  # longer than any useful redelivery of a call's events


def _entry(device: DeviceRef, now: float) -> dict[str, Any]:
    return {
        "token": device.token,
        "docId": device.doc_id,
        "userId": device.user_id,
        "incoming": CLAIMED,
        "claimedAt": now,
    }


class LedgerStore:
    def __init__(self, client: firestore.Client) -> None:
        self.client = client

    def _ref(self, event: CallEvent) -> firestore.DocumentReference:
        return self.client.collection(LEDGER).document(event.call_hash)

    def _base(self, event: CallEvent) -> dict[str, Any]:
        return {
            "callKey": event.call_key,
            "linkedid": event.linkedid,
            "expiresAt": datetime.now(UTC) + RECORD_TTL,
        }

    def claim_ring(
        self, event: CallEvent, candidates: Sequence[DeviceRef], now: float
    ) -> tuple[list[DeviceRef], bool]:
        """Claim the devices this instance will ring; (devices, call_already_over)."""
        ref = self._ref(event)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> tuple[list[DeviceRef], bool]:
            snap = ref.get(transaction=tx)
            record = snap.to_dict() if snap.exists else None
            chosen, over = plan_ring(record, candidates, now)
            if over or not chosen:
                return chosen, over
            if record is None:
                tx.set(
                    ref,
                    {
                        **self._base(event),
                        "over": False,
                        "devices": {d.key: _entry(d, now) for d in chosen},
                    },
                )
            else:
                tx.update(ref, {f"devices.{d.key}": _entry(d, now) for d in chosen})
            return chosen, False

        return run(self.client.transaction())

    def finish_ring(
        self, event: CallEvent, sent: Sequence[DeviceRef], failed: Sequence[DeviceRef], now: float
    ) -> tuple[list[DeviceRef], CallEvent | None]:
        """Record the ring's results. If the call ended meanwhile: the cancels this instance must
        now send, and the event that ended it."""
        ref = self._ref(event)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> tuple[list[DeviceRef], CallEvent | None]:
            record = ref.get(transaction=tx).to_dict() or {}
            devices = dict(record.get("devices") or {})
            updates: dict[str, Any] = {}
            for device, state in [(d, SENT) for d in sent] + [(d, FAILED) for d in failed]:
                updates[f"devices.{device.key}.incoming"] = state
                devices[device.key] = {**devices.get(device.key, {}), "incoming": state}
            cancels: list[DeviceRef] = []
            if record.get("over"):
                cancels = plan_cancel({"devices": devices})
                for device in cancels:
                    updates[f"devices.{device.key}.cancel"] = now
            if updates:
                tx.update(ref, updates)
            return cancels, _closing_event(event, record)

        return run(self.client.transaction())

    def close_call(self, event: CallEvent, action: str, now: float) -> tuple[list[DeviceRef], bool]:
        """Mark the call over and claim the cancels to send: (devices, first_close)."""
        ref = self._ref(event)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> tuple[list[DeviceRef], bool]:
            snap = ref.get(transaction=tx)
            record = snap.to_dict() if snap.exists else None
            first = not (record or {}).get("over")
            cancels = plan_cancel(record)
            closing = {
                "over": True,
                "overAction": action,
                "overAt": now,
                "overEvent": {
                    "kind": event.kind.value,
                    "outcome": event.outcome,
                    "answered_by": event.answered_by,
                    "occurred_at": event.occurred_at,
                },
            }
            if record is None:
                tx.set(ref, {**self._base(event), **closing, "devices": {}})
                return [], True
            updates: dict[str, Any] = {f"devices.{d.key}.cancel": now for d in cancels}
            if first:
                updates.update(closing)
            if updates:
                tx.update(ref, updates)
            return cancels, first

        return run(self.client.transaction())


def _closing_event(event: CallEvent, record: dict[str, Any]) -> CallEvent | None:
    """The answered/ended event recorded by close_call, rebuilt onto this call's event."""
    over = record.get("overEvent")
    if not record.get("over") or not isinstance(over, dict):
        return None
    try:
        return replace(
            event,
            kind=Kind(over.get("kind")),
            outcome=str(over.get("outcome") or ""),
            answered_by=str(over.get("answered_by") or ""),
            occurred_at=float(over.get("occurred_at") or event.occurred_at),
        )
    except (ValueError, TypeError):
        return None
