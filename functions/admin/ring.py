"""`ring NUMBER --relay URL [--server-id N]`: a test call through the configured pipeline.

Publishes a ringing call event as the connector would (Pub/Sub topic CALL_EVENTS_TOPIC, or
CALL_EVENTS_PUSH_URL: the connector's own publishers), watches the call's delivery ledger
(`push_dedupe`, written by the notifier) until every device `explain` expects has its incoming
push sent or failed, then publishes the call's end so the phones stop ringing, and waits for the
cancels. Nothing is faked: the pushes reach the phones (or the local FCM endpoint).

The call is marked as a test: its event carries `test: true`, so its history documents get
`test: true`; it also has linkedid `admin-test-<ms>`, channel `Admin/test-call`, server name
`admin-test`, and the caller name the phones show, `관리자 테스트`. It ends with outcome
`unknown` (nobody answered it, nobody missed it), so phones get a cancel (`call_ended`) and no
missed-call notification.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from typing import Any

from functions.admin.explain import Explanation, explain, parse_relay
from functions.connector.app import build_publisher
from functions.core.call_event import CallEvent, Kind, Outcome
from functions.core.ledger import FAILED, SENT, devices_of
from functions.notifier.adapters.ledger_store import LedgerStore
from functions.settings import Settings

TEST_PREFIX = "admin-test-"
TEST_CHANNEL = "Admin/test-call"
TEST_CALLER_NAME = "관리자 테스트"
TEST_CALLER_NUMBER = "0000"
POLL = 0.05  # seconds between ledger reads: the latency's resolution


@dataclass
class RingResult:
    linkedid: str
    transport: str  # "pubsub <topic>" or "push <url>"
    explanation: Explanation
    sent: bool = False  # was the test call published at all
    devices: list[dict[str, Any]] = field(default_factory=list)  # {user, device, push}
    latency_ms: float | None = None  # publish -> every expected device served (observed)
    ended: bool = False
    cancelled: list[str] = field(default_factory=list)  # device doc ids sent a cancel
    missing: list[str] = field(default_factory=list)  # expected devices never served

    @property
    def ok(self) -> bool:
        pushed = [d for d in self.devices if d["push"] == SENT]
        return self.sent and bool(pushed) and not self.missing and self.ended

    def as_dict(self) -> dict[str, Any]:
        return {
            "linkedid": self.linkedid,
            "transport": self.transport,
            "sent": self.sent,
            "expected": self.explanation.rings,
            "not_rung": self.explanation.not_rung,
            "devices": self.devices,
            "latency_ms": self.latency_ms,
            "ended": self.ended,
            "cancelled": self.cancelled,
            "missing": self.missing,
        }


def test_event(number: str, endpoint: str, server_id: int, now: float) -> CallEvent:
    linkedid = f"{TEST_PREFIX}{int(now * 1000)}"
    return CallEvent(
        kind=Kind.RINGING,
        relay=endpoint,
        server_id=server_id,
        linkedid=linkedid,
        caller_number=TEST_CALLER_NUMBER,
        caller_name=TEST_CALLER_NAME,
        dialled_number=number,
        channel=TEST_CHANNEL,
        occurred_at=now,
        detected_at=now,
        server_name="admin-test",
        test=True,
    )


def transport_of(settings: Settings) -> str:
    if settings.call_events_push_url:
        return f"push {settings.call_events_push_url}"
    return f"pubsub {settings.topic_path}"


def _ledger(db: Any, event: CallEvent) -> dict[str, Any]:
    snap = LedgerStore(db).ref(event).get(timeout=10)
    return (snap.to_dict() or {}) if snap.exists else {}


async def _wait(db: Any, event: CallEvent, done: Any, deadline: float) -> dict[str, Any]:
    record: dict[str, Any] = {}
    while time.monotonic() < deadline:
        record = await asyncio.to_thread(_ledger, db, event)
        if done(record):
            break
        await asyncio.sleep(POLL)
    return record


async def _run(db: Any, settings: Settings, result: RingResult, event: CallEvent, wait: float):
    publisher = build_publisher(settings)  # the connector's own choice of transport
    expected = {d for r in result.explanation.rings for d in r["devices"]}

    def served(record: dict[str, Any]) -> bool:
        done = {
            e.get("docId")
            for e in devices_of(record).values()
            if e.get("incoming") in (SENT, FAILED)
        }
        return expected <= done

    try:
        started = time.monotonic()
        await publisher.publish(event)
        result.sent = True
        record = await _wait(db, event, served, started + wait)
        if served(record):
            result.latency_ms = round((time.monotonic() - started) * 1000, 1)
        entries = sorted(devices_of(record).values(), key=lambda e: str(e.get("docId")))
        result.devices = [
            {"user": e.get("userId"), "device": e.get("docId"), "push": e.get("incoming")}
            for e in entries
        ]
        result.missing = sorted(expected - {d["device"] for d in result.devices})
        ended = replace(
            event,
            kind=Kind.ENDED,
            outcome=Outcome.UNKNOWN.value,  # nobody answered nor missed it: no missed notice
            occurred_at=time.time(),
            detected_at=time.time(),
        )
        await publisher.publish(ended)
        pushed = {d["device"] for d in result.devices if d["push"] == SENT}

        def over(record: dict[str, Any]) -> bool:
            cancelled = {e.get("docId") for e in devices_of(record).values() if e.get("cancel")}
            return bool(record.get("over")) and pushed <= cancelled

        record = await _wait(db, event, over, time.monotonic() + wait)
        result.ended = bool(record.get("over"))
        result.cancelled = sorted(
            str(e.get("docId")) for e in devices_of(record).values() if e.get("cancel")
        )
    finally:
        await publisher.close()


def ring(
    db: Any, settings: Settings, number: str, relay: str, server_id: int = 1, *, wait: float = 10.0
) -> RingResult:
    """Explain first (who should ring); send only when somebody would."""
    endpoint = parse_relay(relay).endpoint
    explanation = explain(db, settings, number, relay, server_id)
    event = test_event(number, endpoint, server_id, time.time())
    result = RingResult(event.linkedid, transport_of(settings), explanation)
    if not explanation.rings:
        return result
    asyncio.run(_run(db, settings, result, event, wait))
    return result
