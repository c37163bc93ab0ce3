"""`relays`: every relay's state as the connector reports it (`relay_status`, written by
functions.connector.adapters.relay_status), plus the relays the directory names that no
connector has reported yet."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from functions.admin.documents import Documents
from functions.admin.firestore_reader import RELAY_STATUS, read_collection
from functions.connector.adapters.relay_status import status_doc_id
from functions.settings import Settings

FIELDS = (
    "state",
    "connected",
    "since",
    "pbxLink",
    "lastEventAt",
    "lastError",
    "refusedReason",
    "instance",
    "updatedAt",
)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def relay_rows(db: Any, settings: Settings, documents: Documents) -> list[dict[str, Any]]:
    from functions.admin.live_checks import attempts

    rows: dict[str, dict[str, Any]] = {}
    for doc_id, doc in read_collection(db, RELAY_STATUS).items():
        row = {"relay": doc.get("relay") or doc_id, "endpoint": doc_id}
        row.update({k: _plain(doc.get(k)) for k in FIELDS})
        counters = doc.get("counters") or {}
        row["events"] = counters.get("events") if isinstance(counters, dict) else None
        rows[doc_id] = row
    named, _ = attempts(documents, settings, secrets=_NoSecrets())
    for attempt in named:
        doc_id = status_doc_id(attempt.spec.endpoint)
        if doc_id not in rows:
            rows[doc_id] = {
                "relay": attempt.spec.url,
                "endpoint": doc_id,
                "state": "no_status",
                **{k: None for k in FIELDS if k != "state"},
                "events": None,
            }
    return [rows[k] for k in sorted(rows)]


class _NoSecrets:
    """`relays` lists what is named; it never reads credentials."""

    def credentials(self, version_name: str) -> tuple[str, str]:
        return ("", "")
