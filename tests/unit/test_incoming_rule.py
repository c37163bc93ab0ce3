"""The seed's rule (seed/WEBSOCKET_INCOMING_CALL_TEST.md) and the refinements on top of it."""

from __future__ import annotations

import pytest

from functions.core.incoming_rule import (
    caller_display_name,
    channel_peer,
    derived_linkedid,
    dialled_number_signal,
    is_dialled_number,
    is_root_channel,
    match_incoming,
    match_trunk_root,
    parse_timestamp,
    seed_rule,
)

PREFIXES = ("trk",)

# The seed's full example (its Python test script), as the relay delivers it.
SEED_EVENT = {
    "Event": "Newchannel",
    "Privilege": "call,all",
    "Timestamp": "1762257300.238151",
    "Channel": "PJSIP/DKCT-000001b1",
    "ChannelState": "4",
    "ChannelStateDesc": "Ring",
    "CallerIDNum": "01026132471",
    "CallerIDName": "김철수",
    "ConnectedLineNum": "",
    "ConnectedLineName": "",
    "Language": "en",
    "AccountCode": "",
    "Context": "trk-11-in",
    "Exten": "07045144801",
    "Priority": "1",
    "Uniqueid": "1762257300.677",
    "Linkedid": "1762257300.677",
}
# The seed's short wscat example: no Channel, no ids.
SEED_SHORT = {
    "Event": "Newchannel",
    "Context": "trk-11-in",
    "CallerIDNum": "01026132471",
    "CallerIDName": "김철수",
    "Exten": "07045144801",
    "ChannelStateDesc": "Ring",
}


def incoming(data: dict, frame_type: int = 3, prefixes=PREFIXES):
    return match_incoming(frame_type, 1, data, prefixes)


def test_seed_example_rings_with_its_fields():
    call = incoming(SEED_EVENT)
    assert call is not None
    assert (call.caller_number, call.caller_name, call.dialled_number) == (
        "01026132471",
        "김철수",
        "07045144801",
    )
    assert call.linkedid == "1762257300.677" and call.channel == "PJSIP/DKCT-000001b1"
    assert call.pbx_timestamp == 1762257300.238151


def test_seed_short_example_rings_with_a_derived_stable_id():
    call = incoming(SEED_SHORT)
    assert call is not None and call.dialled_number == "07045144801"
    assert call.linkedid.startswith("frame-")
    assert call.linkedid == incoming(dict(SEED_SHORT)).linkedid
    assert call.linkedid != derived_linkedid(2, SEED_SHORT)  # another PBX, another call
    assert call.pbx_timestamp is None


@pytest.mark.parametrize(
    ("fields", "number", "name"),
    [
        # The seed's four scenarios.
        ({"CallerIDNum": "010-1234-5678", "CallerIDName": "김철수"}, "010-1234-5678", "김철수"),
        ({"CallerIDNum": "010-1234-5678", "CallerIDName": ""}, "010-1234-5678", "010-1234-5678"),
        ({"CallerIDNum": "+82-10-1234-5678"}, "+82-10-1234-5678", "김철수"),
        (
            {"CallerIDNum": "010-1234-5678", "CallerIDName": "홍길동 부장님"},
            "010-1234-5678",
            "홍길동 부장님",
        ),
        # Asterisk's placeholder is no name.
        ({"CallerIDName": "<unknown>"}, "01026132471", "01026132471"),
        ({"CallerIDName": "  "}, "01026132471", "01026132471"),
    ],
)
def test_seed_caller_scenarios(fields, number, name):
    call = incoming(SEED_EVENT | fields)
    assert call is not None and (call.caller_number, call.caller_name) == (number, name)


@pytest.mark.parametrize(
    ("frame_type", "fields"),
    [
        (1, {}),  # the seed: type is not 3
        (3, {"Event": "Hangup"}),  # the seed: Event is not Newchannel
        (3, {"Context": "from-internal"}),  # the seed: Context does not start with trk
        (3, {"Context": "xtrk-11-in"}),
    ],
)
def test_seed_non_ringing_examples(frame_type, fields):
    assert not seed_rule(frame_type, SEED_EVENT | fields, PREFIXES)
    assert incoming(SEED_EVENT | fields, frame_type) is None


def test_outbound_call_on_the_trunk_does_not_ring():
    outbound = SEED_EVENT | {
        "Exten": "s",
        "ChannelState": "0",
        "ChannelStateDesc": "Down",
        "Uniqueid": "1762257300.680",
    }
    assert seed_rule(3, outbound, PREFIXES)  # the seed alone would have rung on it
    assert not is_root_channel(outbound)
    assert incoming(outbound) is None and match_trunk_root(3, 1, outbound, PREFIXES) is None


def test_root_with_exten_s_waits_for_its_number():
    pending = SEED_EVENT | {"Exten": "s"}
    assert incoming(pending) is None
    root = match_trunk_root(3, 1, pending, PREFIXES)
    assert root is not None and root.dialled_number == "" and root.linkedid == "1762257300.677"
    assert incoming(SEED_EVENT | {"Exten": ""}) is None


def test_local_channel_is_never_the_root():
    local = SEED_EVENT | {"Channel": "Local/07045144801@trk-11-in-00000001;2"}
    assert not is_root_channel(local) and incoming(local) is None


def test_trunk_prefixes_are_configuration():
    freepbx = SEED_EVENT | {"Context": "from-pstn"}
    assert incoming(freepbx) is None
    assert incoming(freepbx, prefixes=("from-pstn", "from-trunk")) is not None
    assert incoming(SEED_EVENT, prefixes=()) is None


@pytest.mark.parametrize(
    ("fields", "rings"),
    [
        ({"Context": None}, False),
        ({"Context": 5}, False),
        ({"CallerIDNum": None}, False),  # the seed: required and must be a string
        ({"Exten": None}, False),
        ({"Exten": ["07045144801"]}, False),
        ({"CallerIDName": None}, True),
        ({"CallerIDName": 7}, True),
        ({"Channel": None}, True),
        ({"Uniqueid": None, "Linkedid": None}, True),
        ({"Uniqueid": {"x": 1}}, True),
        ({"Timestamp": None}, True),
    ],
)
def test_non_string_and_null_values_count_as_absent(fields, rings):
    call = incoming(SEED_EVENT | fields)
    assert (call is not None) == rings
    if call is not None:
        assert isinstance(call.caller_name, str) and isinstance(call.linkedid, str)


def test_caller_name_of_non_strings():
    assert caller_display_name({"CallerIDNum": None, "CallerIDName": None}) == ""


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("1762257300.238151", 1762257300.238151),
        ("", None),
        ("x", None),
        ("nan", None),
        ("inf", None),
        ("-1", None),
        ("0", None),
    ],
)
def test_parse_timestamp(raw, parsed):
    assert parse_timestamp({"Timestamp": raw}) == parsed


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("07045144801", True),
        ("+31150010001", True),
        ("010-1234-5678", True),
        ("*8", True),
        ("s", False),
        ("h", False),
        ("", False),
        ("failed", False),
        ("+", False),
        ("1010a", False),
    ],
)
def test_is_dialled_number(value, ok):
    assert is_dialled_number(value) is ok


@pytest.mark.parametrize(
    ("data", "number"),
    [
        ({"Event": "VarSet", "Variable": "__FROM_DID", "Value": "07045144801"}, "07045144801"),
        ({"Event": "VarSet", "Variable": "FROM_DID", "Value": " 07045144801 "}, "07045144801"),
        ({"Event": "VarSet", "Variable": "FROM_DID", "Value": "s"}, ""),
        ({"Event": "VarSet", "Variable": "DID", "Value": "07045144801"}, ""),
        ({"Event": "Newexten", "Context": "trk-11-in", "Exten": "07045144801"}, "07045144801"),
        ({"Event": "Newexten", "Context": "trk-11-in", "Extension": "0704514"}, "0704514"),
        ({"Event": "Newexten", "Context": "ext-did-0002", "Exten": "0704514"}, "0704514"),
        ({"Event": "Newexten", "Context": "from-internal", "Exten": "1010"}, ""),
        ({"Event": "Newexten", "Context": "trk-11-in", "Exten": "h"}, ""),
        ({"Event": "Newchannel", "Context": "trk-11-in", "Exten": "0704514"}, ""),
        ({"Event": "VarSet", "Variable": None, "Value": None}, ""),
    ],
)
def test_dialled_number_signal(data, number):
    assert dialled_number_signal(data, PREFIXES, ("ext-did",)) == number


@pytest.mark.parametrize(
    ("channel", "peer"),
    [
        ("PJSIP/1010-0000001a", "1010"),
        ("SIP/150010002-0000000e", "150010002"),
        ("SIP/voipgrid-siproute-docker-00000037", "voipgrid-siproute-docker"),
        ("Local/ID730151@osvpi_route_phoneaccount-00000007;2", "ID730151"),
        ("PJSIP/1010", "1010"),
        ("", ""),
        (None, ""),
    ],
)
def test_channel_peer(channel, peer):
    assert channel_peer(channel) == peer
