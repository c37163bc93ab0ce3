import pytest

from functions.core.call_event import CallEvent, Kind
from functions.core.push import (
    FCM_PAYLOAD_LIMIT,
    INCOMING_TITLE,
    MISSED_TITLE,
    cancel_push,
    incoming_push,
    missed_push,
    payload_size,
)
from functions.core.recipients import Device, Recipient

NOW = 1762257300.5


def event(**overrides):
    base = dict(
        kind=Kind.RINGING,
        relay="pbx:7099",
        server_id=1,
        linkedid="1762257300.677",
        caller_number="01026132471",
        caller_name="김철수",
        dialled_number="07045144801",
        channel="PJSIP/DKCT-000001b1",
        occurred_at=1762257300.238151,
        detected_at=NOW,
    )
    return CallEvent(**{**base, **overrides})


RECIPIENT = Recipient("u1", "1010", "데모상사", "대표", "070-4514-4801", True, "010-9876-5432")
DEVICE = Device("u1_pixel_Android", "tok-1", "android", "pixel")


def test_incoming_push_has_the_apps_fields_all_strings():
    push = incoming_push(event(), RECIPIENT, DEVICE, now=NOW, ring_window=60)
    assert push.title == INCOMING_TITLE and push.body == "김철수"
    assert push.data == {
        "type": "incoming_call",
        "caller_number": "01026132471",
        "caller_name": "김철수",
        "receiver_number": "07045144801",
        "linkedid": "1762257300.677",
        "channel": "PJSIP/DKCT-000001b1",
        "call_type": "external",
        "timestamp": "2025-11-04T11:55:00.238151Z",
        "user_id": "u1",
        "my_extension": "1010",
        "my_company_name": "데모상사",
        "my_external_cid_name": "대표",
        "my_external_cid_number": "070-4514-4801",
        "is_call_forward_enabled": "true",
        "call_forward_destination": "010-9876-5432",
    }
    assert all(isinstance(v, str) for v in push.data.values())
    assert push.channel_id == "incoming_call_channel"
    assert push.apns_headers["apns-priority"] == "10"
    assert push.tag == push.collapse_key == push.apns_headers["apns-collapse-id"]
    assert len(push.apns_headers["apns-collapse-id"].encode()) <= 64


@pytest.mark.parametrize(
    ("name", "number", "shown"),
    [
        ("", "010-1234-5678", "010-1234-5678"),
        ("홍길동 부장님", "010-1234-5678", "홍길동 부장님"),
        ("", "+82-10-1234-5678", "+82-10-1234-5678"),
    ],
)
def test_seed_scenarios_caller_display(name, number, shown):
    push = incoming_push(
        event(caller_name=name, caller_number=number), RECIPIENT, DEVICE, now=NOW, ring_window=60
    )
    assert push.body == shown and push.data["caller_name"] == shown
    assert push.data["caller_number"] == number


def test_ttl_and_apns_expiration_end_with_the_ring_window():
    push = incoming_push(event(), RECIPIENT, DEVICE, now=NOW + 20, ring_window=60)
    assert push.ttl_seconds == 40
    assert int(push.apns_headers["apns-expiration"]) == int(NOW + 60)


def test_collapse_ids_differ_per_call_and_per_pbx():
    a = incoming_push(event(), RECIPIENT, DEVICE, now=NOW, ring_window=60)
    b = incoming_push(event(linkedid="other"), RECIPIENT, DEVICE, now=NOW, ring_window=60)
    c = incoming_push(event(server_id=2), RECIPIENT, DEVICE, now=NOW, ring_window=60)
    assert len({a.tag, b.tag, c.tag}) == 3


def test_huge_names_are_clipped_under_fcms_limit():
    push = incoming_push(event(caller_name="가" * 5000), RECIPIENT, DEVICE, now=NOW, ring_window=60)
    assert payload_size(push) < FCM_PAYLOAD_LIMIT
    assert push.data["caller_name"].endswith("…")


def test_cancel_is_data_only_background_with_action():
    push = cancel_push(event(kind=Kind.ANSWERED), DEVICE, action="answered_elsewhere", now=NOW)
    assert push.title is None
    assert push.data["type"] == "incoming_call_cancelled"
    assert push.data["linkedid"] == "1762257300.677" and push.data["action"] == "answered_elsewhere"
    assert push.apns_background and push.apns_headers["apns-push-type"] == "background"


def test_missed_replaces_incoming_and_cannot_open_the_incoming_screen():
    incoming = incoming_push(event(), RECIPIENT, DEVICE, now=NOW, ring_window=60)
    missed = missed_push(event(kind=Kind.ENDED), DEVICE, now=NOW)
    assert missed.title == MISSED_TITLE and missed.data["type"] == "missed_call"
    assert missed.tag == incoming.tag
    assert not ("linkedid" in missed.data and "call_type" in missed.data)
