"""What the console shows, computed from the raw documents and push records (pure: no I/O).

Inputs are what devtools.console.sources read: `relay_status` and `call_history` documents and the
delivery ledger (`push_dedupe`) as dicts, and the local FCM endpoint's request records
(devtools/fake_fcm.py `GET /__fake/messages`). The output is plain JSON for the page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

MAX_CALLS = 50
MAX_PUSHES = 100


def jsonable(value: Any) -> Any:
    """Firestore values as JSON: timestamps become ISO 8601 UTC strings."""
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return when.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def epoch(value: Any) -> float | None:
    """Seconds since the epoch of a Firestore timestamp, an ISO string or a number."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return None


def short_token(token: Any) -> str:
    """Device tokens are credentials of a sort: the console names a device by a short prefix."""
    text = str(token or "")
    return text if len(text) <= 16 else f"{text[:8]}…{text[-4:]}"


def _total(value: Any) -> int:
    """A counter, or a per-reason map of counters (`badFrames`), as one number."""
    if isinstance(value, Mapping):
        return sum(_total(v) for v in value.values())
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def relay_rows(docs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for doc_id, doc in sorted(docs.items()):
        raw = doc.get("counters") if isinstance(doc.get("counters"), Mapping) else {}
        counters = {name: _total(value) for name, value in raw.items()}
        rows.append(
            {
                "relay": doc.get("relay") or doc_id,
                "state": doc.get("state") or "unknown",
                "connected": bool(doc.get("connected")),
                "pbxLink": doc.get("pbxLink"),
                "since": jsonable(doc.get("since")),
                "lastEventAt": jsonable(doc.get("lastEventAt")),
                "lastError": doc.get("lastError"),
                "refusedReason": doc.get("refusedReason"),
                "activeCalls": doc.get("activeCalls"),
                "counters": jsonable(counters),
                "instance": doc.get("instance"),
                "updatedAt": jsonable(doc.get("updatedAt")),
            }
        )
    return rows


def _message(record: Mapping[str, Any]) -> Mapping[str, Any]:
    body = record.get("body")
    message = body.get("message") if isinstance(body, Mapping) else None
    return message if isinstance(message, Mapping) else {}


def push_card(record: Mapping[str, Any]) -> dict[str, Any]:
    """One push as the phone shows it: the incoming-call card, its cancel, the missed-call
    notice (or an FCM error answer, which the phone never sees)."""
    message = _message(record)
    data = message.get("data") if isinstance(message.get("data"), Mapping) else {}
    note = message.get("notification") if isinstance(message.get("notification"), Mapping) else {}
    kind = {
        "incoming_call": "incoming",
        "incoming_call_cancelled": "cancel",
        "missed_call": "missed",
    }.get(str(data.get("type")), "other")
    status = record.get("status")
    card: dict[str, Any] = {
        "kind": kind,
        "delivered": status == 200,
        "status": status,
        "receivedAt": jsonable(datetime.fromtimestamp(record["time"], UTC))
        if isinstance(record.get("time"), int | float)
        else None,
        "device": short_token(message.get("token") or record.get("target")),
        "linkedid": data.get("linkedid") or data.get("missed_linkedid") or "",
        "title": note.get("title") or "",
        "body": note.get("body") or "",
        "callerName": data.get("caller_name") or "",
        "callerNumber": data.get("caller_number") or "",
        "receiverNumber": data.get("receiver_number") or "",
        "company": data.get("my_company_name") or "",
        "companyLine": data.get("my_external_cid_name") or "",
        "companyNumber": data.get("my_external_cid_number") or "",
        "extension": data.get("my_extension") or "",
        "userId": data.get("user_id") or "",
        "action": data.get("action") or "",
        "timestamp": data.get("timestamp") or "",
    }
    if status != 200:
        response = record.get("response")
        error = response.get("error") if isinstance(response, Mapping) else None
        card["error"] = (error or {}).get("status") if isinstance(error, Mapping) else None
    return card


def push_cards(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Send requests only (validate_only dry runs are no pushes), newest first."""
    sends = [r for r in records if not r.get("validate_only") and _message(r)]
    sends.sort(key=lambda r: r.get("time") or 0.0, reverse=True)
    cards = [push_card(r) for r in sends[:MAX_PUSHES]]
    # a cancel names no user: it is the device's, whose incoming push said whose it is
    owners = {c["device"]: c["userId"] for c in cards if c["userId"]}
    for c in cards:
        c["userId"] = c["userId"] or owners.get(c["device"], "")
    return cards


def _lifecycle(docs: list[Mapping[str, Any]]) -> dict[str, Any]:
    def first(name: str) -> Any:
        return next((d[name] for d in docs if d.get(name) not in (None, "")), None)

    ended, answered = first("endedAt"), first("answeredAt")
    state = "ended" if ended is not None else "answered" if answered is not None else "ringing"
    return {
        "state": state,
        "answeredBy": first("answeredBy"),
        "answeredAt": jsonable(answered),
        "endedAt": jsonable(ended),
        "outcome": first("outcome"),
        "cancelledBy": first("cancelledBy"),
        "duration": first("duration"),
    }


def call_rows(
    history: Mapping[str, Mapping[str, Any]],
    ledger: Iterable[Mapping[str, Any]],
    records: Iterable[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One row per call (linkedid), newest first: caller, who was rung on how many devices, the
    lifecycle from call_history, and the latency from the PBX's timestamp to the first incoming
    push the FCM endpoint received."""
    by_call: dict[str, list[Mapping[str, Any]]] = {}
    own_docs: dict[str, Mapping[str, Any]] = {}
    for doc_id, doc in history.items():
        if isinstance(doc.get("linkedid"), str):
            by_call.setdefault(doc["linkedid"], []).append(doc)
            # the call's own document (the first rung user's); the others are `{linkedid}_{uid}`
            if doc_id == doc["linkedid"].replace("/", "_"):
                own_docs[doc["linkedid"]] = doc
    deliveries: dict[str, Mapping[str, Any]] = {
        r["linkedid"]: r for r in ledger if isinstance(r.get("linkedid"), str)
    }
    first_push: dict[str, float] = {}
    pushes: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        message = _message(record)
        data = message.get("data") if isinstance(message.get("data"), Mapping) else {}
        linkedid = data.get("linkedid") or data.get("missed_linkedid")
        if not isinstance(linkedid, str) or record.get("status") != 200:
            continue
        pushes.setdefault(linkedid, []).append(data)
        when = record.get("time")
        if data.get("type") == "incoming_call" and isinstance(when, int | float):
            first_push[linkedid] = min(first_push.get(linkedid, when), when)

    def count(linkedid: str, kind: str) -> int:
        return sum(1 for p in pushes.get(linkedid, []) if p.get("type") == kind)

    rows = []
    for linkedid in set(by_call) | set(deliveries) | set(pushes):
        docs = by_call.get(linkedid, [])
        own = own_docs.get(linkedid) or (docs[0] if docs else {})
        sent = [p for p in pushes.get(linkedid, []) if p.get("type") == "incoming_call"]
        pbx_time = epoch(own.get("timestamp")) or next(
            (epoch(p.get("timestamp")) for p in sent), None
        )
        caller = sent[0] if sent else {}
        devices = (deliveries.get(linkedid) or {}).get("devices")
        devices = devices if isinstance(devices, Mapping) else {}
        latency = None
        if pbx_time is not None and linkedid in first_push:
            latency = round((first_push[linkedid] - pbx_time) * 1000)
        rows.append(
            {
                "linkedid": linkedid,
                "callerName": own.get("callerName") or caller.get("caller_name") or "",
                "callerNumber": own.get("callerNumber") or caller.get("caller_number") or "",
                "receiverNumber": own.get("receiverNumber") or caller.get("receiver_number") or "",
                "pbxTime": jsonable(datetime.fromtimestamp(pbx_time, UTC)) if pbx_time else None,
                "recipients": list(own.get("recipientUserIds") or []),
                "devicesRung": sum(
                    1 for d in devices.values() if isinstance(d, Mapping) and d.get("incoming")
                )
                or len(sent),
                "cancelsSent": count(linkedid, "incoming_call_cancelled"),
                "missedSent": count(linkedid, "missed_call"),
                "latencyMs": latency,
                **_lifecycle(docs),
                "_sort": pbx_time or 0.0,
            }
        )
    rows.sort(key=lambda r: r.pop("_sort"), reverse=True)
    return rows[:MAX_CALLS]


def snapshot(
    *,
    relays: Mapping[str, Mapping[str, Any]],
    history: Mapping[str, Mapping[str, Any]],
    ledger: Iterable[Mapping[str, Any]],
    records: list[Mapping[str, Any]],
    doctor: Mapping[str, Any],
    errors: Mapping[str, str],
) -> dict[str, Any]:
    """The whole page's state; the server sends it again whenever it changes."""
    return {
        "relays": relay_rows(relays),
        "calls": call_rows(history, ledger, records),
        "pushes": push_cards(records),
        "doctor": dict(doctor),
        "errors": dict(errors),
    }
