"""The connector's production publish path: the real google-cloud-pubsub client talking gRPC to
a local Publisher endpoint (no Pub/Sub emulator can be installed here), and from there the
Eventarc-shaped push into the notifier."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import grpc
import orjson
import pytest

from devtools.demo_data import seed_frame
from devtools.fake_pubsub import FakePubSubServer
from functions.adapters.event_publishers import PubSubPublisher
from functions.connector.app import Connector
from functions.core.call_event import CallEvent, Kind, parse_call_event
from functions.settings import load_settings
from tests.integration.conftest import PROJECT
from tests.integration.scenario import EXPECTED_TOKENS, company, write
from tests.support import eventually

TOPIC = f"projects/{PROJECT}/topics/call-events"


def same(a: CallEvent, b: CallEvent) -> bool:
    """Equal, with times compared to the microsecond the wire format carries."""
    untimed = replace(a, occurred_at=0, detected_at=0) == replace(b, occurred_at=0, detected_at=0)
    return untimed and abs(a.occurred_at - b.occurred_at) < 1e-5


def event(linkedid: str, kind: Kind = Kind.RINGING) -> CallEvent:
    now = time.time()
    return CallEvent(
        kind=kind,
        relay="127.0.0.1:7099",
        server_id=1,
        linkedid=linkedid,
        caller_number="01026132471",
        caller_name="김철수",
        dialled_number="07045144801",
        channel="PJSIP/x",
        occurred_at=now,
        detected_at=now,
    )


@pytest.fixture
def pubsub(monkeypatch):
    with FakePubSubServer(project=PROJECT) as server:
        # The client library reads the standard variable when it is constructed.
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.host)
        yield server


async def test_events_are_published_in_call_order_with_routing_attributes(pubsub):
    publisher = PubSubPublisher(TOPIC)
    ring = event("ps.1")
    answered = replace(ring, kind=Kind.ANSWERED, answered_by="1010")
    other = event("ps.2")
    for e in (ring, other, answered):
        await publisher.publish(e)
    await publisher.close()
    messages = pubsub.wait_for(3, timeout=10)
    assert {m.topic for m in messages} == {TOPIC}
    by_key: dict[str, list] = {}
    for m in messages:
        by_key.setdefault(m.ordering_key, []).append(m)
    got = [parse_call_event(m.data) for m in by_key[ring.call_key]]
    assert len(got) == 2 and same(got[0], ring) and same(got[1], answered)
    [alone] = [parse_call_event(m.data) for m in by_key[other.call_key]]
    assert same(alone, other)
    assert messages[0].attributes == {"kind": "ringing", "version": "1"}
    eventually(lambda: publisher.published == 3, 5)
    assert publisher.failed == 0


async def test_transient_publish_errors_are_retried_by_the_client(pubsub):
    pubsub.fail_next(2, code=grpc.StatusCode.UNAVAILABLE)
    publisher = PubSubPublisher(TOPIC)
    await publisher.publish(event("ps.retry"))
    await publisher.close()
    [message] = pubsub.wait_for(1, timeout=10)
    assert parse_call_event(message.data).linkedid == "ps.retry"
    eventually(lambda: publisher.published == 1, 5)


async def test_relay_to_phone_through_pubsub(db, notifier, fcm, relay, monkeypatch):
    """The `make dev` path: connector -> Pub/Sub (gRPC) -> push to the notifier -> FCM."""
    with FakePubSubServer(project=PROJECT, push_url=notifier.url) as server:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.host)
        write(db, company(relay.port, 1))
        settings = load_settings(
            {"GOOGLE_CLOUD_PROJECT": PROJECT, "PORT": "0", "CALL_EVENTS_TOPIC": "call-events"}
        )
        connector = Connector(settings, PubSubPublisher(settings.topic_path), db)
        stop = asyncio.Event()
        task = asyncio.create_task(connector.run(stop, host="127.0.0.1"))
        try:
            await relay.wait_for_clients(1, timeout=15)
            await relay.broadcast(orjson.dumps(seed_frame("ps.e2e", str(time.time()))))
            pushes = await asyncio.to_thread(fcm.wait_for, 3, 15)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        assert {m["token"] for m in pushes} == EXPECTED_TOKENS
        assert {m["data"]["linkedid"] for m in pushes} == {"ps.e2e"}
        deliveries = eventually(lambda: server.deliveries(), 5)
        assert deliveries[0].ordering_key.endswith("/1/ps.e2e") and deliveries[0].delivered
