"""Where the connector's call events go: Pub/Sub (production) or an HTTP push URL (local runs).

Both keep the events of one call in order (Pub/Sub ordering key = the call) and never block the
relay readers: `publish()` enqueues and returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from functions.core.call_event import CallEvent
from functions.log import fields

log = logging.getLogger("connector.publish")
# Events handed to the transport and not yet confirmed. Past this, publish() waits: the relay
# readers stop reading until Pub/Sub catches up, instead of memory growing without end.
MAX_IN_FLIGHT = 1000
# How long close() waits for queued events: inside the connector's 8 s shutdown budget.
CLOSE_TIMEOUT = 6.0


class EventPublisher(Protocol):
    async def publish(self, event: CallEvent) -> None: ...
    async def close(self) -> None: ...


def _ordered_client() -> Any:
    from google.cloud import pubsub_v1
    from google.cloud.pubsub_v1.types import BatchSettings, PublisherOptions

    return pubsub_v1.PublisherClient(
        # A ringing call cannot wait for a batch to fill: flush after 1 ms.
        batch_settings=BatchSettings(max_messages=100, max_latency=0.001),
        publisher_options=PublisherOptions(enable_message_ordering=True),
    )


class PubSubPublisher:
    """google-cloud-pubsub with message ordering; honours PUBSUB_EMULATOR_HOST like the library."""

    def __init__(self, topic_path: str, client: Any = None) -> None:
        """`client`: a google-cloud-pubsub PublisherClient (made here with ordering on when
        not given)."""
        self.topic_path = topic_path
        self.client = client or _ordered_client()
        self.published = 0
        self.failed = 0
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        # futures not resolved yet; the client resolves them on its own threads
        self._pending: set[concurrent.futures.Future] = set()
        self._pending_lock = threading.Lock()

    async def publish(self, event: CallEvent) -> None:
        await self._slots.acquire()
        self._loop = asyncio.get_running_loop()
        future = self.client.publish(
            self.topic_path, event.to_json(), ordering_key=event.call_key, **event.attributes()
        )
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(lambda f, e=event: self._done(f, e))

    def _done(self, future: object, event: CallEvent) -> None:
        # Runs on one of the client's threads, sometimes while it holds its own locks (a batch
        # cancelled by stop()); the semaphore belongs to the event loop.
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._slots.release)
        with self._pending_lock:
            self._pending.discard(future)  # type: ignore[arg-type]
        error = future.exception()  # type: ignore[attr-defined]
        if error is None:
            self.published += 1
            return
        self.failed += 1
        if not self._closing:
            # An ordering key pauses after a failure until resumed; later events of the call
            # must flow. Not from this thread: the client may hold the lock resume_publish takes
            # (calling it from stop()'s cancellation deadlocked a shutdown).
            threading.Thread(
                target=self.client.resume_publish,
                args=(self.topic_path, event.call_key),
                name="pubsub-resume",
                daemon=True,
            ).start()
        log.error(
            "publish failed",
            extra=fields(event_id=event.event_id, error=f"{type(error).__name__}: {error}"[:200]),
        )

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Publish what is queued, waiting up to `timeout`, then stop the client. The client's
        stop() alone commits only the first batch of each ordering key and cancels the rest:
        a call's later events would be lost at every shutdown. Events still unpublished after
        the wait count as failed (logged). Never waits on a callback: see _done."""
        with self._pending_lock:
            pending = list(self._pending)
        if pending:
            await asyncio.to_thread(concurrent.futures.wait, pending, timeout)
        self._closing = True
        await asyncio.to_thread(self.client.stop)


class PushPublisher:
    """POSTs each event to a URL as the binary-mode CloudEvent Eventarc would deliver."""

    def __init__(self, url: str, project: str, topic_id: str, timeout: float = 10.0) -> None:
        import httpx

        self.url = url
        self.project = project
        self.topic_id = topic_id
        self.client = httpx.AsyncClient(timeout=timeout)
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.published = 0
        self.failed = 0

    async def publish(self, event: CallEvent) -> None:
        await self._slots.acquire()
        previous = self._tails.get(event.call_key)
        task = asyncio.create_task(self._post_after(previous, event))
        self._tails[event.call_key] = task
        task.add_done_callback(lambda t, k=event.call_key: self._forget(k, t))

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        self._slots.release()
        if self._tails.get(key) is task:
            del self._tails[key]

    async def _post_after(self, previous: asyncio.Task[None] | None, event: CallEvent) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        from functions.connector.adapters.eventarc_envelope import pubsub_cloudevent

        headers, body = pubsub_cloudevent(
            event.to_json(),
            event.attributes(),
            project=self.project,
            topic=self.topic_id,
            message_id=uuid.uuid4().hex,
            publish_time=datetime.now(UTC),
            ordering_key=event.call_key,
        )
        for attempt in range(3):
            try:
                response = await self.client.post(self.url, headers=headers, content=body)
                if response.status_code < 300:
                    self.published += 1
                    return
                error = f"HTTP {response.status_code}"
            except Exception as exc:  # any transport error: retry a little, then report
                error = f"{type(exc).__name__}: {exc}"[:200]
            await asyncio.sleep(0.2 * 2**attempt)
        self.failed += 1
        log.error("push delivery failed", extra=fields(event_id=event.event_id, error=error))

    async def close(self) -> None:
        if self._tails:
            await asyncio.gather(*self._tails.values(), return_exceptions=True)
        await self.client.aclose()
