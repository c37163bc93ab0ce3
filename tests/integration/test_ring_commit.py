"""The notifier's ringing path in Firestore round trips (issue 17, cost per call), on the emulator
with the real notifier wiring (functions.notifier.app.build_notifier) sending to the local FCM
endpoint: once caches are warm, one round trip (the ledger claim) before the first FCM request
and one commit after the pushes, holding the ring's results and the history; when something
moved meanwhile, the same results the long way."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.cloud.firestore_v1.services.firestore import client as gapic

from functions.core.call_event import CallEvent, Kind
from functions.core.ledger import DeviceRef
from functions.core.recipients import Device, Recipient
from functions.notifier.adapters.direct_commit import DirectCommit
from functions.notifier.adapters.history_store import HistoryStore
from functions.notifier.adapters.ledger_store import LedgerStore
from functions.notifier.adapters.ring_commit import RingCommit
from functions.notifier.app import build_notifier
from functions.settings import load_settings
from tests.integration.conftest import PROJECT
from tests.integration.scenario import EXPECTED_TOKENS, company, write
from tests.support import LOOPBACK_RELAYS, USER_DOCUMENTS, ringing_event

RELAY_PORT = 7003
RPCS = ("commit", "batch_get_documents", "run_query", "get_document", "list_documents")


def ringing(linkedid: str, kind: Kind = Kind.RINGING) -> CallEvent:
    outcome = "no_answer" if kind is Kind.ENDED else ""
    return ringing_event(linkedid, RELAY_PORT, kind=kind, outcome=outcome)


@pytest.fixture
def rpcs(monkeypatch):
    """Every Firestore RPC the process makes, in order, with the thread that made it."""
    calls: list[str] = []
    lock = threading.Lock()
    for name in RPCS:
        original = getattr(gapic.FirestoreClient, name)

        def counted(self, *args, __name=name, __original=original, **kwargs):
            with lock:
                calls.append(__name)
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(gapic.FirestoreClient, name, counted)
    original_send = DirectCommit._send  # the ring path's raw commits (direct_commit.py)

    def counted_send(self, request):
        with lock:
            calls.append("commit")
        return original_send(self, request)

    monkeypatch.setattr(DirectCommit, "_send", counted_send)
    return calls


def test_one_round_trip_before_the_first_push_and_one_after(db, fcm, rpcs):
    write(db, company(RELAY_PORT, 1))
    settings = load_settings(
        {
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "FCM_ENDPOINT": fcm.url,
            **LOOPBACK_RELAYS,
            **USER_DOCUMENTS,
            "RECIPIENT_CACHE_SECONDS": "60",
        }
    )
    notifier = build_notifier(settings)
    notifier.handle(ringing("warm.1"))  # caches warm: recipients and relay_access
    sender = notifier.sender
    before_first_push: list[int] = []
    real_send = sender.send

    def send(pushes):
        before_first_push.append(len(rpcs))
        return real_send(pushes)

    sender.send = send  # type: ignore[method-assign]
    rpcs.clear()
    fcm.clear()
    report = notifier.handle(ringing("rt.1"))
    assert report.outcomes == Counter({"incoming_sent": 3})
    assert before_first_push[0] == 1 and rpcs[0] == "commit"  # the ledger claim's create
    assert rpcs == ["commit", "commit"], rpcs  # ...and one commit after the pushes
    assert notifier.ring_commit.combined == 2 and notifier.ring_commit.apart == 0
    assert sorted(m["token"] for m in fcm.sent_messages()) == sorted(EXPECTED_TOKENS)
    history = {s.id: s.to_dict() for s in db.collection("call_history").stream()}
    assert {"rt.1", "rt.1_lee"} <= set(history)
    record = db.collection("push_dedupe").document(ringing("rt.1").call_hash).get().to_dict()
    assert {d["incoming"] for d in record["devices"].values()} == {"sent"}


@pytest.fixture(params=["direct", "client"])
def stores(request, db) -> tuple[LedgerStore, HistoryStore, RingCommit]:
    """The stores as the notifier wires them (raw commits, DirectCommit) and through the
    client's own writes: the races come out the same."""
    direct = DirectCommit(db) if request.param == "direct" else None
    ledger, history = LedgerStore(db, direct), HistoryStore(db, ThreadPoolExecutor(4))
    return ledger, history, RingCommit(ledger, history, direct)


DEVICES = [DeviceRef("tok-a", "a_1_Android", "a"), DeviceRef("tok-b", "b_1_Android", "b")]
RECIPIENTS = [
    Recipient("a", "1010", devices=(Device("a_1_Android", "tok-a"),)),
    Recipient("b", "1011", devices=(Device("b_1_Android", "tok-b"),)),
]


def test_a_call_closed_between_claim_and_finish_is_finished_the_long_way(db, stores):
    ledger, _, commit = stores
    event = ringing("moved.1")
    claimed, over = ledger.claim_ring(event, DEVICES, time.time())
    assert claimed == DEVICES and not over
    # another notifier instance handles the answer meanwhile
    LedgerStore(db).close_call(ringing("moved.1", Kind.ENDED), "no_answer", time.time())
    cancels, closing = commit.finish(event, RECIPIENTS, DEVICES, [], time.time())
    assert (commit.combined, commit.apart) == (0, 1)
    assert sorted(c.token for c in cancels) == ["tok-a", "tok-b"]  # rung after the close
    assert closing is not None and closing.kind is Kind.ENDED
    assert {s.id for s in db.collection("call_history").stream()} == {"moved.1", "moved.1_b"}


def test_existing_history_is_never_overwritten_by_the_combined_commit(db, stores):
    ledger, _, commit = stores
    event = ringing("dup.1")
    db.collection("call_history").document("dup.1").set({"status": "confirmed", "userId": "a"})
    ledger.claim_ring(event, DEVICES, time.time())
    cancels, closing = commit.finish(event, RECIPIENTS, DEVICES, [], time.time())
    assert (commit.combined, commit.apart, cancels, closing) == (0, 1, [], None)
    assert db.collection("call_history").document("dup.1").get().to_dict()["status"] == "confirmed"
    assert db.collection("call_history").document("dup.1_b").get().exists
    record = db.collection("push_dedupe").document(event.call_hash).get().to_dict()
    assert {d["incoming"] for d in record["devices"].values()} == {"sent"}


def test_without_a_claim_record_of_its_own_it_reads_first(db, stores):
    _, _, commit = stores
    event = ringing("other.1")
    LedgerStore(db).claim_ring(event, DEVICES, time.time())  # another instance claimed
    commit.finish(event, RECIPIENTS, DEVICES[:1], DEVICES[1:], time.time())
    assert (commit.combined, commit.apart) == (0, 1)
    record = db.collection("push_dedupe").document(event.call_hash).get().to_dict()
    assert sorted(d["incoming"] for d in record["devices"].values()) == ["failed", "sent"]
