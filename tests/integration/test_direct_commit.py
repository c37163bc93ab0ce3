"""The ring path's raw commits (functions/notifier/adapters/direct_commit.py) against Google's
Firestore emulator: what they write reads back as the client wrote it, and a lost race or an
unreachable Firestore raises the client's own exceptions (issue 17, cost per call)."""

from __future__ import annotations

import datetime
import socket
import time

import pytest
from google.api_core import exceptions, retry
from google.cloud import firestore
from google.cloud.firestore_v1 import DELETE_FIELD, SERVER_TIMESTAMP

from functions.adapters.firestore_races import lost_race
from functions.notifier.adapters import direct_commit
from functions.notifier.adapters.direct_commit import DirectCommit, create_write, update_write
from tests.integration.conftest import PROJECT

RECORD = {
    "state": "ringing",
    "devices": {"u1|tok": {"incoming": "claimed", "at": 1.5}},
    "version": 1,
    "expiresAt": datetime.datetime(2026, 12, 3, 1, 2, 3, 456789, tzinfo=datetime.UTC),
    "closing": None,
}


def test_a_create_reads_back_as_written_with_its_update_time(db):
    ref = db.collection("direct_commit").document("create.1")
    direct = DirectCommit(db)
    update_time = direct.create(ref, {**RECORD, "createdAt": SERVER_TIMESTAMP})
    snap = ref.get()
    assert snap.update_time == update_time
    doc = snap.to_dict()
    assert {k: doc[k] for k in RECORD} == RECORD
    assert abs(doc["createdAt"].timestamp() - time.time()) < 30  # stamped by the server
    assert direct.commits == 1


def test_lost_races_raise_what_the_client_raises(db):
    ref = db.collection("direct_commit").document("race.1")
    direct = DirectCommit(db)
    first = direct.create(ref, RECORD)
    with pytest.raises(exceptions.AlreadyExists) as created_twice:
        direct.create(ref, RECORD)
    assert lost_race(created_twice.value)
    second = direct.commit(
        [update_write(direct.path(ref), {"state": "over", "closing": DELETE_FIELD}, first)]
    )[0]
    assert second > first
    with pytest.raises(exceptions.FailedPrecondition) as stale:  # the update time moved on
        direct.commit([update_write(direct.path(ref), {"state": "again"}, first)])
    assert lost_race(stale.value)
    doc = ref.get().to_dict()
    assert doc["state"] == "over" and "closing" not in doc


def test_a_batch_is_all_or_nothing(db):
    direct = DirectCommit(db)
    taken = db.collection("direct_commit").document("batch.taken")
    taken.create({"x": 1})
    fresh = db.collection("direct_commit").document("batch.fresh")
    with pytest.raises(exceptions.AlreadyExists):
        direct.commit(
            [create_write(direct.path(fresh), {"x": 2}), create_write(direct.path(taken), {})]
        )
    assert not fresh.get().exists and taken.get().to_dict() == {"x": 1}


def test_an_unreachable_firestore_is_retried_then_raises(monkeypatch):
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{port}")
    client = firestore.Client(project=PROJECT)
    monkeypatch.setattr(direct_commit, "COMMIT_TIMEOUT", 0.5)
    tries: list[float] = []
    short = retry.Retry(
        initial=0.05,
        maximum=0.1,
        predicate=retry.if_exception_type(exceptions.ServiceUnavailable),
        timeout=1.0,
        on_error=lambda exc: tries.append(time.monotonic()),
    )
    monkeypatch.setattr(direct_commit, "_RETRY", short)
    started = time.monotonic()
    with pytest.raises((exceptions.RetryError, exceptions.ServiceUnavailable)):
        DirectCommit(client).create(client.collection("c").document("d"), {"a": 1})
    assert len(tries) >= 2 and time.monotonic() - started < 10
    client.close()
