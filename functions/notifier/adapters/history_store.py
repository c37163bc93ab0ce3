"""Writes `call_history`, the collection the app lists and watches.

The app watches `call_history/{linkedid}` on the incoming screen and lists
`call_history where userId == uid`. One call can ring several users who share a number, and a
document has one `userId`, so: the call's own document `call_history/{linkedid}` belongs to the
first recipient and lists everyone in `recipientUserIds`; every other recipient gets
`call_history/{linkedid}_{uid}` with the same fields. Cancelling updates all of them, so any
watcher closes its screen.

Writes use `create()`: a redelivered event finds the documents and leaves them alone, so a
status the app already set ("confirmed") is never reset to "missed".
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from google.api_core.exceptions import AlreadyExists
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from functions.core.app_calls import history_marks_cancelled
from functions.core.call_event import CallEvent, Kind
from functions.core.recipients import Recipient

HISTORY = "call_history"


def history_doc_ids(linkedid: str, user_ids: Sequence[str]) -> list[str]:
    """Document id per recipient, in recipient order; the first owns the call's own document."""
    base = linkedid.replace("/", "_")
    return [base if i == 0 else f"{base}_{uid}" for i, uid in enumerate(user_ids)]


class HistoryStore:
    def __init__(self, client: firestore.Client, pool: ThreadPoolExecutor) -> None:
        self.client = client
        self.pool = pool

    def record_incoming(self, event: CallEvent, recipients: Sequence[Recipient]) -> int:
        """Create each recipient's document; returns how many were new."""
        user_ids = [r.user_id for r in recipients]
        ids = history_doc_ids(event.linkedid, user_ids)
        return self._create_all(event, list(zip(ids, recipients, strict=True)), user_ids)

    def record_joining(self, event: CallEvent, recipients: Sequence[Recipient]) -> int:
        """record_incoming for a call that may have history already: the app's
        sendIncomingCallNotification rings users the notifier skipped (DCMIWS mode). Users with
        a document keep it; a newcomer gets the call's own document only if nobody has it."""
        existing = {s.id: (s.to_dict() or {}).get("userId") for s in self._docs(event.linkedid)}
        newcomers = [r for r in recipients if r.user_id not in set(existing.values())]
        base = event.linkedid.replace("/", "_")
        ids = [
            base if i == 0 and base not in existing else f"{base}_{r.user_id}"
            for i, r in enumerate(newcomers)
        ]
        user_ids = [r.user_id for r in recipients]
        return self._create_all(event, list(zip(ids, newcomers, strict=True)), user_ids)

    def incoming_documents(
        self, event: CallEvent, recipients: Sequence[Recipient]
    ) -> list[tuple[firestore.DocumentReference, dict]]:
        """What record_incoming creates, for a caller that commits it with other writes
        (functions.notifier.adapters.ring_commit)."""
        user_ids = [r.user_id for r in recipients]
        ids = history_doc_ids(event.linkedid, user_ids)
        return [
            (self.client.collection(HISTORY).document(doc_id), doc)
            for doc_id, doc in self._documents(
                event, list(zip(ids, recipients, strict=True)), user_ids
            )
        ]

    def _create_all(
        self, event: CallEvent, docs: list[tuple[str, Recipient]], user_ids: list[str]
    ) -> int:
        futures = []
        for doc_id, doc in self._documents(event, docs, user_ids):
            ref = self.client.collection(HISTORY).document(doc_id)
            futures.append(self.pool.submit(self._create, ref, doc))
        return sum(f.result() for f in futures)

    @staticmethod
    def _documents(
        event: CallEvent, docs: list[tuple[str, Recipient]], user_ids: list[str]
    ) -> list[tuple[str, dict]]:
        when = datetime.fromtimestamp(event.occurred_at, UTC)
        out = []
        for doc_id, recipient in docs:
            doc = {
                "userId": recipient.user_id,
                "callerNumber": event.caller_number,
                "callerName": event.caller_name or event.caller_number,
                "receiverNumber": event.dialled_number,
                "channel": event.channel,
                "linkedid": event.linkedid,
                "callType": "incoming",
                "callSubType": "external",
                "status": "missed",
                "extensionUsed": recipient.extension,
                "timestamp": when,
                "createdAt": firestore.SERVER_TIMESTAMP,
                "cancelled": False,
                "recipientUserIds": user_ids,
            }
            if event.test:  # the admin CLI's `ring`: the app and admins can tell it apart
                doc["test"] = True
            out.append((doc_id, doc))
        return out

    def _docs(self, linkedid: str) -> list[firestore.DocumentSnapshot]:
        base = linkedid.replace("/", "_")
        query = self.client.collection(HISTORY).where(
            filter=FieldFilter("linkedid", "==", linkedid)
        )
        return [s for s in query.stream() if s.id == base or s.id.startswith(base + "_")]

    def record_outcome(self, event: CallEvent, action: str) -> int:
        updated = 0
        batch = self.client.batch()
        for snap in self._docs(event.linkedid):
            doc = snap.to_dict() or {}
            changes = outcome_changes(event, action, doc)
            if changes:
                batch.update(snap.reference, changes)
                updated += 1
        if updated:
            batch.commit()
        return updated

    def record_user_cancel(
        self, linkedid: str, user_id: str, action: str, *, shared_closes: bool
    ) -> int:
        """One user stopped the call on a device (the app's cancelIncomingCallNotification):
        `cancelled`, `cancelledAt`, `cancelledBy` on that user's documents, the rules in
        functions.core.app_calls.history_marks_cancelled. Returns how many were updated."""
        batch = self.client.batch()
        updated = 0
        for snap in self._docs(linkedid):
            doc = snap.to_dict() or {}
            if history_marks_cancelled(
                snap.id, doc, linkedid, user_id, shared_closes=shared_closes
            ):
                batch.update(
                    snap.reference,
                    {
                        "cancelled": True,
                        "cancelledAt": firestore.SERVER_TIMESTAMP,
                        "cancelledBy": action,
                    },
                )
                updated += 1
        if updated:
            batch.commit()
        return updated

    @staticmethod
    def _create(ref: firestore.DocumentReference, doc: dict) -> bool:
        try:
            ref.create(doc)
        except AlreadyExists:
            return False
        return True


def outcome_changes(event: CallEvent, action: str, doc: dict) -> dict:
    """Field changes for one history document; never undoes what the app or an earlier event
    recorded (a "confirmed" status, the first cancel)."""
    when = datetime.fromtimestamp(event.occurred_at, UTC)
    changes: dict = {}
    if not doc.get("cancelled"):
        changes.update(cancelled=True, cancelledAt=firestore.SERVER_TIMESTAMP, cancelledBy=action)
    if event.kind is Kind.ANSWERED:
        if doc.get("status") in (None, "missed", "fcm_notification"):
            changes["status"] = "device_answered"
        if "answeredAt" not in doc:
            changes.update(answeredAt=when, answeredBy=event.answered_by)
    elif event.kind is Kind.ENDED and "endedAt" not in doc:
        changes.update(endedAt=when, outcome=event.outcome)
        if event.end_reason:  # ended by the connector: why (ring_timeout, relay_gap, ...)
            changes["endReason"] = event.end_reason
        answered_at = doc.get("answeredAt")
        if isinstance(answered_at, datetime):
            changes["duration"] = max(0, int((when - answered_at).total_seconds()))
    return changes
