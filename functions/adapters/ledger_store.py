"""Firestore commits of the per-call delivery ledger (`push_dedupe/{call_hash}`); the transitions
are functions.core.ledger's. Records expire by themselves through a TTL policy on `expiresAt`
(infra/).

Every change is a transaction that also creates a write-once marker
`push_dedupe/{call}/versions/{n}` for the record's next version. Two writers that read the same
version cannot both commit: on production Firestore the transaction already guarantees it, and
the create precondition makes it hold on the local emulator too, which does not isolate
transactions. The loser reads again and re-decides (a few times at most). A call's first
record (the claim of its ringing event) is written with two creates in one commit instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.api_core import exceptions
from google.cloud import firestore

from functions.adapters.firestore_races import lost_race
from functions.core import ledger
from functions.core.call_event import CallEvent, Kind
from functions.core.ledger import DeviceRef, Record

LEDGER = "push_dedupe"
VERSIONS = "versions"
RECORD_TTL = timedelta(days=2)  # longer than any useful redelivery of a call's events
MAX_ATTEMPTS = 8
T = TypeVar("T")


class LedgerContention(RuntimeError):
    """Too many concurrent writers on one call; raised so the platform retries the event."""


class LedgerStore:
    def __init__(self, client: firestore.Client) -> None:
        self.client = client
        self.conflicts = 0

    def _ref(self, event: CallEvent) -> firestore.DocumentReference:
        return self.client.collection(LEDGER).document(event.call_hash)

    @staticmethod
    def _base(event: CallEvent) -> dict[str, Any]:
        return {"callKey": event.call_key, "linkedid": event.linkedid}

    def _create(
        self, event: CallEvent, decide: Callable[[Record | None], tuple[Record | None, T]]
    ) -> tuple[bool, T | None]:
        """The first record of a call in one commit, with no transaction: (created, result).
        The record and its version-1 marker are both `create`s, so a call that has a record
        already fails the commit (the caller then takes the transaction path); the ringing
        event, usually the first of its call, saves the transaction's begin and read on its
        way to the pushes."""
        new, result = decide(None)
        if new is None:
            return False, None
        ref = self._ref(event)
        expires = datetime.now(UTC) + RECORD_TTL
        batch = self.client.batch()
        batch.create(ref.collection(VERSIONS).document("1"), {"expiresAt": expires})
        batch.create(ref, {**new, "version": 1, "expiresAt": expires})
        try:
            batch.commit()
        except exceptions.GoogleAPICallError as exc:
            if not lost_race(exc):
                raise
            self.conflicts += 1
            return False, None
        return True, result

    def _commit(
        self, event: CallEvent, decide: Callable[[Record | None], tuple[Record | None, T]]
    ) -> T:
        ref = self._ref(event)
        for _ in range(MAX_ATTEMPTS):

            @firestore.transactional
            def run(tx: firestore.Transaction) -> T:
                snap = ref.get(transaction=tx)
                record = snap.to_dict() if snap.exists else None
                new, result = decide(record)
                if new is None:
                    return result
                version = int((record or {}).get("version", 0)) + 1
                expires = datetime.now(UTC) + RECORD_TTL
                marker = ref.collection(VERSIONS).document(str(version))
                tx.create(marker, {"expiresAt": expires})
                tx.set(ref, {**new, "version": version, "expiresAt": expires})
                return result

            try:
                return run(self.client.transaction())
            except exceptions.GoogleAPICallError as exc:
                if not lost_race(exc):
                    raise
                self.conflicts += 1
        raise LedgerContention(f"ledger of {event.call_key} kept changing under us")

    def claim_ring(
        self, event: CallEvent, candidates: Sequence[DeviceRef], now: float
    ) -> tuple[list[DeviceRef], bool]:
        """Claim the devices this instance will ring; (devices, call_already_over)."""

        def decide(record: Record | None) -> tuple[Record | None, tuple[list[DeviceRef], bool]]:
            new, chosen, over = ledger.claim_ring(record, candidates, now, self._base(event))
            return new, (chosen, over)

        created, result = self._create(event, decide)
        if created and result is not None:
            return result
        return self._commit(event, decide)

    def finish_ring(
        self, event: CallEvent, sent: Sequence[DeviceRef], failed: Sequence[DeviceRef], now: float
    ) -> tuple[list[DeviceRef], CallEvent | None]:
        """Record the ring's results. If the call was answered or ended meanwhile: the cancels
        this instance must now send, and the event that closed it."""

        def decide(record: Record | None) -> tuple[Record, tuple[list[DeviceRef], Record]]:
            new, cancels = ledger.finish_ring(record, sent, failed, now, self._base(event))
            return new, (cancels, new)

        cancels, record = self._commit(event, decide)
        return cancels, _closing_event(event, record)

    def close_call(self, event: CallEvent, action: str, now: float) -> tuple[list[DeviceRef], bool]:
        """Mark the call over and claim the cancels to send: (devices, first_close)."""
        closing = {
            "overAction": action,
            "overEvent": {
                "kind": event.kind.value,
                "outcome": event.outcome,
                "answered_by": event.answered_by,
                "occurred_at": event.occurred_at,
            },
        }

        def decide(record: Record | None) -> tuple[Record | None, tuple[list[DeviceRef], bool]]:
            new, cancels, first = ledger.close_call(record, closing, now, self._base(event))
            return new, (cancels, first)

        return self._commit(event, decide)


def _closing_event(event: CallEvent, record: Record) -> CallEvent | None:
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
