"""A ring's results and its history in one Firestore commit.

After the pushes of a ringing call, the notifier records which devices got them (the ledger)
and creates each rung user's `call_history` document. Done apart, that is a read and a write
for the ledger and a create per user; but this instance created the ledger record moments ago
(the claim) and knows its update time. So: one batch, the ledger update conditioned on that
update time plus the history creates, committed atomically. If anything moved meanwhile (the
call was answered or ended by another instance: the precondition fails) or a history document
exists (a redelivery), nothing is written and the two are done apart, as before.

Round trips per ringing call: the claim (one `create`) before the first FCM request, this one
commit after the pushes (bench/burst.py reports the CPU it saves). With a DirectCommit both are
raw commits of the same writes (direct_commit.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.api_core import exceptions

from functions.adapters.firestore_races import lost_race
from functions.core import ledger
from functions.core.call_event import CallEvent
from functions.core.ledger import DeviceRef
from functions.core.recipients import Recipient
from functions.notifier.adapters.direct_commit import DirectCommit, create_write, update_write
from functions.notifier.adapters.history_store import HistoryStore
from functions.notifier.adapters.ledger_store import LedgerStore, closing_event


class RingCommit:
    def __init__(
        self, ledger_store: LedgerStore, history: HistoryStore, direct: DirectCommit | None = None
    ) -> None:
        self.ledger = ledger_store
        self.history = history
        self.direct = direct
        self.combined = 0  # rings finished in one commit
        self.apart = 0  # rings finished the long way (something moved, or no claim record)

    def finish(
        self,
        event: CallEvent,
        recipients: Sequence[Recipient],
        sent: Sequence[DeviceRef],
        failed: Sequence[DeviceRef],
        now: float,
    ) -> tuple[list[DeviceRef], CallEvent | None]:
        """History for the rung users and the ring's results in the ledger: (late cancels,
        the event that closed the call meanwhile), as HistoryStore.record_incoming then
        LedgerStore.finish_ring would give."""
        written = self.ledger.take_written(event)
        if written is not None:
            record, update_time = written
            new, cancels = ledger.finish_ring(record, sent, failed, now, LedgerStore.base(event))
            changes = self.ledger.replacement(record, new)
            history = self.history.incoming_documents(event, recipients)
            try:
                self._commit(event, changes, update_time, history)
            except exceptions.GoogleAPICallError as exc:
                if not lost_race(exc):
                    raise
            else:
                self.combined += 1
                return cancels, closing_event(event, new)
        self.apart += 1
        self.history.record_incoming(event, recipients)
        return self.ledger.finish_ring(event, sent, failed, now)

    def _commit(
        self, event: CallEvent, changes: dict, update_time: Any, history: list[tuple[Any, dict]]
    ) -> None:
        ref = self.ledger.ref(event)
        direct = self.direct
        if direct is not None:
            direct.commit(
                [
                    update_write(direct.path(ref), changes, update_time),
                    *(create_write(direct.path(doc_ref), doc) for doc_ref, doc in history),
                ]
            )
            return
        client = self.ledger.client
        batch = client.batch()
        batch.update(ref, changes, option=client.write_option(last_update_time=update_time))
        for doc_ref, doc in history:
            batch.create(doc_ref, doc)
        batch.commit()
