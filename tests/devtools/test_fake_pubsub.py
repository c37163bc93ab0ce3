"""The fake Pub/Sub Publisher, driven by the real PublisherClient."""

from __future__ import annotations

import base64
import json
import logging
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from cloudevents.http import from_http
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from devtools.fake_pubsub import FakePubSubServer

REPO = Path(__file__).resolve().parents[2]
TOPIC = "projects/demo/topics/call-events"


class Receiver:
    """An HTTP endpoint on port 0 answering scripted statuses (then 204), recording POSTs."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[float, dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.received.append((time.monotonic(), dict(self.headers), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    yield rx
    rx.close()


@pytest.fixture
def publisher_for(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., pubsub_v1.PublisherClient]]:
    clients: list[pubsub_v1.PublisherClient] = []

    def make(host: str, *, ordering: bool = True) -> pubsub_v1.PublisherClient:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host)  # read at construction
        options = pubsub_v1.types.PublisherOptions(enable_message_ordering=ordering)
        clients.append(pubsub_v1.PublisherClient(publisher_options=options))
        return clients[-1]

    yield make
    for client in clients:
        client.stop()
        client.transport.close()


def test_publish_with_ordering_key_and_attributes_is_recorded_exactly(publisher_for):
    with FakePubSubServer() as fake:
        publisher = publisher_for(fake.host)
        before = datetime.now(UTC)
        first = publisher.publish(TOPIC, b'{"event":"ring"}', ordering_key="call-1", kind="ring")
        second = publisher.publish(TOPIC, b"\x00\xff", ordering_key="call-1", kind="hangup", n="2")
        ids = [first.result(timeout=10), second.result(timeout=10)]

        recorded = fake.wait_for(2, timeout=5)
        assert [
            (m.topic, m.data, m.attributes, m.ordering_key, m.message_id) for m in recorded
        ] == [
            (TOPIC, b'{"event":"ring"}', {"kind": "ring"}, "call-1", ids[0]),
            (TOPIC, b"\x00\xff", {"kind": "hangup", "n": "2"}, "call-1", ids[1]),
        ]
        assert ids[0].isdigit() and int(ids[1]) > int(ids[0])
        for message in recorded:
            assert before <= message.publish_time <= datetime.now(UTC)
            assert message.publish_time.tzinfo is UTC
        assert fake.topics() == [TOPIC]  # auto_create_topics=True by default


def test_missing_topic_is_not_found_until_created(publisher_for):
    with FakePubSubServer(auto_create_topics=False) as fake:
        publisher = publisher_for(fake.host, ordering=False)
        with pytest.raises(gexc.NotFound):
            publisher.publish(TOPIC, b"x").result(timeout=10)
        with pytest.raises(gexc.NotFound):
            publisher.get_topic(topic=TOPIC)

        assert publisher.create_topic(name=TOPIC).name == TOPIC
        assert publisher.get_topic(topic=TOPIC).name == TOPIC
        with pytest.raises(gexc.AlreadyExists):
            publisher.create_topic(name=TOPIC)
        with pytest.raises(gexc.InvalidArgument):
            publisher.create_topic(name="projects/demo/topics/x")  # too short a name
        assert publisher.publish(TOPIC, b"x").result(timeout=10)
        with pytest.raises(gexc.MethodNotImplemented):
            publisher.list_topics(project="projects/demo")
        assert len(fake.messages()) == 1


def test_unavailable_is_retried_by_the_client_itself(publisher_for):
    with FakePubSubServer() as fake:
        publisher = publisher_for(fake.host)
        fake.fail_next(2)
        message_id = publisher.publish(TOPIC, b"x", ordering_key="k").result(timeout=10)
        assert fake.calls() == [
            ("Publish", "UNAVAILABLE"),
            ("Publish", "UNAVAILABLE"),
            ("Publish", "OK"),
        ]
        assert [m.message_id for m in fake.messages()] == [message_id]


def test_non_retryable_errors_reach_the_caller(publisher_for):
    with FakePubSubServer() as fake:
        publisher = publisher_for(fake.host, ordering=False)
        fake.fail_next(1, code=grpc.StatusCode.PERMISSION_DENIED)
        with pytest.raises(gexc.PermissionDenied):
            publisher.publish(TOPIC, b"x").result(timeout=10)
        assert fake.calls() == [("Publish", "PERMISSION_DENIED")]
        with pytest.raises(gexc.InvalidArgument):  # neither data nor attributes
            publisher.publish(TOPIC, b"").result(timeout=10)
        assert fake.messages() == []


def test_push_delivers_eventarc_cloudevents_in_key_order_with_retries(publisher_for):
    rx = Receiver(statuses=[500, 500])  # then 204
    try:
        with FakePubSubServer(push_url=rx.url, subscription="notifier-sub") as fake:
            publisher = publisher_for(fake.host)
            ids = [
                publisher.publish(TOPIC, b"first", ordering_key="call-1", kind="ring").result(10),
                publisher.publish(TOPIC, b"second", ordering_key="call-1", kind="end").result(10),
            ]
            deliveries = fake.wait_for_deliveries(2, timeout=10)
    finally:
        rx.close()

    assert [(d.message_id, d.attempts, d.delivered) for d in deliveries] == [
        (ids[0], [500, 500, 204], True),
        (ids[1], [204], True),
    ]
    events = [from_http(headers, body) for _, headers, body in rx.received]
    assert [e["id"] for e in events] == [ids[0], ids[0], ids[0], ids[1]]
    arrivals = [at for at, _, _ in rx.received]
    assert arrivals[1] - arrivals[0] >= 0.09 and arrivals[2] - arrivals[1] >= 0.19  # backoff

    event = events[0]
    assert event["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert event["source"] == "//pubsub.googleapis.com/projects/demo/topics/call-events"
    message = event.data["message"]
    assert base64.b64decode(message["data"]) == b"first"
    assert message["attributes"] == {"kind": "ring"}
    assert message["orderingKey"] == "call-1"
    assert message["messageId"] == message["message_id"] == ids[0]
    assert event.data["subscription"] == "projects/demo/subscriptions/notifier-sub"
    assert base64.b64decode(events[3].data["message"]["data"]) == b"second"


def test_push_gives_up_after_bounded_attempts_and_moves_on(
    publisher_for, caplog: pytest.LogCaptureFixture
):
    rx = Receiver(statuses=[503, 503, 503])  # then 204
    try:
        with FakePubSubServer(push_url=rx.url, push_max_attempts=3) as fake:
            publisher = publisher_for(fake.host)
            with caplog.at_level(logging.WARNING, logger="devtools.fake_pubsub"):
                publisher.publish(TOPIC, b"a", ordering_key="k").result(10)
                publisher.publish(TOPIC, b"b", ordering_key="k").result(10)
                deliveries = fake.wait_for_deliveries(2, timeout=10)
    finally:
        rx.close()
    assert [(d.attempts, d.delivered) for d in deliveries] == [
        ([503, 503, 503], False),
        ([204], True),
    ]
    assert "gave up" in caplog.text


def test_push_to_a_dead_endpoint_records_transport_errors(publisher_for, receiver: Receiver):
    dead_url = receiver.url
    receiver.close()  # nothing listens there any more
    with FakePubSubServer(push_url=dead_url, push_max_attempts=2) as fake:
        publisher_for(fake.host).publish(TOPIC, b"a").result(10)
        [delivery] = fake.wait_for_deliveries(1, timeout=10)
    assert not delivery.delivered
    assert len(delivery.attempts) == 2 and all(isinstance(a, str) for a in delivery.attempts)


def test_wait_for_times_out():
    with FakePubSubServer() as fake:
        with pytest.raises(TimeoutError):
            fake.wait_for(1, timeout=0.05)
        with pytest.raises(TimeoutError):
            fake.wait_for_deliveries(1, timeout=0.05)


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output from the CLI in time"
    return proc.stdout.readline()


def test_cli_prints_ready_line_and_publishes_and_stops_on_sigterm(publisher_for):
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.fake_pubsub", "--port", "0", "--topic", TOPIC],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        ready = json.loads(_read_line(proc, 10))
        assert ready["env"]["PUBSUB_EMULATOR_HOST"] == ready["host"]
        publisher = publisher_for(ready["host"], ordering=False)
        assert publisher.get_topic(topic=TOPIC).name == TOPIC
        message_id = publisher.publish(TOPIC, b"hello").result(timeout=10)
        line = _read_line(proc, 5)
        assert TOPIC in line and message_id in line and "hello" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
