"""Wires the notifier once per process: settings, Firestore, firebase-admin over aiohttp,
thread pool."""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.cloud import firestore

from functions.adapters.tenant_directory import TenantDirectory
from functions.core.call_event import CallEvent, InvalidCallEvent, parse_call_event
from functions.log import configure_logging, fields
from functions.notifier.adapters.background_loop import BackgroundLoop
from functions.notifier.adapters.direct_commit import DirectCommit
from functions.notifier.adapters.fcm_sender import FcmSender, init_firebase_app
from functions.notifier.adapters.firestore_directory import FirestoreDirectory
from functions.notifier.adapters.history_store import HistoryStore
from functions.notifier.adapters.ledger_store import LedgerStore
from functions.notifier.adapters.ring_commit import RingCommit
from functions.notifier.service import Notifier, Report
from functions.settings import Settings, load_settings

log = logging.getLogger("notifier")
_lock = threading.Lock()
_notifier: Notifier | None = None


def build_notifier(settings: Settings) -> Notifier:
    """Clients are created on the first event, in the serving process: functions-framework's
    gunicorn imports main.py before it forks its worker, and gRPC channels and threads do not
    survive a fork. The modules themselves are imported at start-up (above)."""
    pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="firestore")
    client = firestore.Client(project=settings.project)
    app = init_firebase_app(settings.project, settings.fcm_endpoint)
    direct = DirectCommit(client)  # the ring path's two commits, raw (direct_commit.py)
    history, ledger = HistoryStore(client, pool), LedgerStore(client, direct)
    return Notifier(
        directory=FirestoreDirectory(
            client,
            pool,
            settings.default_region,
            cache_seconds=settings.recipient_cache_seconds,
            # None in user-documents mode: the directory then rings only users whose relay
            # settings were accepted (relay_access, read with the same cache)
            tenants=TenantDirectory.for_settings(client, settings, pool),
        ),
        sender=FcmSender(app, BackgroundLoop("fcm")),
        history=history,
        ledger=ledger,
        ring_window=settings.ring_window_seconds,
        missed_notifications=settings.missed_call_notifications,
        ring_commit=RingCommit(ledger, history, direct),
    )


def notifier() -> Notifier:
    global _notifier
    with _lock:
        if _notifier is None:
            settings = load_settings()
            configure_logging(settings.log_level, component="notifier")
            _notifier = build_notifier(settings)
        return _notifier


def warm_in_background() -> None:
    """Build the clients in a worker process right after the fork, before the first event (a
    ringing call) has to wait for them. The master never builds them: gRPC does not survive a
    fork. Failures are only logged here; the first event builds again and reports properly."""

    def warm() -> None:
        try:
            service = notifier()
            # connections, TLS and access tokens, off the first call's path, both at once
            with ThreadPoolExecutor(2, thread_name_prefix="warm") as pool:
                calls = [
                    pool.submit(part.warm)
                    for part in (service.sender, service.directory)
                    if isinstance(part, FcmSender | FirestoreDirectory)
                ]
                for call in calls:
                    call.result()
        except Exception:
            log.exception("warm-up of the notifier's clients failed")

    threading.Thread(target=warm, name="warm-clients", daemon=True).start()


def decode_pubsub_event(data: Any) -> CallEvent:
    """The call event inside a `google.cloud.pubsub.topic.v1.messagePublished` CloudEvent."""
    if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
        raise InvalidCallEvent("CloudEvent data has no Pub/Sub message")
    encoded = data["message"].get("data")
    if not isinstance(encoded, str):
        raise InvalidCallEvent("Pub/Sub message has no data")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCallEvent("Pub/Sub message data is not base64") from None
    return parse_call_event(raw)


def handle_cloud_event(cloud_event: Any) -> Report | None:
    """Returns normally to acknowledge; raises to have the platform retry."""
    service = notifier()
    try:
        event = decode_pubsub_event(cloud_event.data)
    except InvalidCallEvent as exc:
        log.error(
            "malformed call event dropped",
            extra=fields(reason=str(exc), cloud_event_id=cloud_event.get("id")),
        )
        return None
    return service.handle(event)
