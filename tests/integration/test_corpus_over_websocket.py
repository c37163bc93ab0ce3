"""Every real capture replayed through a WebSocket relay into the running connector: the events it
publishes match the outcome table kept in tests/unit/test_corpus_outcomes.py, and two captures
interleaved as concurrent calls stay independent."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from devtools.demo_relay import DemoRelay
from functions.connector.app import Connector
from functions.core.call_event import CallEvent, Kind
from functions.settings import load_settings
from tests.corpus import capture_names, load_events, namespaced
from tests.support import LOOPBACK_RELAYS, eventually
from tests.unit.test_corpus_outcomes import INBOUND, Expected


class RecordingPublisher:
    def __init__(self) -> None:
        self.events: list[CallEvent] = []

    async def publish(self, event: CallEvent) -> None:
        self.events.append(event)

    async def close(self) -> None:
        pass


@pytest.fixture
async def replayer():
    relay = await DemoRelay().start()
    publisher = RecordingPublisher()
    settings = load_settings(
        {
            "GOOGLE_CLOUD_PROJECT": "corpus",
            "PORT": "0",
            "PBX_RELAYS": relay.url,
            "TRUNK_CONTEXT_PREFIXES": "voipgrid_in,trk",
            **LOOPBACK_RELAYS,
        }
    )
    connector = Connector(settings, publisher, firestore_client=None)
    stop = asyncio.Event()
    task = asyncio.create_task(connector.run(stop, host="127.0.0.1"))
    await relay.wait_for_clients(1, timeout=10)
    runtime = connector.relays[f"127.0.0.1:{relay.port}"]

    async def replay(events: list[dict[str, str]]) -> list[CallEvent]:
        before, sent = len(publisher.events), runtime.ingest.stats.frames + len(events)
        await relay.replay(events, server_name="corpus-pbx")
        await asyncio.to_thread(eventually, lambda: runtime.ingest.stats.frames >= sent, 20)
        return publisher.events[before:]

    yield replay
    stop.set()
    await asyncio.wait_for(task, 10)
    await relay.stop()


def assert_matches(events: list[CallEvent], want: Expected) -> None:
    kinds = [e.kind for e in events]
    assert kinds == [Kind.RINGING] + [Kind.ANSWERED] * (want.answered_at is not None) + [
        Kind.ENDED
    ] * (want.ended_at is not None)
    assert (events[0].dialled_number, events[0].caller_number) == (want.dialled, want.caller)
    for event in events[1:]:
        if event.kind is Kind.ANSWERED:
            assert event.answered_by == want.answered_by
        if event.kind is Kind.ENDED:
            assert (event.outcome, event.hangup_cause) == (want.outcome, want.cause)
    assert len({e.linkedid for e in events}) == 1


async def test_every_capture_over_the_wire(replayer):
    for name in capture_names():
        events = await replayer(load_events(name))
        if name in INBOUND:
            assert_matches(events, INBOUND[name])
        else:
            assert events == [], name  # internal, click-to-dial and originate calls ring nobody


async def test_interleaved_captures_stay_independent(replayer):
    a, b = "cacofonisk__queue__queue_simple", "cacofonisk__mobile__acceptance_reject"
    stream_a = [namespaced(e, "A-") for e in load_events(a)]
    stream_b = [namespaced(e, "B-") for e in load_events(b)]
    mixed = [e for pair in zip(stream_a, stream_b, strict=False) for e in pair]
    mixed += stream_a[len(stream_b) :] + stream_b[len(stream_a) :]
    events = await replayer(mixed)
    by_call: dict[str, list[CallEvent]] = defaultdict(list)
    for event in events:
        by_call[event.linkedid[:2]].append(event)
    assert set(by_call) == {"A-", "B-"}
    assert_matches(by_call["A-"], INBOUND[a])
    assert_matches(by_call["B-"], INBOUND[b])
