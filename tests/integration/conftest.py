"""Real local parts for integration tests: Firestore emulator, FCM HTTP v1 endpoint, the notifier
under functions-framework, an amiws-speaking relay and the connector, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from google.cloud import firestore

from devtools.demo_relay import DemoRelay
from devtools.fake_fcm import FakeFcmServer
from functions.adapters.event_publishers import PushPublisher
from functions.connector.app import Connector
from functions.settings import load_settings
from tests.support import FirestoreEmulator, NotifierProcess

PROJECT = "demo-makecall-test"


@pytest.fixture(scope="session")
def emulator() -> Iterator[FirestoreEmulator]:
    emu = FirestoreEmulator().start()
    os.environ["FIRESTORE_EMULATOR_HOST"] = emu.host
    yield emu
    emu.stop()


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
async def connector(db, notifier, relay) -> AsyncIterator[Connector]:
    """The connector, finding the test relay through Firestore users (not PBX_RELAYS) and
    delivering to the notifier as Eventarc would."""
    settings = load_settings(
        {
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "CALL_EVENTS_PUSH_URL": notifier.url,
            # cacofonisk's captures come in on voipgrid_in
            "TRUNK_CONTEXT_PREFIXES": "trk,voipgrid_in",
            "PORT": "0",
        }
    )
    publisher = PushPublisher(notifier.url, PROJECT, settings.topic_id)
    conn = Connector(settings, publisher, db)
    stop = asyncio.Event()
    task = asyncio.create_task(conn.run(stop, host="127.0.0.1"))
    yield conn
    stop.set()
    await asyncio.wait_for(task, 10)
