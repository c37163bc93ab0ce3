"""PubSubPublisher.close(): google-cloud-pubsub's stop() commits only the first batch of each
ordering key and cancels the rest (ordered_sequencer.stop), so a shutdown right after a ring
would lose the call's answered event. close() waits for what is queued, then stops.

A stand-in for the client, because the cancellation depends on batch timing that a real
emulator cannot make repeatable: its stop() does what the library's does to queued batches."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future

from functions.connector.adapters.event_publishers import PubSubPublisher
from functions.core.call_event import CallEvent, Kind


def event(kind: Kind) -> CallEvent:
    now = time.time()
    return CallEvent(
        kind=kind,
        relay="pbx:7099",
        server_id=1,
        linkedid="close.1",
        caller_number="01026132471",
        caller_name="",
        dialled_number="07045144801",
        channel="PJSIP/x",
        occurred_at=now,
        detected_at=now,
    )


class QueuingClient:
    """Publishes complete `delay` seconds after they are made, one after another (one ordering
    key); stop() cancels every publish not complete yet, as the library does to the batches
    behind a key's first."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.futures: list[Future] = []
        self.stopped_with_pending = 0

    def publish(self, topic: str, data: bytes, ordering_key: str = "", **attrs: str) -> Future:
        future: Future = Future()
        due = self.delay * (len(self.futures) + 1)
        self.futures.append(future)
        timer = threading.Timer(due, lambda: future.done() or future.set_result("id"))
        timer.daemon = True
        timer.start()
        return future

    def stop(self) -> None:
        pending = [f for f in self.futures if not f.done()]
        self.stopped_with_pending = len(pending)
        for future in pending:
            future.set_exception(RuntimeError("batch cancelled: client stopped"))

    def resume_publish(self, topic: str, ordering_key: str) -> None:
        pass


def publisher_with(client: QueuingClient) -> PubSubPublisher:
    return PubSubPublisher("projects/p/topics/t", client=client)


async def test_close_waits_for_a_calls_queued_events_before_stopping():
    client = QueuingClient(delay=0.2)
    publisher = publisher_with(client)
    await publisher.publish(event(Kind.RINGING))
    await publisher.publish(event(Kind.ANSWERED))
    await publisher.close()
    assert client.stopped_with_pending == 0
    assert (publisher.published, publisher.failed) == (2, 0)


async def test_close_gives_up_after_its_timeout_and_counts_the_rest_as_failed():
    client = QueuingClient(delay=5.0)
    publisher = publisher_with(client)
    await publisher.publish(event(Kind.RINGING))
    started = time.monotonic()
    await asyncio.wait_for(publisher.close(timeout=0.3), 5)
    assert time.monotonic() - started < 2
    assert client.stopped_with_pending == 1 and publisher.failed == 1
