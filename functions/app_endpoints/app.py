"""Wires the app's endpoints once per process (settings, Firestore, firebase-admin) and turns
HTTP requests into service calls: the callable protocol for cancelIncomingCallNotification, the
app's own JSON for sendIncomingCallNotification. main.py only delegates here."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from google.cloud import firestore

from functions.adapters.tenant_directory import TenantDirectory
from functions.app_endpoints import callable_protocol as cp
from functions.app_endpoints.id_tokens import IdTokenVerifier, InvalidIdToken
from functions.app_endpoints.service import AppCallService, JoiningHistory
from functions.core.app_calls import RING_REQUIRED, Refused, missing_ring_fields, parse_cancel
from functions.core.app_calls import parse_ring as parse_ring_request
from functions.log import configure_logging, fields
from functions.notifier.adapters.background_loop import BackgroundLoop
from functions.notifier.adapters.fcm_sender import FcmSender, init_firebase_app
from functions.notifier.adapters.firestore_directory import FirestoreDirectory
from functions.notifier.adapters.history_store import HistoryStore
from functions.notifier.adapters.ledger_store import LedgerStore
from functions.notifier.service import Notifier
from functions.settings import Settings, load_settings

log = logging.getLogger("app_endpoints")
_lock = threading.Lock()
_endpoints: Endpoints | None = None


@dataclass
class Endpoints:
    service: AppCallService
    verifier: IdTokenVerifier


def build_endpoints(settings: Settings) -> Endpoints:
    """Built on the first request, in the serving process (gRPC does not survive a fork)."""
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="firestore")
    client = firestore.Client(project=settings.project)
    app = init_firebase_app(settings.project, settings.fcm_endpoint, name="app_endpoints")
    tenants = TenantDirectory.for_settings(client, settings, pool)
    ledger = LedgerStore(client)
    history = HistoryStore(client, pool)
    sender = FcmSender(app, BackgroundLoop("fcm"))
    # the notifier's rules, but users who listen to the relay in the app ring too: the device
    # holding the relay connection asks for their other devices. In user-documents mode (no
    # tenants) the directory reads relay_access itself.
    dcmiws = FirestoreDirectory(
        client, pool, settings.default_region, tenants=tenants, ring_dcmiws=True
    )
    notifier = Notifier(
        directory=dcmiws,
        sender=sender,
        history=JoiningHistory(history),
        ledger=ledger,
        ring_window=settings.ring_window_seconds,
        missed_notifications=settings.missed_call_notifications,
    )
    service = AppCallService(
        calls=ledger, history=history, notifier=notifier, region=settings.default_region
    )
    return Endpoints(service, IdTokenVerifier(app))


def endpoints() -> Endpoints:
    global _endpoints
    with _lock:
        if _endpoints is None:
            settings = load_settings()
            configure_logging(settings.log_level, component="app_endpoints")
            _endpoints = build_endpoints(settings)
        return _endpoints


def _response(reply: cp.Reply) -> cp.HttpReply:
    return reply.http()


def _uid(verifier: IdTokenVerifier, token: str | None) -> str | None:
    """The verified uid; None without a token; Refused for a token that does not verify."""
    if token is None:
        return None
    try:
        return verifier.uid(token)
    except InvalidIdToken as exc:
        log.warning("id token refused", extra=fields(reason=str(exc)))
        raise Refused("unauthenticated", "invalid Firebase ID token", "bad_token") from None


def cancel_incoming_call(request: cp.HttpRequest) -> cp.HttpReply:
    """cancelIncomingCallNotification, the callable protocol."""
    if request.method == "OPTIONS":
        return _response(cp.preflight())
    try:
        call = cp.decode_callable(
            request.method, request.headers, request.content_type or "", request.get_data()
        )
    except cp.BadCall as exc:
        return _response(cp.error("invalid-argument", str(exc)))
    parts = endpoints()
    try:
        uid = _uid(parts.verifier, call.id_token)
        cancel = parse_cancel(call.data)
        return _response(cp.result(parts.service.cancel(uid, cancel, call.instance_token)))
    except Refused as refused:
        return _response(cp.error(refused.code, refused.message))
    except Exception:
        log.exception("cancelIncomingCallNotification failed")
        return _response(cp.error("unavailable", "try again"))


def _json(status: int, body: dict[str, Any]) -> cp.HttpReply:
    return _response(cp.Reply(status, body))


def send_incoming_call(request: cp.HttpRequest) -> cp.HttpReply:
    """sendIncomingCallNotification, the app's JSON body and replies (docs/app-endpoints.md).
    The app's X-Firebase-API-Key header is accepted and ignored: the key is public."""
    if request.method == "OPTIONS":
        return _response(cp.preflight())
    if request.method != "POST":
        return _json(405, {"error": "Method Not Allowed"})
    try:
        body = cp.json_body(request.content_type or "", request.get_data())
    except cp.BadCall as exc:
        return _json(400, {"error": str(exc)})
    if missing_ring_fields(body):
        return _json(400, {"error": "Missing required parameters", "required": list(RING_REQUIRED)})
    ring = parse_ring_request(body)
    parts = endpoints()
    try:
        uid = _uid(parts.verifier, cp.bearer(request.headers))
        return _json(200, parts.service.ring(ring, uid))
    except Refused as refused:
        reply: dict[str, Any] = {"error": refused.message}
        if refused.code == "unauthenticated":
            reply = {"error": "Unauthorized", "message": refused.message}
        elif refused.message == "Extension not found":
            reply["receiverNumber"] = ring.receiver_number
        else:
            reply["linkedid"] = ring.linkedid
        return _json(cp.STATUS_HTTP.get(refused.code, 400), reply)  # the callables' statuses
    except Exception:
        log.exception("sendIncomingCallNotification failed")
        return _json(500, {"error": "Internal error"})
