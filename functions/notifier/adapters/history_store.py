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
        when = datetime.fromtimestamp(event.occurred_at, UTC)
        futures = []
        for doc_id, recipient in zip(ids, recipients, strict=True):
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
            ref = self.client.collection(HISTORY).document(doc_id)
            futures.append(self.pool.submit(self._create, ref, doc))
        return sum(f.result() for f in futures)

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
        answered_at = doc.get("answeredAt")
        if isinstance(answered_at, datetime):
            changes["duration"] = max(0, int((when - answered_at).total_seconds()))
    return changes
