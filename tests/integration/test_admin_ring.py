"""`python -m functions.admin ring`: a test call through the real pipeline, the notifier under
functions-framework and firebase-admin against the local FCM endpoint (devtools/fake_fcm.py).
Directory mode through CALL_EVENTS_PUSH_URL; user-documents mode through the Pub/Sub
emulator's push subscription. The devices pushed are the ones `explain` names: both read the
notifier's own lookup, and here the notifier itself answers."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.demo_data import demo_documents
from functions.admin.__main__ import main
from tests.integration.conftest import PROJECT
from tests.integration.scenario import EXPECTED_TOKENS, company, write
from tests.support import NotifierProcess, eventually

RELAY = "ws://127.0.0.1:7099"
DEMO_TOKENS = {
    "demo-kim_pixel_Android": "demo-token-kim-android",
    "demo-kim_iphone_iOS": "demo-token-kim-ios",
    "demo-lee_galaxy_Android": "demo-token-lee",
}


@pytest.fixture(scope="module")
def directory_notifier(emulator, fcm, tmp_path_factory) -> Iterator[NotifierProcess]:
    """The notifier in directory mode (the session's `notifier` reads users' documents)."""
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "FIRESTORE_EMULATOR_HOST": emulator.host,
        "FCM_ENDPOINT": fcm.url,
        "TENANCY": "directory",
        "RECIPIENT_CACHE_SECONDS": "0",
        "TENANT_CACHE_SECONDS": "0.01",  # each test seeds its own directory
    }
    log = tmp_path_factory.mktemp("admin-notifier") / "notifier.log"
    proc = NotifierProcess(env, log).start()
    yield proc
    proc.stop()


def run(args: list[str], env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = main([*args, "--json"], {"GOOGLE_CLOUD_PROJECT": PROJECT, **env}, out)
    return code, json.loads(out.getvalue())


def pushes_of(fcm, linkedid: str) -> list[dict[str, Any]]:
    return [
        m
        for m in fcm.sent_messages()
        if linkedid in (m["data"].get("linkedid"), m["data"].get("missed_linkedid"))
    ]


def test_ring_in_directory_mode_pushes_what_explain_says_then_cancels(db, fcm, directory_notifier):
    write(db, demo_documents("127.0.0.1", 7099))
    env = {"CALL_EVENTS_PUSH_URL": directory_notifier.url}
    _, explained = run(["explain", "070-4514-4801", "--relay", RELAY], env)
    code, body = run(["ring", "070-4514-4801", "--relay", RELAY], env)
    assert code == 0, body
    linkedid = body["linkedid"]
    assert linkedid.startswith("admin-test-")
    assert body["transport"] == f"push {directory_notifier.url}"
    assert body["expected"] == explained["rings"]
    expected_devices = {d for r in explained["rings"] for d in r["devices"]}
    assert expected_devices == set(DEMO_TOKENS)
    assert {(d["device"], d["push"]) for d in body["devices"]} == {
        (doc, "sent") for doc in DEMO_TOKENS
    }
    assert body["latency_ms"] is not None and body["latency_ms"] > 0
    assert body["ended"] is True and body["missing"] == []
    assert set(body["cancelled"]) == set(DEMO_TOKENS)

    # what the phones got: the incoming card for the test call, then a cancel, no missed call
    pushes = pushes_of(fcm, linkedid)
    incoming = [p for p in pushes if p["data"]["type"] == "incoming_call"]
    assert {p["token"] for p in incoming} == set(DEMO_TOKENS.values())
    assert {p["notification"]["body"] for p in incoming} == {"관리자 테스트"}
    assert {p["data"]["channel"] for p in incoming} == {"Admin/test-call"}
    cancels = eventually(
        lambda: (
            [p for p in pushes_of(fcm, linkedid) if p["data"]["type"] != "incoming_call"]
            if len(pushes_of(fcm, linkedid)) >= 6
            else None
        )
    )
    assert {p["data"]["type"] for p in cancels} == {"incoming_call_cancelled"}
    assert {p["token"] for p in cancels} == set(DEMO_TOKENS.values())

    assert {p["data"]["action"] for p in cancels} == {"call_ended"}

    # history: the test call is marked as one, and recognisable by its linkedid and channel
    history = {s.id: s.to_dict() for s in db.collection("call_history").stream()}
    assert set(history) == {linkedid, f"{linkedid}_demo-lee"}
    assert {h.get("test") for h in history.values()} == {True}
    assert {h["channel"] for h in history.values()} == {"Admin/test-call"}
    assert {h["linkedid"] for h in history.values()} == {linkedid}
    assert all(h["cancelled"] for h in history.values())


def test_ring_in_user_documents_mode_through_pubsub(db, fcm, notifier, call_events):
    write(db, company(7099, 7100))
    env = {"CALL_EVENTS_TOPIC": call_events, "TENANCY": "user_documents"}
    code, body = run(["ring", "07045144801", "--relay", RELAY, "--wait", "20"], env)
    assert code == 0, body
    assert body["transport"] == f"pubsub {call_events}"
    incoming = [p for p in pushes_of(fcm, body["linkedid"]) if p["data"]["type"] == "incoming_call"]
    assert {p["token"] for p in incoming} == EXPECTED_TOKENS
    assert {d["user"] for d in body["devices"]} == {"kim", "lee"}
    assert body["ended"] is True


def test_ring_sends_nothing_when_nobody_would_ring(db, fcm, directory_notifier):
    write(db, demo_documents("127.0.0.1", 7099))
    env = {"CALL_EVENTS_PUSH_URL": directory_notifier.url}
    code, body = run(["ring", "02-555-1234", "--relay", RELAY], env)
    assert code == 1
    assert body["sent"] is False and body["devices"] == []
    assert fcm.requests() == []
    out = io.StringIO()
    assert (
        main(
            ["ring", "02-555-1234", "--relay", RELAY], {"GOOGLE_CLOUD_PROJECT": PROJECT, **env}, out
        )
        == 1
    )
    assert "no test call sent" in out.getvalue()
