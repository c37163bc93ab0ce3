"""The ingest reads a wanted frame's ids (or a Newchannel's context) from its raw bytes and
parses only the frames that may matter (issue 17, ingest at the limit). Skipping must never
change what the tracker emits: checked against the parse-everything path on the benchmark's
real-traffic mix, its all-parse mix, and frames built to trip a raw reader."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.mix import build_all_parse_frames, build_frames
from devtools.demo_data import seed_frame
from functions.connector import ingest as ingest_module
from functions.connector.ingest import RelayIngest
from functions.core.call_tracker import CallTracker
from functions.core.raw_gate import python_may_matter

PREFIXES = ("trk", "voipgrid_in")


def run(frames: list[bytes], raw_checks: bool, gate=None) -> tuple[list[tuple], int]:
    """(the events, how many frames were parsed). `gate`: the raw gate to use (default: the
    one the connector uses, compiled when built)."""
    parsed = 0
    real_load = ingest_module.load_frame
    real_gate = ingest_module.may_matter

    def counting_load(*args, **kwargs):
        nonlocal parsed
        parsed += 1
        return real_load(*args, **kwargs)

    tracker = CallTracker("r:1", PREFIXES)
    ingest = RelayIngest("r:1", tracker, 262144)
    events = []
    ingest_module.load_frame = counting_load
    if not raw_checks:
        ingest_module.may_matter = lambda *args: True
    elif gate is not None:
        ingest_module.may_matter = gate
    try:
        for n, raw in enumerate(frames):
            events += [
                (e.kind, e.linkedid, e.outcome, e.answered_by, e.dialled_number)
                for e in ingest.on_frame(raw, 1e9 + n * 0.01)
            ]
    finally:
        ingest_module.load_frame = real_load
        ingest_module.may_matter = real_gate
    return events, parsed


@pytest.mark.parametrize("gate", [None, python_may_matter], ids=["connector's", "python"])
@pytest.mark.parametrize("mix", [build_frames, build_all_parse_frames])
def test_raw_checks_skip_more_and_change_nothing(mix, gate):
    frames = mix(4000)
    parsed, parsed_count = run(frames, raw_checks=False)
    raw, raw_count = run(frames, raw_checks=True, gate=gate)
    assert raw == parsed and len(raw) >= 20
    assert raw_count < parsed_count / 2, (raw_count, parsed_count)


def amiws(data: dict) -> bytes:
    """amiws's layout: `"Key": "Value"`, Event first."""
    body = ",".join(f'"{k}": {orjson.dumps(v).decode()}' for k, v in data.items())
    return b'{ "type": 3, "server_id": 1, "server_name": "pbx", "data": {' + body.encode() + b"}}"


def ringing_frame(**changes) -> dict:
    data = seed_frame("100.1", "1762257300.0")["data"]
    return {"Event": data.pop("Event"), **data, **changes}


def test_a_repeated_context_is_parsed_as_json_readers_read_it():
    raw = amiws(ringing_frame(Context="from-internal"))
    # the last of two Context keys wins, as orjson reads it: a trunk call
    twice = raw.replace(b'"Context": "from-internal"', b'"Context": "x", "Context": "trk-1-in"')
    assert b'"Context": "x"' in twice
    assert len(run([twice], raw_checks=True)[0]) == 1
    assert run([raw], raw_checks=True)[0] == []


@pytest.mark.parametrize("context", [None, 5, "trk-11-in", "\\u0074rk-1", "from-pstn"], ids=repr)
def test_unusual_contexts_take_the_parsing_path(context):
    frame = ringing_frame(Context=context)
    raw = amiws(frame)
    assert run([raw], raw_checks=True)[0] == run([raw], raw_checks=False)[0]


def test_an_event_naming_a_call_only_by_an_unusual_id_is_still_read():
    start = amiws(ringing_frame())
    hangup = {"Event": "Hangup", "Uniqueid": "100.1", "Linkedid": "100.1", "Cause": "16"}
    for variant in (
        hangup,
        {"Event": "Hangup", "Uniqueid": "100.1", "Cause": "16"},  # AMI 1.3: no Linkedid
        {"Event": "Hangup", "Linkedid": "9.9", "Uniqueid": "100.1", "Cause": "17"},
    ):
        events, _ = run([start, amiws(variant)], raw_checks=True)
        assert [e[0].value for e in events] == ["ringing", "ended"], variant
    other = {"Event": "Hangup", "Uniqueid": "100.2", "Linkedid": "100.2", "Cause": "16"}
    events, parsed = run([start, amiws(other)], raw_checks=True)
    assert len(events) == 1 and parsed == 1  # the other call's Hangup was not even parsed


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "Event": st.sampled_from(["Newchannel", "Hangup", "DialEnd", "VarSet"]),
                "Context": st.one_of(st.sampled_from(["trk-1", "from-internal"]), st.none()),
                "Uniqueid": st.sampled_from(["1.1", "1.2", "2.1"]),
                "Linkedid": st.sampled_from(["1.1", "1.2", "2.1", ""]),
                "Exten": st.sampled_from(["07045144801", "s"]),
                "CallerIDNum": st.just("01012345678"),
                "Channel": st.sampled_from(["PJSIP/a-1", "Local/1@x;1"]),
                "Variable": st.just("__FROM_DID"),
                "Value": st.just("07045144801"),
                "DialStatus": st.sampled_from(["ANSWER", "CANCEL"]),
                "DestChannel": st.just("PJSIP/201-2"),
            }
        ),
        max_size=12,
    )
)
def test_random_call_streams_give_the_same_events_either_way(stream):
    frames = [amiws(data) for data in stream]
    assert run(frames, raw_checks=True)[0] == run(frames, raw_checks=False)[0]


NEWCHANNEL_IN = (
    b'{ "type": 3, "server_id": 1, "server_name": "pbx", "data": {"Event": "%s", '
    b'"Channel": "PJSIP/trunk-00000001", "ChannelState": "4", "CallerIDNum": "01026132471", '
    b'"Exten": "07045144801", "Uniqueid": "100.1", "Linkedid": "100.1", %s}}'
)


@pytest.mark.parametrize("gate", [None, python_may_matter], ids=["connector's", "python"])
@pytest.mark.parametrize(
    "name, rest",
    [
        (b"Newchannel", b'"Context": "\\u0074rk-1-in"'),  # an escaped trunk context
        (b"Newchannel", b'"Context": "from-internal", "Context" : "trk-1-in"'),  # repeated
        (b"Newchannel", b'"Context": "from-internal", "Con\\u0074ext": "trk-1-in"'),
        (b"VarSet", b'"Context": "trk-1-in", "Event": "Newchannel"'),  # the last Event wins
        (b"VarSet", b'"Context": "trk-1-in", "Even\\u0074": "Newchannel"'),
    ],
    ids=["escaped-context", "repeated-context", "escaped-key", "last-event", "escaped-event"],
)
def test_frames_a_raw_reader_could_misread_still_start_their_call(name, rest, gate):
    """What a JSON reader reads (escapes decoded, the last of repeated keys) decides; the raw
    gate lets such frames through to the parser (found in review)."""
    raw = NEWCHANNEL_IN % (name, rest)
    parsed, _ = run([raw], raw_checks=False)
    assert [e[0].value for e in parsed] == ["ringing"], "the parser sees a trunk call"
    assert run([raw], raw_checks=True, gate=gate)[0] == parsed
