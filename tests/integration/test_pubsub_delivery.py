"""The production path of a call event, on Google's Pub/Sub emulator: the connector's
google-cloud-pubsub publisher (ordering key = the call), a push subscription like the one Eventarc
makes for the notifier's trigger, and the notifier under functions-framework. Pub/Sub delivers at
least once: a 5xx answer or no answer within the ack deadline means the message comes again, and
the phones must still see each push exactly once, in the call's order."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import orjson
import pytest

from devtools.demo_data import seed_frame
from devtools.emulators import push_endpoint
from functions.connector.adapters.event_publishers import PubSubPublisher
from functions.core.call_event import CallEvent, Kind, parse_call_event
from tests.integration.conftest import PROJECT
from tests.integration.scenario import EXPECTED_TOKENS, company, write
from tests.support import eventually, ringing_event

_names = itertools.count(1)


def same(a: CallEvent, b: CallEvent) -> bool:
    """Equal, with times compared to the microsecond the wire format carries."""
    untimed = replace(a, occurred_at=0, detected_at=0) == replace(b, occurred_at=0, detected_at=0)
    return untimed and abs(a.occurred_at - b.occurred_at) < 1e-5


def event(linkedid: str, relay_port: int = 7099, kind: Kind = Kind.RINGING) -> CallEvent:
    return ringing_event(linkedid, relay_port, kind=kind)


class Front:
    """An HTTP hop in front of the notifier, on loopback: answers the first deliveries of each
    message with a scripted fault (a 503, or silence past the ack deadline) and forwards
    everything else. Records every delivery attempt, keyed by the call's linkedid."""

    def __init__(self, target: str, faults: list[str]) -> None:
        self.target = target
        self.faults = faults  # per message, in order: "503" or "hang"
        self.attempts: dict[str, list[str]] = {}
        self.lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                linkedid = front.linkedid(body)
                with front.lock:
                    seen = front.attempts.setdefault(linkedid, [])
                    fault = front.faults[len(seen)] if len(seen) < len(front.faults) else "pass"
                    seen.append(fault)
                if fault == "503":
                    self._answer(503, b"unavailable")
                    return
                if fault == "hang":
                    time.sleep(front.hang_seconds)  # past the ack deadline: Pub/Sub gives up
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = httpx.post(front.target, content=body, headers=headers, timeout=30)
                self._answer(answer.status_code, answer.content)

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.hang_seconds = 0.0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def linkedid(body: bytes) -> str:
        try:
            data = orjson.loads(body)["message"]["data"]
            return parse_call_event(base64.b64decode(data)).linkedid
        except Exception:
            return "?"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def topic(pubsub_emulator) -> str:
    return pubsub_emulator.create_topic(PROJECT, f"delivery-{next(_names)}")


@pytest.fixture
def subscribe(pubsub_emulator, topic) -> Iterator:
    """Push subscriptions of this test, deleted afterwards (no redelivery leaks into others)."""
    made: list[str] = []

    def make(endpoint: str, **options) -> str:
        name = pubsub_emulator.create_push_subscription(
            PROJECT, f"sub-{next(_names)}", topic, endpoint, **options
        )
        made.append(name)
        return name

    yield make
    for name in made:
        pubsub_emulator.delete_subscription(name)


async def publish(topic: str, *events: CallEvent) -> PubSubPublisher:
    publisher = PubSubPublisher(topic)
    for e in events:
        await publisher.publish(e)
    await publisher.close()  # flushes
    return publisher


def pushes_of(fcm, linkedid: str) -> list[dict]:
    return [m for m in fcm.sent_messages() if m.get("data", {}).get("linkedid") == linkedid]


async def test_events_are_published_in_call_order_with_routing_attributes(pubsub_emulator, topic):
    sub = pubsub_emulator.create_pull_subscription(PROJECT, f"pull-{next(_names)}", topic)
    ring = event("ps.1")
    answered = replace(ring, kind=Kind.ANSWERED, answered_by="1010")
    other = event("ps.2")
    publisher = await publish(topic, ring, other, answered)
    await asyncio.to_thread(eventually, lambda: publisher.published == 3, 10)
    assert publisher.failed == 0

    def pulled_all() -> list[dict]:
        got.extend(pubsub_emulator.pull(sub))
        return got if len(got) >= 3 else []

    got: list[dict] = []
    messages = await asyncio.to_thread(eventually, pulled_all, 10)
    by_key: dict[str, list[CallEvent]] = {}
    for m in messages:
        by_key.setdefault(m.get("orderingKey", ""), []).append(
            parse_call_event(base64.b64decode(m["data"]))
        )
    assert set(by_key) == {ring.call_key, other.call_key}
    first, second = by_key[ring.call_key]
    assert same(first, ring) and same(second, answered)
    assert same(by_key[other.call_key][0], other)
    assert messages[0]["attributes"] == {"kind": "ringing", "version": "1"}


class GatedProxy:
    """A TCP forwarder on loopback that refuses connections until opened: Pub/Sub unreachable
    for a while, then back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.open = threading.Event()
        self.refused = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                self.refused += 1
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stopped = True
        self.listener.close()


async def test_a_publish_during_a_short_pubsub_outage_is_retried_by_the_client(
    pubsub_emulator, topic, monkeypatch
):
    sub = pubsub_emulator.create_pull_subscription(PROJECT, f"pull-{next(_names)}", topic)
    proxy = GatedProxy(pubsub_emulator.port)
    try:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{proxy.port}")
        publisher = PubSubPublisher(topic)
        await publisher.publish(event("ps.outage"))
        await asyncio.to_thread(eventually, lambda: proxy.refused >= 1, 10)
        assert publisher.published == 0
        proxy.open.set()  # Pub/Sub is back
        await asyncio.to_thread(eventually, lambda: publisher.published == 1, 20)
        await publisher.close()
    finally:
        proxy.close()
    [message] = await asyncio.to_thread(eventually, lambda: pubsub_emulator.pull(sub), 10)
    assert parse_call_event(base64.b64decode(message["data"])).linkedid == "ps.outage"
    assert publisher.failed == 0


async def test_relay_to_phone_through_pubsub(connector, relay, db, fcm, notifier):
    """The connector fixture's path: relay → connector → Pub/Sub emulator → push → notifier."""
    write(db, company(relay.port, 1))
    await relay.wait_for_clients(1, timeout=15)
    await relay.broadcast(orjson.dumps(seed_frame("ps.e2e", str(time.time()))))
    pushes = await asyncio.to_thread(fcm.wait_for, 3, 15)
    assert {m["token"] for m in pushes} == EXPECTED_TOKENS
    assert {m["data"]["linkedid"] for m in pushes} == {"ps.e2e"}
    assert isinstance(connector.publisher, PubSubPublisher)
    assert connector.publisher.published >= 1


@pytest.mark.parametrize("fault", ["503", "hang"])
async def test_a_failed_delivery_comes_again_and_each_phone_still_rings_once_in_call_order(
    db, fcm, notifier, topic, subscribe, fault
):
    """A 5xx answer, or none within the ack deadline: Pub/Sub redelivers. The answered event of
    the same call waits behind the ring (ordering key), and no phone rings twice."""
    write(db, company(7099, 1))
    front = Front(push_endpoint(notifier.url, topic), faults=[fault])
    ack_deadline = 4  # seconds; generous, so that a slow, loaded machine is not a fault of its own
    front.hang_seconds = ack_deadline + 1.5
    try:
        subscribe(
            push_endpoint(front.url, topic),
            ack_deadline_seconds=ack_deadline,
            min_backoff_seconds=0.2,
            max_backoff_seconds=1,
        )
        linkedid = f"ps.redeliver.{fault}"
        ring = event(linkedid)
        answered = replace(ring, kind=Kind.ANSWERED, answered_by="1010")
        await publish(topic, ring, answered)
        messages = await asyncio.to_thread(
            eventually, lambda: len(pushes_of(fcm, linkedid)) >= 6 and pushes_of(fcm, linkedid), 60
        )
        await asyncio.sleep(ack_deadline + 2)  # any further redelivery would show by now
        messages = pushes_of(fcm, linkedid)
    finally:
        front.close()
    kinds = [m["data"]["type"] for m in messages]
    assert sorted(m["token"] for m in messages if m["data"]["type"] == "incoming_call") == sorted(
        EXPECTED_TOKENS
    )
    assert kinds.count("incoming_call") == 3 and kinds.count("incoming_call_cancelled") == 3
    # in call order: every ring went out before the first cancel
    assert kinds.index("incoming_call_cancelled") > max(
        i for i, k in enumerate(kinds) if k == "incoming_call"
    )
    attempts = front.attempts[linkedid]
    assert attempts[0] == fault and len(attempts) >= 3  # the ring twice, then the answered event


async def test_closing_with_a_publish_still_pending_does_not_hang(topic, monkeypatch):
    """SIGTERM while Pub/Sub cannot be reached: the connector must still stop within Cloud Run's
    grace period. (The client cancels the pending batch inside stop(); a done-callback that
    resumed the ordering key from there deadlocked the shutdown.)"""
    proxy = GatedProxy(1)  # never opened: every connection is refused
    try:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{proxy.port}")
        publisher = PubSubPublisher(topic)
        first = event("ps.pending.1")
        await publisher.publish(first)
        await asyncio.to_thread(eventually, lambda: proxy.refused >= 1, 10)  # batch 1 in flight
        # the call's next event waits in a second batch behind it, which stop() cancels
        await publisher.publish(replace(first, kind=Kind.ANSWERED, answered_by="1010"))
        started = time.monotonic()
        await asyncio.wait_for(publisher.close(), 20)
        assert time.monotonic() - started < 20
        assert publisher.published == 0
    finally:
        proxy.close()
