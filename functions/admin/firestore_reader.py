"""Reads what the admin tools judge from Firestore (emulator via FIRESTORE_EMULATOR_HOST, or a
real project). Whole collections: admin tools run rarely and need everything."""

from __future__ import annotations

from typing import Any

from google.api_core.retry import Retry
from google.cloud import firestore

from functions.admin.documents import COLLECTIONS, Documents

READ_TIMEOUT = 30.0  # seconds per read: an unreachable Firestore must end the command
RELAY_STATUS = "relay_status"


def client(project: str) -> firestore.Client:
    return firestore.Client(project=project)


def _retry() -> Retry:
    # transient errors are retried, but only this long: the library's default retry never
    # gives up on an emulator or network that does not answer
    return Retry(timeout=READ_TIMEOUT)


def read_collection(db: Any, name: str) -> dict[str, dict[str, Any]]:
    stream = db.collection(name).stream(retry=_retry(), timeout=READ_TIMEOUT)
    return {snap.id: snap.to_dict() or {} for snap in stream}


def read_documents(db: Any) -> Documents:
    return Documents.of({name: read_collection(db, name) for name in COLLECTIONS})


def read_document(db: Any, collection: str, doc_id: str) -> dict[str, Any] | None:
    snap = db.collection(collection).document(doc_id).get(retry=_retry(), timeout=READ_TIMEOUT)
    return snap.to_dict() if snap.exists else None
