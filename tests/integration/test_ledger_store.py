"""The delivery ledger under concurrent writers, against Google's Firestore emulator (which
isolates transactions as Firestore does): however many
notifier instances handle copies of one call at once, each device is claimed by exactly one."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from google.cloud import firestore

from functions.core.call_event import CallEvent, Kind
from functions.core.ledger import DeviceRef
from functions.notifier.adapters.ledger_store import LedgerStore
from tests.integration.conftest import PROJECT

DEVICES = [DeviceRef(f"tok-{i}", f"u{i}_d_Android", f"u{i}") for i in range(3)]


def call(linkedid: str) -> CallEvent:
    now = time.time()
    return CallEvent(
        kind=Kind.RINGING,
        relay="pbx:7099",
        server_id=1,
        linkedid=linkedid,
        caller_number="01026132471",
        caller_name="",
        dialled_number="07045144801",
        channel="PJSIP/x",
        occurred_at=now,
        detected_at=now,
    )


def race(workers: int, action) -> list:
    """action(i) in `workers` threads released at the same instant."""
    barrier = threading.Barrier(workers)

    def one(i: int):
        barrier.wait(5)
        return action(i)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(workers)))


def test_concurrent_claims_give_each_device_to_one_instance(db):
    stores = [LedgerStore(firestore.Client(project=PROJECT)) for _ in range(6)]
    for round_ in range(8):
        event = call(f"race.{round_}")

        def claim(i: int, event=event):
            return stores[i].claim_ring(event, DEVICES, time.time())[0]

        claimed = [ref.token for chosen in race(6, claim) for ref in chosen]
        assert sorted(claimed) == sorted(d.token for d in DEVICES), round_
    assert sum(s.conflicts for s in stores) > 0  # the race really happened


def test_close_racing_with_the_end_of_a_ring_never_loses_or_doubles_a_cancel(db):
    stores = [LedgerStore(firestore.Client(project=PROJECT)) for _ in range(2)]
    for round_ in range(8):
        event = call(f"race.close.{round_}")
        chosen, over = stores[0].claim_ring(event, DEVICES, time.time())
        assert len(chosen) == 3 and not over
        answered = replace(event, kind=Kind.ANSWERED, answered_by="1010")
        barrier = threading.Barrier(2)

        def finish(event=event, barrier=barrier):
            barrier.wait(5)
            return stores[0].finish_ring(event, DEVICES, [], time.time())[0]

        def close(answered=answered, barrier=barrier):
            barrier.wait(5)
            return stores[1].close_call(answered, "answered_elsewhere", time.time())[0]

        with ThreadPoolExecutor(2) as pool:
            late, direct = pool.submit(finish), pool.submit(close)
            cancels = late.result() + direct.result()
        # Whichever committed first, each device gets exactly one cancel claim in total.
        assert sorted(d.token for d in cancels) == sorted(d.token for d in DEVICES), round_


def test_ledger_writes_take_no_transaction_and_a_redelivery_loses_the_first_create(db):
    class CountingTransactions:
        """The client, counting the transactions started through it."""

        def __init__(self, client: firestore.Client) -> None:
            self.client = client
            self.transactions = 0

        def __getattr__(self, name: str):
            return getattr(self.client, name)

        def transaction(self, **kwargs):
            self.transactions += 1
            return self.client.transaction(**kwargs)

    client = CountingTransactions(firestore.Client(project=PROJECT))
    store = LedgerStore(client)  # type: ignore[arg-type]
    event = call("fast.1")
    chosen, over = store.claim_ring(event, DEVICES, time.time())
    assert sorted(d.token for d in chosen) == sorted(d.token for d in DEVICES) and not over
    assert client.transactions == 0  # one create
    record = db.collection("push_dedupe").document(event.call_hash).get().to_dict()
    assert record["version"] == 1
    again, _ = store.claim_ring(event, DEVICES, time.time())  # a redelivery: nothing new to ring
    # the create failed (the record exists), the read-decide-write found nothing new to ring
    assert again == [] and client.transactions == 0 and store.conflicts == 1
