"""The calls rung from a relay that are not over yet, from the notifier's delivery ledger.

A connector that starts reading a relay (a takeover from a dead instance, a lease moved, a
restart) did not see those calls ring; the ledger did: each record keeps the ringing event and
its relay (functions/notifier/adapters/ledger_store.py). The tracker adopts them so that they
end (docs/lifecycle.md, "Ends the PBX never sent") instead of ringing on.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import orjson
from google.cloud.firestore_v1.base_query import FieldFilter

from functions.core.call_event import CallEvent, InvalidCallEvent, Kind, parse_call_event
from functions.log import fields

log = logging.getLogger("connector.rung_calls")
LEDGER: Final = "push_dedupe"  # the notifier's delivery ledger (functions/core/ledger.py)
MAX_RECORDS: Final = 500  # per relay; more calls than that ringing at once is not one PBX
_RUNG: Final = frozenset({"sent", "claimed"})  # a device got (or is getting) the incoming push


def rung_calls(client: Any, relay: str, now: float, max_age: float) -> list[CallEvent]:
    """Ringing events of the relay's calls that rang a device, are not over and began less than
    `max_age` seconds ago. Records that cannot be read are logged and left out."""
    query = (
        client.collection(LEDGER)
        .where(filter=FieldFilter("relay", "==", relay))
        .where(filter=FieldFilter("over", "==", False))
        .limit(MAX_RECORDS)
    )
    found: list[CallEvent] = []
    for snapshot in query.stream():
        record = snapshot.to_dict() or {}
        devices = record.get("devices")
        if not isinstance(devices, dict) or not any(
            isinstance(d, dict) and d.get("incoming") in _RUNG for d in devices.values()
        ):
            continue
        try:
            event = parse_call_event(orjson.dumps(record.get("ring")))
        except (InvalidCallEvent, TypeError):
            log.warning(
                "ledger record without a usable ringing event",
                extra=fields(relay=relay, record=snapshot.id),
            )
            continue
        if (
            event.kind is Kind.RINGING
            and event.relay == relay
            and now - event.detected_at < max_age
        ):
            found.append(event)
    return found
