"""Firestore commits of the per-call delivery ledger (`push_dedupe/{call_hash}`); the transitions
are functions.core.ledger's. Records expire by themselves through a TTL policy on `expiresAt`
(infra/).

Every change is a read, a decision (functions.core.ledger) and a write that carries a
precondition: `create` when there was no record, else "unchanged since the read" (its update
time). Two writers that read the same record cannot both commit; the loser reads again and
re-decides (a few times at most). No transaction, so no lock waits between notifier instances.
A call's first record (the claim of its ringing event) is tried as a `create` straight away,
without the read: one round trip on the way to the pushes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from google.api_core import exceptions
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from functions.adapters.firestore_races import lost_race
from functions.core import ledger
from functions.core.call_event import CallEvent, InvalidCallEvent, Kind, parse_call_event
from functions.core.ledger import DeviceRef, Record
from functions.notifier.adapters.direct_commit import DirectCommit

LEDGER = "push_dedupe"
RECORD_TTL = timedelta(days=2)  # longer than any useful redelivery of a call's events
MAX_ATTEMPTS = 8
WRITTEN_KEPT = 1000  # records remembered as written (per call, until its ring is finished)
T = TypeVar("T")


class LedgerContention(RuntimeError):
    """Too many concurrent writers on one call; raised so the platform retries the event."""


class LedgerStore:
    def __init__(self, client: firestore.Client, direct: DirectCommit | None = None) -> None:
        self.client = client
        # the claim's `create` as a raw commit (direct_commit.py): the same write, less CPU
        self.direct = direct
        self.conflicts = 0
        self._lock = threading.Lock()
        self._written: OrderedDict[str, tuple[Record, Any]] = OrderedDict()

    def ref(self, event: CallEvent) -> firestore.DocumentReference:
        return self.client.collection(LEDGER).document(event.call_hash)

    @staticmethod
    def base(event: CallEvent) -> dict[str, Any]:
        base: dict[str, Any] = {
            "callKey": event.call_key,
            "linkedid": event.linkedid,
            "relay": event.relay,  # a connector taking the relay over finds its rung calls
        }
        if event.kind is Kind.RINGING:
            # ...and can end them (functions/connector/adapters/rung_calls.py)
            base["ring"] = ringing_fields(event)
        return base

    def _create(
        self, event: CallEvent, decide: Callable[[Record | None], tuple[Record | None, T]]
    ) -> tuple[bool, T | None]:
        """The first record of a call with one `create` and no read: (created, result). A call
        that has a record already fails it (the caller then reads and decides again); the
        ringing event, usually the first of its call, saves the read on its way to the
        pushes."""
        new, result = decide(None)
        if new is None:
            return False, None
        ref = self.ref(event)
        stored = _stored(new, version=1)
        try:
            update_time = (
                self.direct.create(ref, stored) if self.direct else ref.create(stored).update_time
            )
        except exceptions.GoogleAPICallError as exc:
            if not lost_race(exc):
                raise
            self.conflicts += 1
            return False, None
        with self._lock:  # the record as written and its update time: a later write of this
            self._written[event.call_hash] = (stored, update_time)  # call needs no read
            while len(self._written) > WRITTEN_KEPT:
                self._written.popitem(last=False)
        return True, result

    def take_written(self, event: CallEvent) -> tuple[Record, Any] | None:
        """The record this instance created for the call and its update time, once (None when
        another write may have come since: read it)."""
        with self._lock:
            return self._written.pop(event.call_hash, None)

    @staticmethod
    def replacement(record: Record, new: Record) -> dict[str, Any]:
        """The update that turns `record` into `new`: the top-level fields that changed (the
        ringing event and the call's ids are written once, not with every change) and the
        dropped ones deleted."""
        stored = _stored(new, version=int(record.get("version", 0)) + 1)
        changed = {key: value for key, value in stored.items() if record.get(key) != value}
        return {**changed, **{key: firestore.DELETE_FIELD for key in record if key not in stored}}

    def _commit(
        self, event: CallEvent, decide: Callable[[Record | None], tuple[Record | None, T]]
    ) -> T:
        """Read, decide, write back only if the record is unchanged since the read (its update
        time as the precondition, or `create` when there was none); else read again. Atomic on
        Firestore without a transaction's locks: two notifier instances on one call never wait
        for each other (the Firestore emulator ends such a lock conflict only after 2 s)."""
        ref = self.ref(event)
        for _ in range(MAX_ATTEMPTS):
            snap = ref.get()
            record = snap.to_dict() if snap.exists else None
            new, result = decide(record)
            if new is None:
                return result
            try:
                if record is None:
                    ref.create(_stored(new, version=1))
                else:
                    # what changed, fields the decision dropped deleted, only if unchanged
                    ref.update(
                        self.replacement(record, new),
                        option=self.client.write_option(last_update_time=snap.update_time),
                    )
                return result
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
            new, chosen, over = ledger.claim_ring(record, candidates, now, self.base(event))
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
            new, cancels = ledger.finish_ring(record, sent, failed, now, self.base(event))
            return new, (cancels, new)

        cancels, record = self._commit(event, decide)
        return cancels, closing_event(event, record)

    def close_call(self, event: CallEvent, action: str, now: float) -> tuple[list[DeviceRef], bool]:
        """Mark the call over and claim the cancels to send: (devices, first_close)."""
        closing = {
            "overAction": action,
            "overEvent": {
                "kind": event.kind.value,
                "outcome": event.outcome,
                "answered_by": event.answered_by,
                "occurred_at": event.occurred_at,
                "end_reason": event.end_reason,
            },
        }

        def decide(record: Record | None) -> tuple[Record | None, tuple[list[DeviceRef], bool]]:
            new, cancels, first = ledger.close_call(record, closing, now, self.base(event))
            return new, (cancels, first)

        return self._commit(event, decide)

    # -- the app's own endpoints (functions.app_endpoints) ---------------------------------------

    def remember_ringing(self, event: CallEvent) -> None:
        """Keep the ringing event of a call nobody was pushed for (its users listen to the relay
        in the app, DCMIWS mode), so that the app's sendIncomingCallNotification can ring
        their other devices."""
        ringing = ringing_fields(event)

        def decide(record: Record | None) -> tuple[Record | None, None]:
            return ledger.remember_ringing(record, ringing, self.base(event)), None

        created, _ = self._create(event, decide)
        if not created:
            self._commit(event, decide)

    def calls_named(self, linkedid: str) -> list[tuple[CallEvent, Record]]:
        """Every call with this linkedid whose ringing this backend saw (one per PBX that
        used the id), with its ledger record."""
        query = self.client.collection(LEDGER).where(filter=FieldFilter("linkedid", "==", linkedid))
        calls: list[tuple[CallEvent, Record]] = []
        for snap in query.stream():
            record = snap.to_dict() or {}
            event = ringing_event(record)
            if event is not None and event.linkedid == linkedid:
                calls.append((event, record))
        return calls

    def cancel_for_user(
        self, event: CallEvent, user_id: str, action: str, now: float
    ) -> list[DeviceRef]:
        """Claim the cancels of one user's rung devices (and note the user's decision)."""

        def decide(record: Record | None) -> tuple[Record | None, list[DeviceRef]]:
            if record is None:
                return None, []
            return ledger.cancel_for_user(record, user_id, action, now)

        return self._commit(event, decide)


def _stored(new: Record, *, version: int) -> dict[str, Any]:
    """A record as written: its version and, for the TTL policy, when it expires."""
    return {**new, "version": version, "expiresAt": datetime.now(UTC) + RECORD_TTL}


def ringing_fields(event: CallEvent) -> dict[str, Any]:
    """The ringing event as the map stored in its ledger record (`ring`)."""
    return orjson.loads(event.to_json())


def ringing_event(record: Record) -> CallEvent | None:
    """The ringing event a ledger record remembers, or None."""
    ringing = record.get("ring")
    if not isinstance(ringing, dict):
        return None
    try:
        event = parse_call_event(orjson.dumps(ringing, default=str))
    except (InvalidCallEvent, TypeError):
        return None
    return event if event.kind is Kind.RINGING else None


def closing_event(event: CallEvent, record: Record) -> CallEvent | None:
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
            end_reason=str(over.get("end_reason") or ""),
        )
    except (ValueError, TypeError):
        return None
