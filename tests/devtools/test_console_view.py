"""What the console shows, from documents and push records (devtools.console.view, pure)."""

from __future__ import annotations

import sys
import types
from datetime import UTC, datetime

from devtools.console import view
from devtools.console.sources import run_doctor_once

PBX = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def record(data: dict, *, time: float, token: str = "demo-token-kim-android", **extra) -> dict:
    message = {"token": token, "data": data, **extra}
    return {"time": time, "status": 200, "body": {"message": message}, "target": token}


def incoming(linkedid: str, time: float, **data) -> dict:
    return record(
        {
            "type": "incoming_call",
            "linkedid": linkedid,
            "caller_name": "김철수",
            "caller_number": "01026132471",
            "receiver_number": "07045144801",
            "timestamp": "2026-12-01T10:00:00Z",
            "my_company_name": "데모상사",
            "my_extension": "1010",
            "user_id": "demo-kim",
            **data,
        },
        time=time,
        notification={"title": "수신전화", "body": "김철수"},
    )


def test_incoming_card_shows_what_the_phone_shows() -> None:
    card = view.push_card(incoming("1.1", PBX.timestamp() + 0.1))
    assert card["kind"] == "incoming" and card["delivered"]
    assert (card["title"], card["callerName"], card["callerNumber"]) == (
        "수신전화",
        "김철수",
        "01026132471",
    )
    assert card["company"] == "데모상사" and card["extension"] == "1010"
    assert card["device"] == "demo-tok…roid"  # a device is named, its token not shown whole


def test_cancel_card_names_the_device_owner_and_missed_card_its_call() -> None:
    t = PBX.timestamp()
    cancel = record(
        {"type": "incoming_call_cancelled", "linkedid": "1.1", "action": "caller_hung_up"},
        time=t + 2,
    )
    missed = record(
        {"type": "missed_call", "missed_linkedid": "1.1", "caller_name": "김철수"},
        time=t + 3,
        notification={"title": "부재중 전화", "body": "김철수"},
    )
    dry_run = {**incoming("1.1", t + 4), "validate_only": True}
    cards = view.push_cards([incoming("1.1", t + 1), cancel, missed, dry_run])
    assert [c["kind"] for c in cards] == ["missed", "cancel", "incoming"]  # newest first
    assert cards[1]["userId"] == "demo-kim" and cards[1]["action"] == "caller_hung_up"
    assert cards[0]["linkedid"] == "1.1" and cards[0]["title"] == "부재중 전화"


def test_failed_send_is_marked_with_fcm_status() -> None:
    failed = {
        **incoming("1.1", 0.0),
        "status": 404,
        "response": {"error": {"status": "NOT_FOUND"}},
    }
    card = view.push_card(failed)
    assert not card["delivered"] and card["error"] == "NOT_FOUND"


def test_call_row_lifecycle_and_latency_from_the_pbx_timestamp() -> None:
    t = PBX.timestamp()
    own = {
        "linkedid": "1.1",
        "callerName": "김철수",
        "callerNumber": "01026132471",
        "receiverNumber": "07045144801",
        "timestamp": PBX,
        "recipientUserIds": ["demo-kim", "demo-lee"],
        "answeredAt": PBX,
        "answeredBy": "1010",
        "endedAt": PBX,
        "outcome": "answered",
        "cancelledBy": "answered_elsewhere",
        "duration": 12,
    }
    history = {"1.1": own, "1.1_demo-lee": {**own, "userId": "demo-lee"}}
    ledger = [
        {"linkedid": "1.1", "devices": {"a": {"incoming": "sent"}, "b": {"incoming": "sent"}}}
    ]
    pushes = [incoming("1.1", t + 0.25), incoming("1.1", t + 0.4, user_id="demo-lee")]
    (row,) = view.call_rows(history, ledger, pushes)
    assert row["state"] == "ended" and row["outcome"] == "answered"
    assert row["answeredBy"] == "1010" and row["duration"] == 12
    assert row["latencyMs"] == 250  # the first incoming push, from the PBX's own timestamp
    assert row["devicesRung"] == 2 and row["recipients"] == ["demo-kim", "demo-lee"]


def test_calls_newest_first_ringing_until_answered() -> None:
    t = PBX.timestamp()
    history = {
        "1.1": {"linkedid": "1.1", "timestamp": PBX},
        "2.2": {"linkedid": "2.2", "timestamp": datetime.fromtimestamp(t + 60, UTC)},
    }
    rows = view.call_rows(history, [], [])
    assert [r["linkedid"] for r in rows] == ["2.2", "1.1"]
    assert {r["state"] for r in rows} == {"ringing"} and rows[0]["latencyMs"] is None


def test_relay_counters_total_the_per_reason_maps() -> None:
    doc = {
        "relay": "ws://127.0.0.1:7099",
        "state": "connected",
        "connected": True,
        "since": PBX,
        "counters": {"frames": 9, "events": 3, "badFrames": {"not_json": 2, "oversize": 1}},
    }
    (row,) = view.relay_rows({"127.0.0.1:7099": doc})
    assert row["counters"] == {"frames": 9, "events": 3, "badFrames": 3}
    assert row["since"] == "2026-12-01T10:00:00Z" and row["state"] == "connected"


def test_doctor_unavailable_until_the_admin_package_has_one(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "functions.admin.doctor", None)  # import fails
    shown = run_doctor_once(client=None)
    assert shown["available"] is False and shown["error"].startswith("doctor unavailable")


def test_a_failing_doctor_is_shown_not_raised(monkeypatch) -> None:
    broken = types.ModuleType("functions.admin.doctor")

    def run_doctor(db, settings, *, live=False):
        raise RuntimeError("half-written rule")

    broken.run_doctor = run_doctor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "functions.admin.doctor", broken)
    shown = run_doctor_once(client=None, env={"GOOGLE_CLOUD_PROJECT": "demo"})
    assert shown["available"] and "half-written rule" in shown["error"]
