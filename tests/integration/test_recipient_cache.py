"""The notifier's short recipient cache, on the Firestore emulator."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from functions.core.call_event import CallEvent, Kind
from functions.notifier.adapters.firestore_directory import FirestoreDirectory
from tests.integration.scenario import company, write

RELAY_PORT = 7002


def call(number: str = "07045144801") -> CallEvent:
    now = time.time()
    return CallEvent(
        kind=Kind.RINGING,
        relay=f"127.0.0.1:{RELAY_PORT}",
        server_id=1,
        linkedid="cache.1",
        caller_number="01026132471",
        caller_name="",
        dialled_number=number,
        channel="PJSIP/x",
        occurred_at=now,
        detected_at=now,
    )


def tokens(selection) -> set[str]:
    return {d.token for r in selection.recipients for d in r.devices}


def test_recipients_are_reused_within_the_window_then_looked_up_again(db):
    write(db, company(RELAY_PORT, 1))
    clock = [100.0]
    directory = FirestoreDirectory(
        db, ThreadPoolExecutor(4), "KR", cache_seconds=10, clock=lambda: clock[0]
    )
    first = directory.recipients_for(call())
    assert tokens(first) == {"tok-kim-android", "tok-kim-ios", "tok-lee"}

    db.collection("user_notification_settings").document("lee").set({"pushEnabled": False})
    clock[0] += 5
    assert directory.recipients_for(call("070-4514-4801")) is first  # same number, cached
    clock[0] += 6
    assert tokens(directory.recipients_for(call())) == {"tok-kim-android", "tok-kim-ios"}


def test_a_pruned_token_leaves_the_cache_at_once(db):
    write(db, company(RELAY_PORT, 1))
    directory = FirestoreDirectory(db, ThreadPoolExecutor(4), "KR", cache_seconds=60)
    assert "tok-lee" in tokens(directory.recipients_for(call()))
    directory.delete_token_doc("lee_a_Android")
    assert "tok-lee" not in tokens(directory.recipients_for(call()))
    assert not db.collection("fcm_tokens").document("lee_a_Android").get().exists


def test_cache_off_looks_up_every_time(db):
    write(db, company(RELAY_PORT, 1))
    directory = FirestoreDirectory(db, ThreadPoolExecutor(4), "KR", cache_seconds=0)
    assert "tok-lee" in tokens(directory.recipients_for(call()))
    db.collection("fcm_tokens").document("lee_a_Android").delete()
    assert "tok-lee" not in tokens(directory.recipients_for(call()))
