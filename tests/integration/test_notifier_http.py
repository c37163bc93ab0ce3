"""The notifier over HTTP exactly as Cloud Functions runs it: malformed input is acknowledged
(2xx, so Pub/Sub does not redeliver it forever) and logged, and sends nothing."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from functions.connector.adapters.eventarc_envelope import pubsub_cloudevent
from tests.integration.conftest import PROJECT
from tests.support import eventually


def post_raw_message(notifier, data: bytes) -> httpx.Response:
    from datetime import UTC, datetime

    headers, body = pubsub_cloudevent(
        data,
        {"kind": "ringing"},
        project=PROJECT,
        topic="call-events",
        message_id=uuid.uuid4().hex,
        publish_time=datetime.now(UTC),
    )
    return httpx.post(notifier.url, headers=headers, content=body, timeout=10)


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        json.dumps({"version": 1, "kind": "ringing"}).encode(),
        json.dumps({"version": 99}).encode(),
    ],
)
def test_malformed_call_events_are_acknowledged_and_logged(db, notifier, fcm, data):
    response = post_raw_message(notifier, data)
    assert response.status_code == 200
    eventually(
        lambda: any("malformed call event dropped" in line for line in notifier.log_lines()), 10
    )
    assert fcm.sent_messages() == []


def test_cloudevent_without_pubsub_message_is_acknowledged(db, notifier, fcm):
    headers = {
        "ce-id": "1",
        "ce-source": "//test",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-specversion": "1.0",
        "content-type": "application/json",
    }
    response = httpx.post(notifier.url, headers=headers, content=b'{"message": {"data": 5}}')
    assert response.status_code == 200
    bad_b64 = {"message": {"data": "%%%"}}
    response = httpx.post(notifier.url, headers=headers, content=json.dumps(bad_b64).encode())
    assert response.status_code == 200
    assert fcm.sent_messages() == []


def test_stale_event_rings_nobody(db, notifier, fcm):
    from functions.core.call_event import CallEvent, Kind

    old = time.time() - 600
    event = CallEvent(
        kind=Kind.RINGING,
        relay="127.0.0.1:1",
        server_id=1,
        linkedid="stale.1",
        caller_number="01026132471",
        caller_name="",
        dialled_number="07045144801",
        channel="PJSIP/x",
        occurred_at=old,
        detected_at=old,
    )
    assert post_raw_message(notifier, event.to_json()).status_code == 200
    line = eventually(
        lambda: next(
            (entry for entry in notifier.log_lines() if "stale.1" in entry and "handled" in entry),
            None,
        ),
        10,
    )
    assert json.loads(line)["dropped"] == "stale"
