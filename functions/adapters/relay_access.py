"""`relay_access/{host:port}`: which users' own relay settings a relay accepted (user-documents
mode, TENANCY=user_documents). Backend-only: the connector writes it, the notifier reads it;
clients may neither read nor write it (infra/firestore.rules closes unknown collections).

    relay: "ws://host:port"   the settings in use, as a URL without credentials
    users: [uid, ...]         accepted: their settings opened the relay
    refused: [uid, ...]       the relay answered 401/403 to their settings
    unproven: [uid, ...]      not tried yet, or the try failed for another reason
    open: bool                the relay accepted an upgrade without credentials: no proof,
                              everyone naming it is rung (as before relay_access)
    instance, updatedAt

Credentials never appear in it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from functions.connector.adapters.relay_status import status_doc_id
from functions.core.relay_candidates import RelayAccess

RELAY_ACCESS = "relay_access"
CACHE_ENTRIES = 10_000


def access_document(url: str, access: RelayAccess, instance: str) -> dict[str, Any]:
    return {
        "relay": url,
        "users": sorted(access.users),
        "refused": sorted(access.refused),
        "unproven": sorted(access.unproven),
        "open": access.open,
        "instance": instance,
        "updatedAt": datetime.now(UTC),
    }


def write_access(client: Any, endpoint: str, url: str, access: RelayAccess, instance: str) -> None:
    doc = access_document(url, access, instance)
    client.collection(RELAY_ACCESS).document(status_doc_id(endpoint)).set(doc)


def _uids(value: Any) -> frozenset[str]:
    if not isinstance(value, list):
        return frozenset()
    return frozenset(v for v in value if isinstance(v, str))


def parse_access(doc: dict[str, Any] | None) -> RelayAccess | None:
    if doc is None:
        return None
    return RelayAccess(
        users=_uids(doc.get("users")),
        refused=_uids(doc.get("refused")),
        unproven=_uids(doc.get("unproven")),
        open=doc.get("open") is True,
    )


class RelayAccessReader:
    """The notifier's copy of relay_access, per relay, at most `cache_seconds` old (the
    recipients' window, RECIPIENT_CACHE_SECONDS)."""

    def __init__(
        self,
        client: Any,
        cache_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, RelayAccess | None]] = {}
        self._lock = threading.Lock()

    def get(self, endpoint: str) -> RelayAccess | None:
        now = self.clock()
        if self.cache_seconds > 0:
            with self._lock:
                hit = self._cache.get(endpoint)
            if hit is not None and now - hit[0] < self.cache_seconds:
                return hit[1]
        snap = self.client.collection(RELAY_ACCESS).document(status_doc_id(endpoint)).get()
        access = parse_access(snap.to_dict() if snap.exists else None)
        if self.cache_seconds > 0:
            with self._lock:
                if len(self._cache) >= CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[endpoint] = (now, access)
        return access
