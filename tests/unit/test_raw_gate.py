"""The compiled raw gate (functions/core/_raw_gate.c) gives the Python rules' answer for every
frame (functions/core/raw_gate.py), and the connector uses it (issue 17, ingest at the limit).
`make install` builds it; a checkout without it still runs the Python rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.mix import build_all_parse_frames, build_frames
from functions.connector import ingest as ingest_module
from functions.core import _raw_gate, raw_gate  # type: ignore[attr-defined]
from functions.core.call_tracker import CallTracker
from functions.core.raw_gate import compiled_may_matter, python_may_matter

PREFIXES = (b"trk", b"voipgrid_in")
TRACKER = CallTracker("r:1", ("trk",))
HANDLED = TRACKER._wanted_all  # every name the tracker handles
STATES = [
    (frozenset({b"Newchannel"}), (), PREFIXES),  # nothing in progress
    (HANDLED, (b"1762257300.0",), PREFIXES),
    (HANDLED, (b"1.1", b"2.2", b"1762257300.3"), PREFIXES),
    (HANDLED, None, PREFIXES),  # too many calls to scan: every wanted frame is parsed
    (HANDLED, (b"",), ()),  # an empty id occurs in everything; no prefix starts a call
    (frozenset(), (), PREFIXES),
    (HANDLED, (b"x" * 5000,), (b"",)),  # an id longer than the frame; an empty prefix
]


def test_the_compiled_gate_is_built_and_the_connector_uses_it():
    assert raw_gate.COMPILED, "functions.core._raw_gate is not built: run `make install`"
    assert ingest_module.may_matter is compiled_may_matter
    # the build is optional: a failed rebuild would leave an older .so in place
    built = Path(_raw_gate.__file__).stat().st_mtime
    source = Path(raw_gate.__file__).with_name("_raw_gate.c").stat().st_mtime
    assert built >= source, "functions/core/_raw_gate.c is newer than its build: make install"


@pytest.mark.parametrize("state", range(len(STATES)))
def test_same_answers_on_both_benchmark_mixes(state):
    wanted, ids, prefixes = STATES[state]
    frames = build_frames(3000) + build_all_parse_frames(1000)
    python = [python_may_matter(f, wanted, ids, prefixes) for f in frames]
    assert [compiled_may_matter(f, wanted, ids, prefixes) for f in frames] == python
    assert any(python) or not wanted  # the states do let some frames through


EDGES = [
    b"",
    b'"Event"',
    b'"Event":"Hangup"',
    b'{"data": {"Event" \t:\n "Hangup", "Linkedid": "1.1"}}',
    b'{"data": {"Event": "Hangup}}',  # no closing quote: no name
    b'{"data": {"Event": "AOC-D", "Event": "Hangup", "Linkedid": "1.1"}}',  # the second
    b'{"data": {"Event": "", "Event": "Hangup", "Uniqueid": "1.1"}}',
    b'{"data": {"Event"Event": "Hangup", "Linkedid": "1.1"}}',  # overlapping keys
    b'{"data": {"XEvent": "Hangup", "Linkedid": "1.1"}}',  # not the key
    b'{"data": {"Event": "Hangup", "Linkedid": "1\\u002e1"}}',  # an escape: parsed
    b'{"data": {"Event": "Newchannel", "Context": "trk-1-in"}}',
    b'{"data": {"Event": "Newchannel", "Context": "from-internal"}}',
    b'{"data": {"Event": "Newchannel", "Context":  "trk"}}',
    b'{"data": {"Event": "Newchannel", "Context": null}}',
    b'{"data": {"Event": "Newchannel", "Context": 5, "x": "trk"}}',
    b'{"data": {"Event": "Newchannel", "DestContext": "from-internal"}}',
    b'{"data": {"Event": "Newchannel", "Context": "a", "Context": "trk"}}',
    b'{"data": {"Event": "Newchannel", "Context":"',
    b'Context":"trk", "Event": "Newchannel"',  # the key at the very start
    b'{"data": {"Event": "Newchannel", "Context": "voipgrid_in"}}',
    b'{"data": {"Event": "Newchannel", "Context": "voipgrid_i"}}',
    b'{"data": {"Event": "Hangup"Event", "Linkedid": "9"}}',  # the name's own quote
    # found in review: what a JSON reader reads differs from the first raw match
    b'{"data": {"Event": "Newchannel", "Context": "\\u0074rk-in"}}',
    b'{"data": {"Event": "Newchannel", "Context": "internal", "Context" : "trk-in"}}',
    b'{"data": {"Event": "Newchannel", "Context": "internal", "Con\\u0074ext": "trk-in"}}',
    b'{"data": {"Event": "VarSet", "Context": "trk-in", "Event": "Newchannel"}}',
    b'{"data": {"Event": "VarSet", "Context": "trk-in", "Even\\u0074": "Newchannel"}}',
    b'{"data": {"Event": "Hangup", "Linkedid": "x", "Value": "a \\"quoted\\" \\\\ b"}}',
]


@pytest.mark.parametrize("payload", EDGES, ids=repr)
@pytest.mark.parametrize("state", range(len(STATES)))
def test_same_answers_on_frames_built_to_trip_a_raw_reader(payload, state):
    wanted, ids, prefixes = STATES[state]
    python = python_may_matter(payload, wanted, ids, prefixes)
    assert compiled_may_matter(payload, wanted, ids, prefixes) is python


PIECES = [
    b'"Event"',
    b'"Context":',
    b"Context",
    b":",
    b" ",
    b"\t",
    b"\x0b",
    b'"',
    b"Hangup",
    b"Newchannel",
    b"trk",
    b"1.1",
    b"\\",
    b"x",
    b"{",
    b"-",
    b"\x00",
    b"\xff",
    b"u",
    b"\\u",
    b"E",
    b"Event",
]


@settings(max_examples=1500, deadline=None)
@given(
    payload=st.lists(st.sampled_from(PIECES), max_size=24).map(b"".join) | st.binary(max_size=64),
    wanted=st.frozensets(st.sampled_from([b"Hangup", b"Newchannel", b"x", b"Event"])),
    ids=st.none() | st.lists(st.sampled_from([b"1.1", b"x", b"", b'"', b"2.2"])).map(tuple),
    prefixes=st.lists(st.sampled_from([b"trk", b"", b"x", b"\\"]), max_size=3).map(tuple),
)
def test_same_answers_on_random_bytes(payload, wanted, ids, prefixes):
    python = python_may_matter(payload, wanted, ids, prefixes)
    assert compiled_may_matter(payload, wanted, ids, prefixes) is python


@pytest.mark.parametrize(
    "args",
    [
        ("text", frozenset(), (), ()),
        (b"", [], (), ()),
        (b"", frozenset(), [b"1"], ()),
        (b"", frozenset(), ("1",), ()),
        (b"", frozenset(), (), ("trk",)),
        (b"",),
    ],
    ids=repr,
)
def test_wrong_arguments_raise_instead_of_crashing(args):
    with pytest.raises(TypeError):
        compiled_may_matter(*args)


def test_a_plain_set_of_names_is_accepted_too():
    frame = b'{"data": {"Event": "Hangup", "Linkedid": "1.1"}}'
    assert compiled_may_matter(frame, {b"Hangup"}, (b"1.1",), ()) is True
    assert compiled_may_matter(frame, {b"Hangup"}, (b"2.2",), ()) is False
