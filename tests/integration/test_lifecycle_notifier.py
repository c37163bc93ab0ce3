"""Ring, then stop ringing: call events delivered to the notifier over HTTP as Eventarc would,
checked at the local FCM endpoint and in the Firestore emulator."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest

from functions.connector.adapters.eventarc_envelope import pubsub_cloudevent
from functions.core.call_event import CallEvent, Kind
from tests.integration.conftest import PROJECT
from tests.integration.scenario import EXPECTED_TOKENS, company, write
from tests.support import eventually, ringing_event

RELAY_PORT = 7001


def ringing(linkedid: str) -> CallEvent:
    return ringing_event(linkedid, RELAY_PORT)


def deliver(notifier, event: CallEvent) -> dict:
    headers, body = pubsub_cloudevent(
        event.to_json(),
        event.attributes(),
        project=PROJECT,
        topic="call-events",
        message_id=uuid.uuid4().hex,
        publish_time=datetime.now(UTC),
        ordering_key=event.call_key,
    )
    response = httpx.post(notifier.url, headers=headers, content=body, timeout=30)
    assert response.status_code == 200, response.text
    return summary(notifier, event)


def summary(notifier, event: CallEvent) -> dict:
    def find():
        for line in reversed(notifier.log_lines()):
            if '"call event handled"' in line and event.event_id in line:
                return json.loads(line)
        return None

    return eventually(find, 10)


def pushes_of(fcm, linkedid: str, kind: str) -> list[dict]:
    out = []
    for m in fcm.sent_messages():
        data = m.get("data", {})
        if data.get("type") == kind and linkedid in (
            data.get("linkedid"),
            data.get("missed_linkedid"),
        ):
            out.append(m)
    return out


@pytest.fixture
def company_db(db):
    write(db, company(RELAY_PORT, 1))
    return db


def test_desk_phone_answer_cancels_every_rung_device_once(company_db, notifier, fcm):
    call = ringing("life.answer")
    deliver(notifier, call)
    assert {m["token"] for m in pushes_of(fcm, "life.answer", "incoming_call")} == EXPECTED_TOKENS

    answered = replace(
        call, kind=Kind.ANSWERED, answered_by="1010", occurred_at=call.occurred_at + 4
    )
    line = deliver(notifier, answered)
    cancels = pushes_of(fcm, "life.answer", "incoming_call_cancelled")
    assert {m["token"] for m in cancels} == EXPECTED_TOKENS
    assert {m["data"]["action"] for m in cancels} == {"answered_elsewhere"}
    assert "notification" not in cancels[0]  # data only
    assert cancels[0]["apns"]["headers"]["apns-push-type"] == "background"
    assert line["results"] == {"cancel_sent": 3}

    doc = company_db.collection("call_history").document("life.answer").get().to_dict()
    assert doc["cancelled"] is True and doc["cancelledBy"] == "answered_elsewhere"
    assert doc["status"] == "device_answered" and doc["answeredBy"] == "1010"
    lee = company_db.collection("call_history").document("life.answer_lee").get().to_dict()
    assert lee["cancelled"] is True and lee["status"] == "device_answered"

    ended = replace(
        answered,
        kind=Kind.ENDED,
        outcome="answered",
        hangup_cause="16",
        occurred_at=call.occurred_at + 64,
    )
    deliver(notifier, ended)
    deliver(notifier, answered)  # a redelivery changes nothing
    assert len(pushes_of(fcm, "life.answer", "incoming_call_cancelled")) == 3
    assert pushes_of(fcm, "life.answer", "missed_call") == []
    doc = company_db.collection("call_history").document("life.answer").get().to_dict()
    assert doc["duration"] == 60 and doc["outcome"] == "answered"


def test_caller_gives_up_cancel_and_missed_notification(company_db, notifier, fcm):
    call = ringing("life.abandon")
    deliver(notifier, call)
    ended = replace(
        call,
        kind=Kind.ENDED,
        outcome="caller_abandoned",
        hangup_cause="16",
        occurred_at=call.occurred_at + 9,
    )
    line = deliver(notifier, ended)
    assert line["results"] == {"cancel_sent": 3, "missed_sent": 3}
    cancels = pushes_of(fcm, "life.abandon", "incoming_call_cancelled")
    assert {m["data"]["action"] for m in cancels} == {"caller_hung_up"}
    missed = pushes_of(fcm, "life.abandon", "missed_call")
    incoming = pushes_of(fcm, "life.abandon", "incoming_call")
    assert {m["token"] for m in missed} == EXPECTED_TOKENS
    assert missed[0]["notification"]["title"] == "부재중 전화"
    assert (
        missed[0]["android"]["notification"]["tag"]
        == (incoming[0]["android"]["notification"]["tag"])
    )
    assert not {"linkedid", "call_type"} <= set(missed[0]["data"])
    doc = company_db.collection("call_history").document("life.abandon").get().to_dict()
    assert doc["status"] == "missed" and doc["cancelled"] is True
    assert doc["outcome"] == "caller_abandoned" and "duration" not in doc
    deliver(notifier, ended)
    assert len(pushes_of(fcm, "life.abandon", "missed_call")) == 3


def test_redelivered_ringing_event_rings_no_device_twice(company_db, notifier, fcm):
    call = ringing("life.dup")
    deliver(notifier, call)
    second = deliver(notifier, call)
    assert len(pushes_of(fcm, "life.dup", "incoming_call")) == 3
    assert second["skipped"]["already_served"] == 3 and second["results"] == {}


def test_answered_before_ringing_is_processed_rings_nobody(company_db, notifier, fcm):
    call = ringing("life.race")
    deliver(notifier, replace(call, kind=Kind.ANSWERED, answered_by="1010"))
    line = deliver(notifier, call)
    assert line["dropped"] == "call_already_over"
    assert pushes_of(fcm, "life.race", "incoming_call") == []


def test_call_that_ends_while_the_ring_is_being_sent_is_cancelled_at_once(
    company_db, notifier, fcm
):
    import threading

    call = ringing("life.late")
    fcm.set_delay(2.0)  # FCM is slow: the caller hangs up while the ring is in flight
    try:
        ring = threading.Thread(target=deliver, args=(notifier, call))
        ring.start()
        time.sleep(0.8)  # lookups take tens of ms; the FCM answers take 2 s
        assert fcm.sent_messages() == []
        ended = replace(call, kind=Kind.ENDED, outcome="caller_abandoned")
        closing = deliver(notifier, ended)
        assert closing["results"] == {}  # nothing was delivered yet, so nothing to cancel
        ring.join(20)
    finally:
        fcm.set_delay(0)
    line = summary(notifier, call)
    assert line["action"] == "caller_hung_up"
    assert line["results"] == {"incoming_sent": 3, "cancel_sent": 3, "missed_sent": 3}
    cancels = pushes_of(fcm, "life.late", "incoming_call_cancelled")
    assert {m["token"] for m in cancels} == EXPECTED_TOKENS
    doc = company_db.collection("call_history").document("life.late").get().to_dict()
    assert doc["cancelled"] is True and doc["outcome"] == "caller_abandoned"


def test_fcm_unavailable_twice_then_ok_delivers_once(company_db, notifier, fcm):
    from devtools.fake_fcm import Fault

    fcm.script(
        "tok-lee",
        [
            Fault(status=503, error_code="UNAVAILABLE", retry_after=1),
            Fault(status=503, error_code="UNAVAILABLE"),
        ],
    )
    line = deliver(notifier, ringing("fault.503"))
    assert line["results"] == {"incoming_sent": 3} and line["attempts"] == 3
    attempts = [r for r in fcm.requests() if r["target"] == "tok-lee"]
    assert [r["status"] for r in attempts] == [503, 503, 200]
    assert attempts[1]["time"] - attempts[0]["time"] >= 0.9  # Retry-After: 1 was honoured
    assert len(pushes_of(fcm, "fault.503", "incoming_call")) == 3


def test_dead_token_is_deleted_and_other_devices_still_ring(company_db, notifier, fcm):
    from tests.integration.scenario import device

    company_db.collection("fcm_tokens").document("lee_b_Android").set(
        device("lee", "dead-token-of-an-uninstalled-app")
    )
    line = deliver(notifier, ringing("fault.dead"))
    assert line["results"] == {"incoming_sent": 3, "incoming_dead_token": 1}
    assert line["pruned"] == 1
    assert not company_db.collection("fcm_tokens").document("lee_b_Android").get().exists
    assert company_db.collection("fcm_tokens").document("lee_a_Android").get().exists
    assert {m["token"] for m in pushes_of(fcm, "fault.dead", "incoming_call")} == EXPECTED_TOKENS


def test_concurrent_duplicate_deliveries_ring_each_device_once(company_db, notifier, fcm):
    """Pub/Sub may deliver a message again while the first delivery still runs, and a takeover
    can publish a call twice: eight copies at once still ring each device once."""
    from concurrent.futures import ThreadPoolExecutor

    call = ringing("life.concurrent")
    copies = [replace(call, detected_at=call.detected_at + i * 0.001) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda e: deliver(notifier, e), copies))

    def summaries() -> list[dict]:
        found = [
            json.loads(line)
            for line in notifier.log_lines()
            if '"call event handled"' in line and call.event_id in line
        ]
        return found if len(found) == 8 else []

    lines = eventually(summaries, 10)
    pushes = pushes_of(fcm, "life.concurrent", "incoming_call")
    assert sorted(m["token"] for m in pushes) == sorted(EXPECTED_TOKENS)
    assert sum(line["results"].get("incoming_sent", 0) for line in lines) == 3
