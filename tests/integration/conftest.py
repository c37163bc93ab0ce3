"""Real local parts for integration tests, all on 127.0.0.1: Google's Firestore emulator (with
infra/firestore.rules loaded) and Pub/Sub emulator, the FCM HTTP v1 endpoint, the notifier under
functions-framework, an amiws-speaking relay, and the connector publishing through
google-cloud-pubsub to a push subscription that delivers to the notifier."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from google.cloud import firestore

from devtools.demo_relay import DemoRelay
from devtools.emulators import push_endpoint
from devtools.fake_fcm import FakeFcmServer
from functions.connector.adapters.event_publishers import PubSubPublisher
from functions.connector.app import Connector
from functions.settings import load_settings
from tests.support import (
    LOOPBACK_RELAYS,
    USER_DOCUMENTS,
    FirestoreEmulator,
    NotifierProcess,
    PubSubEmulator,
)

PROJECT = "demo-makecall-test"


_names = itertools.count(1)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory) -> Iterator[FirestoreEmulator]:
    log = tmp_path_factory.mktemp("emulators") / "firestore.log"
    emu = FirestoreEmulator(project=PROJECT, log_path=log).start()
    os.environ["FIRESTORE_EMULATOR_HOST"] = emu.host
    yield emu
    emu.stop()


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory) -> Iterator[PubSubEmulator]:
    log = tmp_path_factory.mktemp("emulators") / "pubsub.log"
    emu = PubSubEmulator(log_path=log).start()
    os.environ["PUBSUB_EMULATOR_HOST"] = emu.host  # google-cloud-pubsub reads it per client
    yield emu
    emu.stop()


@pytest.fixture
def call_events(pubsub_emulator, notifier) -> Iterator[str]:
    """A topic of this test's own and the push subscription Eventarc would make for the
    notifier's trigger: ordered, 10 s ack deadline. Deleted afterwards, so that no redelivery of
    one test's events reaches the next test."""
    n = next(_names)
    topic = pubsub_emulator.create_topic(PROJECT, f"call-events-{n}")
    subscription = pubsub_emulator.create_push_subscription(
        PROJECT, f"notifier-{n}", topic, push_endpoint(notifier.url, topic)
    )
    yield topic
    pubsub_emulator.delete_subscription(subscription)


@pytest.fixture(scope="session")
def fcm() -> Iterator[FakeFcmServer]:
    with FakeFcmServer() as server:
        yield server


@pytest.fixture(scope="session")
def notifier(emulator, fcm, tmp_path_factory) -> Iterator[NotifierProcess]:
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "FIRESTORE_EMULATOR_HOST": emulator.host,
        "FCM_ENDPOINT": fcm.url,
        "RING_WINDOW_SECONDS": "60",
        "LOG_LEVEL": "INFO",
        # Tests rewrite the same users between tests; the cache has its own tests
        # (test_recipient_cache.py).
        "RECIPIENT_CACHE_SECONDS": "0",
        **USER_DOCUMENTS,
    }
    proc = NotifierProcess(env, tmp_path_factory.mktemp("notifier") / "notifier.log").start()
    yield proc
    proc.stop()


@pytest.fixture
def db(emulator, fcm) -> firestore.Client:
    """A clean emulator and FCM record for every test."""
    emulator.reset()
    fcm.clear()
    return firestore.Client(project=PROJECT)


@pytest.fixture
async def relay() -> AsyncIterator[DemoRelay]:
    server = await DemoRelay().start()
    yield server
    await server.stop()


@pytest.fixture
async def connector(db, notifier, relay, call_events) -> AsyncIterator[Connector]:
    """The connector, finding the test relay through Firestore users (not PBX_RELAYS) and
    publishing to the Pub/Sub emulator, whose push subscription delivers to the notifier."""
    settings = load_settings(
        {
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "CALL_EVENTS_TOPIC": call_events,
            # cacofonisk's captures come in on voipgrid_in
            "TRUNK_CONTEXT_PREFIXES": "trk,voipgrid_in",
            "PORT": "0",
            **LOOPBACK_RELAYS,
            **USER_DOCUMENTS,
        }
    )
    publisher = PubSubPublisher(settings.topic_path)
    conn = Connector(settings, publisher, db)
    stop = asyncio.Event()
    task = asyncio.create_task(conn.run(stop, host="127.0.0.1"))
    yield conn
    stop.set()
    await asyncio.wait_for(task, 10)
