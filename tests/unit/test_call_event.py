from dataclasses import replace

import orjson
import pytest

from functions.core.call_event import CallEvent, InvalidCallEvent, Kind, parse_call_event

EVENT = CallEvent(
    kind=Kind.RINGING,
    relay="pbx:7099",
    server_id=1,
    linkedid="1.677",
    caller_number="01026132471",
    caller_name="김철수",
    dialled_number="07045144801",
    channel="PJSIP/x",
    occurred_at=1762257300.25,
    detected_at=1762257300.5,
    server_name="dcrm",
)


def test_round_trip_keeps_every_field():
    assert parse_call_event(EVENT.to_json()) == EVENT


def test_wire_format_is_versioned_with_iso_times():
    body = orjson.loads(EVENT.to_json())
    assert body["version"] == 1 and body["kind"] == "ringing"
    assert body["occurred_at"] == "2025-11-04T11:55:00.250000Z"
    assert EVENT.attributes() == {"kind": "ringing", "version": "1"}
    assert "0102" not in str(EVENT.attributes())


def test_identity_is_the_pbx_and_linkedid_not_the_message():
    other_pbx = replace(EVENT, server_id=2)
    assert EVENT.call_key == "pbx:7099/1/1.677"
    assert other_pbx.call_key != EVENT.call_key and other_pbx.call_hash != EVENT.call_hash


def test_unknown_extra_fields_are_accepted():
    body = orjson.loads(EVENT.to_json()) | {"future_field": {"x": 1}}
    assert parse_call_event(orjson.dumps(body)) == EVENT


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.update(version=2),
        lambda b: b.update(kind="exploded"),
        lambda b: b.update(server_id="1"),
        lambda b: b.update(linkedid=""),
        lambda b: b.pop("dialled_number"),
        lambda b: b.update(caller_name=5),
        lambda b: b.update(occurred_at="yesterday"),
        lambda b: b.update(occurred_at=1762257300),
        lambda b: b.update(kind="ended", outcome="whatever"),
    ],
)
def test_malformed_events_are_rejected(mutate):
    body = orjson.loads(EVENT.to_json())
    mutate(body)
    with pytest.raises(InvalidCallEvent):
        parse_call_event(orjson.dumps(body))


@pytest.mark.parametrize("raw", [b"", b"nope", b"[]", b"null"])
def test_non_objects_are_rejected(raw):
    with pytest.raises(InvalidCallEvent):
        parse_call_event(raw)


def test_the_test_marker_round_trips_and_defaults_to_false():
    import orjson
    import pytest as _pytest

    from functions.core.call_event import CallEvent, InvalidCallEvent, Kind, parse_call_event

    event = CallEvent(Kind.RINGING, "r:1", 1, "1.1", "010", "", "070", "PJSIP/x", 1.0, 1.0)
    assert parse_call_event(event.to_json()).test is False
    marked = orjson.loads(event.to_json()) | {"test": True}
    assert parse_call_event(orjson.dumps(marked)).test is True
    legacy = {k: v for k, v in orjson.loads(event.to_json()).items() if k != "test"}
    assert parse_call_event(orjson.dumps(legacy)).test is False
    with _pytest.raises(InvalidCallEvent):
        parse_call_event(orjson.dumps(marked | {"test": "yes"}))
