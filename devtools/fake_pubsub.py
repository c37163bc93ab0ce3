"""A local Pub/Sub Publisher gRPC endpoint with optional Eventarc-style push delivery.

Google's Pub/Sub emulator needs gcloud and Java, which cannot be installed here. This
serves ``google.pubsub.v1.Publisher`` CreateTopic, GetTopic and Publish well enough for
the real ``google.cloud.pubsub_v1.PublisherClient``; every other method answers
UNIMPLEMENTED. Point the client at it the way the emulator is used::

    os.environ["PUBSUB_EMULATOR_HOST"] = fake.host   # read when the client is created
    publisher = pubsub_v1.PublisherClient()          # insecure channel, anonymous creds

Like the real service, Publish to a missing topic fails with NOT_FOUND and CreateTopic
of an existing one with ALREADY_EXISTS. For convenience ``auto_create_topics=True``
(the default) creates a topic on its first Publish instead; pass False to be strict.

With ``push_url`` every published message is POSTed there as the binary-mode CloudEvent
Eventarc delivers for a Pub/Sub trigger (all topics go to the one URL). Like a push
subscription with message ordering, messages sharing an ordering key go one at a time,
in order, the next only after the previous was acknowledged (2xx) or given up on; a
non-2xx answer or a transport error is retried with exponential backoff (0.1 s doubling
to 2 s) up to ``push_max_attempts`` attempts or ``push_deadline`` seconds.

CLI: ``python -m devtools.fake_pubsub --port 8085 [--push-url URL]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Self

import grpc
import httpx
from google.pubsub_v1 import types

from functions.adapters.eventarc_envelope import pubsub_cloudevent

__all__ = ["Delivery", "FakePubSubServer", "PublishedMessage"]

log = logging.getLogger("devtools.fake_pubsub")

_SERVICE = "google.pubsub.v1.Publisher"
_TOPIC_NAME = re.compile(
    r"^projects/(?P<project>[^/]+)/topics/(?P<topic>[A-Za-z][\w.~+%-]{2,254})$"
)
_MAX_ATTRIBUTES = 100
_MAX_ORDERING_KEY_BYTES = 1024
_MAX_REQUEST_BYTES = 10 * 1024 * 1024
# What Pub/Sub push sends; a receiver that logs user agents sees the same thing.
_PUSH_USER_AGENT = "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)"


@dataclass(frozen=True)
class PublishedMessage:
    topic: str  # full name: projects/{project}/topics/{topic}
    data: bytes
    attributes: dict[str, str]
    ordering_key: str
    message_id: str
    publish_time: datetime  # aware, UTC


@dataclass
class Delivery:
    """The push delivery of one message: every attempt's HTTP status or error text."""

    message_id: str
    ordering_key: str
    attempts: list[int | str] = field(default_factory=list)
    delivered: bool = False
    started: float = 0.0  # time.time()
    finished: float | None = None


class FakePubSubServer:
    """Thread-safe fake of the Pub/Sub Publisher service; see the module doc."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        push_url: str | None = None,
        project: str | None = None,
        subscription: str | None = None,
        *,
        auto_create_topics: bool = True,
        push_max_attempts: int = 10,
        push_deadline: float = 60.0,
        push_timeout: float = 10.0,
        push_min_backoff: float = 0.1,
        push_max_backoff: float = 2.0,
        on_publish: Callable[[PublishedMessage], None] | None = None,
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> None:
        self._address = f"{host}:{port}"
        self._host = host
        self.push_url = push_url
        # project/subscription name the push subscription (Eventarc's is in the
        # trigger's project); by default the topic's project and "eventarc-{topic}".
        self.project = project
        self.subscription = subscription
        self.auto_create_topics = auto_create_topics
        self._push_max_attempts = push_max_attempts
        self._push_deadline = push_deadline
        self._push_timeout = push_timeout
        self._backoff = (push_min_backoff, push_max_backoff)
        self._on_publish = on_publish
        self._on_delivery = on_delivery
        self._cond = threading.Condition()
        self._topics: dict[str, types.Topic] = {}
        self._messages: list[PublishedMessage] = []
        self._deliveries: list[Delivery] = []
        self._calls: list[tuple[str, str]] = []
        self._failures: deque[grpc.StatusCode] = deque()
        self._key_queues: dict[str, deque[PublishedMessage]] = {}
        self._ids = itertools.count(random.randrange(10**15, 9 * 10**15))
        self._stopping = threading.Event()
        self._server: grpc.Server | None = None
        self._rpc_pool: ThreadPoolExecutor | None = None
        self._pusher: ThreadPoolExecutor | None = None
        self._http: httpx.Client | None = None
        self._port: int | None = None

    # lifecycle -----------------------------------------------------------------
    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._key_queues.clear()
        handlers = {
            "CreateTopic": grpc.unary_unary_rpc_method_handler(
                self._create_topic,
                request_deserializer=types.Topic.deserialize,
                response_serializer=types.Topic.serialize,
            ),
            "GetTopic": grpc.unary_unary_rpc_method_handler(
                self._get_topic,
                request_deserializer=types.GetTopicRequest.deserialize,
                response_serializer=types.Topic.serialize,
            ),
            "Publish": grpc.unary_unary_rpc_method_handler(
                self._publish,
                request_deserializer=types.PublishRequest.deserialize,
                response_serializer=types.PublishResponse.serialize,
            ),
        }
        self._rpc_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fake-pubsub-rpc")
        server = grpc.server(
            self._rpc_pool,
            handlers=[grpc.method_handlers_generic_handler(_SERVICE, handlers)],
            options=[
                ("grpc.max_receive_message_length", _MAX_REQUEST_BYTES + 64 * 1024),
                ("grpc.so_reuseport", 0),  # port 0 must mean a port no one else holds
            ],
        )
        self._port = server.add_insecure_port(self._address)
        if not self._port:
            raise OSError(f"cannot bind {self._address}")
        if self.push_url:
            self._pusher = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fake-pubsub-push")
            # trust_env=False: a developer's HTTP(S)_PROXY must not capture local pushes.
            self._http = httpx.Client(timeout=self._push_timeout, trust_env=False)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # ends push backoff waits at once
        server.stop(grace=0.5).wait(timeout=5)
        if self._rpc_pool is not None:
            self._rpc_pool.shutdown(wait=False)  # grpc.server does not own its pool
            self._rpc_pool = None
        if self._pusher is not None:
            self._pusher.shutdown(wait=True, cancel_futures=True)
            self._pusher = None
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        """``host:port`` for ``PUBSUB_EMULATOR_HOST``."""
        if self._port is None or self._server is None:
            raise RuntimeError("FakePubSubServer is not started")
        return f"{self._host}:{self._port}"

    # control and inspection ----------------------------------------------------
    def create_topic(self, name: str) -> None:
        """Create ``projects/p/topics/t`` (no-op if it exists), bypassing gRPC."""
        _parse_topic(name)
        with self._cond:
            self._topics.setdefault(name, types.Topic(name=name))

    def topics(self) -> list[str]:
        with self._cond:
            return sorted(self._topics)

    def fail_next(self, n: int = 1, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        """Make the next ``n`` Publish calls fail with ``code`` (nothing is recorded)."""
        with self._cond:
            self._failures.extend([code] * n)

    def messages(self, topic: str | None = None) -> list[PublishedMessage]:
        with self._cond:
            return [m for m in self._messages if topic is None or m.topic == topic]

    def calls(self) -> list[tuple[str, str]]:
        """Every RPC served: (method, status code name), e.g. ("Publish", "UNAVAILABLE")."""
        with self._cond:
            return list(self._calls)

    def deliveries(self) -> list[Delivery]:
        """Finished push deliveries, in the order they finished."""
        with self._cond:
            return [replace(d, attempts=list(d.attempts)) for d in self._deliveries]

    def clear(self) -> None:
        """Forget recorded messages, calls, deliveries and pending injected failures."""
        with self._cond:
            self._messages.clear()
            self._calls.clear()
            self._deliveries.clear()
            self._failures.clear()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[PublishedMessage]:
        """Wait until ``n`` messages were published and return them; else TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= n, timeout=timeout):
                raise TimeoutError(f"{len(self._messages)} of {n} messages after {timeout}s")
            return list(self._messages)

    def wait_for_deliveries(self, n: int, timeout: float = 5.0) -> list[Delivery]:
        """Wait until ``n`` push deliveries finished (either way); else TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._deliveries) >= n, timeout=timeout):
                raise TimeoutError(f"{len(self._deliveries)} of {n} deliveries after {timeout}s")
        return self.deliveries()

    # RPC handlers (gRPC worker threads) ------------------------------------------
    def _abort(
        self, context: grpc.ServicerContext, method: str, code: grpc.StatusCode, details: str
    ) -> None:
        with self._cond:
            self._calls.append((method, code.name))
        context.abort(code, details)

    def _ok(self, method: str) -> None:
        with self._cond:
            self._calls.append((method, "OK"))

    def _create_topic(self, request: types.Topic, context: grpc.ServicerContext) -> types.Topic:
        if not _TOPIC_NAME.match(request.name):
            self._abort(
                context,
                "CreateTopic",
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid [topics] name: ({request.name})",
            )
        with self._cond:
            exists = request.name in self._topics
            self._topics.setdefault(request.name, request)
        if exists:
            self._abort(
                context, "CreateTopic", grpc.StatusCode.ALREADY_EXISTS, "Topic already exists"
            )
        self._ok("CreateTopic")
        return request

    def _get_topic(
        self, request: types.GetTopicRequest, context: grpc.ServicerContext
    ) -> types.Topic:
        with self._cond:
            topic = self._topics.get(request.topic)
        if topic is None:
            self._abort(
                context,
                "GetTopic",
                grpc.StatusCode.NOT_FOUND,
                f"Resource not found (resource={request.topic}).",
            )
        self._ok("GetTopic")
        return topic

    def _publish(
        self, request: types.PublishRequest, context: grpc.ServicerContext
    ) -> types.PublishResponse:
        with self._cond:
            injected = self._failures.popleft() if self._failures else None
        if injected is not None:
            self._abort(context, "Publish", injected, "Injected failure (fake Pub/Sub).")
        name = request.topic
        if not _TOPIC_NAME.match(name):
            self._abort(
                context,
                "Publish",
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid [topics] name: ({name})",
            )
        problem = _check_messages(request.messages)
        if problem:
            self._abort(context, "Publish", grpc.StatusCode.INVALID_ARGUMENT, problem)
        now = datetime.now(UTC)
        with self._cond:
            if name not in self._topics and self.auto_create_topics:
                self._topics[name] = types.Topic(name=name)
            exists = name in self._topics
            published = [
                PublishedMessage(
                    topic=name,
                    data=bytes(m.data),
                    attributes=dict(m.attributes),
                    ordering_key=m.ordering_key,
                    message_id=str(next(self._ids)),
                    publish_time=now,
                )
                for m in (request.messages if exists else ())
            ]
            if exists:
                self._messages.extend(published)
                self._calls.append(("Publish", "OK"))
                self._cond.notify_all()
        if not exists:
            self._abort(
                context,
                "Publish",
                grpc.StatusCode.NOT_FOUND,
                f"Resource not found (resource={name}).",
            )
        for message in published:
            if self._on_publish is not None:
                self._on_publish(message)
            if self._pusher is not None:
                self._enqueue_push(message)
        return types.PublishResponse(message_ids=[m.message_id for m in published])

    # push delivery ----------------------------------------------------------------
    def _enqueue_push(self, message: PublishedMessage) -> None:
        assert self._pusher is not None
        if not message.ordering_key:
            self._pusher.submit(self._deliver, message)
            return
        with self._cond:
            queue = self._key_queues.get(message.ordering_key)
            if queue is not None:  # a drainer owns this key; it will get there in order
                queue.append(message)
                return
            self._key_queues[message.ordering_key] = deque([message])
        self._pusher.submit(self._drain_key, message.ordering_key)

    def _drain_key(self, key: str) -> None:
        while not self._stopping.is_set():
            with self._cond:
                queue = self._key_queues[key]
                if not queue:
                    del self._key_queues[key]
                    return
                message = queue[0]
            self._deliver(message)
            with self._cond:
                queue.popleft()

    def _deliver(self, message: PublishedMessage) -> None:
        project, topic = _parse_topic(message.topic)
        headers, body = pubsub_cloudevent(
            message.data,
            message.attributes,
            project=project,
            topic=topic,
            message_id=message.message_id,
            publish_time=message.publish_time,
            ordering_key=message.ordering_key,
            subscription=self._subscription_path(project),
        )
        headers["user-agent"] = _PUSH_USER_AGENT
        delivery = Delivery(message.message_id, message.ordering_key, started=time.time())
        backoff, max_backoff = self._backoff
        deadline = time.monotonic() + self._push_deadline
        while not self._stopping.is_set():
            client, url = self._http, self.push_url
            if client is None or url is None:
                break
            try:
                status: int | str = client.post(url, headers=headers, content=body).status_code
            except httpx.HTTPError as exc:
                status = f"{type(exc).__name__}: {exc}"
            delivery.attempts.append(status)
            if isinstance(status, int) and (200 <= status < 300 or status == 102):
                delivery.delivered = True
                break
            if (
                len(delivery.attempts) >= self._push_max_attempts
                or time.monotonic() + backoff > deadline
            ):
                break
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, max_backoff)
        delivery.finished = time.time()
        if not delivery.delivered and not self._stopping.is_set():
            log.warning(
                "fake pubsub: gave up pushing message %s (key %r) to %s after %d attempts: %s",
                message.message_id,
                message.ordering_key,
                self.push_url,
                len(delivery.attempts),
                delivery.attempts[-1] if delivery.attempts else "stopped",
            )
        with self._cond:
            self._deliveries.append(delivery)
            self._cond.notify_all()
        if self._on_delivery is not None:
            self._on_delivery(delivery)

    def _subscription_path(self, topic_project: str) -> str | None:
        if self.subscription is None or self.subscription.startswith("projects/"):
            return self.subscription
        return f"projects/{self.project or topic_project}/subscriptions/{self.subscription}"


def _parse_topic(name: str) -> tuple[str, str]:
    match = _TOPIC_NAME.match(name)
    if match is None:
        raise ValueError(f"not a topic name: {name!r} (want projects/P/topics/T)")
    return match["project"], match["topic"]


def _check_messages(messages: Iterable[types.PubsubMessage]) -> str | None:
    """The validation the real Publish does that a client could trip over."""
    count = 0
    for message in messages:
        count += 1
        if not message.data and not message.attributes:
            return (
                "One or more messages in the publish request is empty. Each message must "
                "contain either non-empty data, or at least one attribute."
            )
        if len(message.attributes) > _MAX_ATTRIBUTES:
            return f"Too many attributes: {len(message.attributes)} (max {_MAX_ATTRIBUTES})."
        for key in message.attributes:
            if key.startswith("goog"):
                return f"Attribute key must not start with 'goog': {key!r}."
        if len(message.ordering_key.encode()) > _MAX_ORDERING_KEY_BYTES:
            return "Ordering key is too long."
    if count == 0:
        return "The request contains no messages."
    return None


# CLI -------------------------------------------------------------------------------
def _print_publish(message: PublishedMessage) -> None:
    preview = message.data[:120].decode("utf-8", "replace")
    key = f" key={message.ordering_key}" if message.ordering_key else ""
    print(f"publish {message.topic} id={message.message_id}{key} {preview}", flush=True)


def _print_delivery(delivery: Delivery) -> None:
    outcome = "delivered" if delivery.delivered else "GAVE UP"
    print(f"push {outcome} id={delivery.message_id} attempts={delivery.attempts}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local fake of the Pub/Sub Publisher API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--push-url", help="POST each message here as an Eventarc CloudEvent")
    parser.add_argument("--project", help="project of the push subscription")
    parser.add_argument("--subscription", help="push subscription name")
    parser.add_argument(
        "--topic", action="append", default=[], help="create this topic (full name)"
    )
    parser.add_argument(
        "--no-auto-create-topics",
        dest="auto_create_topics",
        action="store_false",
        help="answer NOT_FOUND for topics not created first, like the real service",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = FakePubSubServer(
        args.host,
        args.port,
        push_url=args.push_url,
        project=args.project,
        subscription=args.subscription,
        auto_create_topics=args.auto_create_topics,
        on_publish=_print_publish,
        on_delivery=_print_delivery,
    )
    with server:
        for topic in args.topic:
            server.create_topic(topic)
        ready: dict[str, Any] = {
            "service": "fake-pubsub",
            "host": server.host,
            "env": {"PUBSUB_EMULATOR_HOST": server.host},
            "push_url": args.push_url,
        }
        print(json.dumps(ready), flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
