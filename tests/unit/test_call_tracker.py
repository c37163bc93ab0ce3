"""The call tracker on SYNTHETIC event sequences (the real captures are replayed in
test_corpus_outcomes.py). Every synthetic event copies the field layout of a real Asterisk 13+
event: the channel snapshot of the documented trunk Newchannel (fromdocs__envelope_examples),
DialBegin/DialEnd/BridgeEnter/Hangup as in the cacofonisk captures, Newexten/VarSet as in goami2's
capture. Only ids, names and numbers are made up.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.core.call_event import CallEvent, Kind
from functions.core.call_tracker import CallTracker, Dropped
from functions.core.frames import Frame
from tests.corpus import frames, load_events

RELAY = "pbx.example:7099"
T0 = 1_762_257_300.0
ROOT_ID = "1762257300.677"
TRUNK = "PJSIP/DKCT-000001b1"


def snapshot(channel: str, uniqueid: str, linkedid: str = ROOT_ID, **fields: str) -> dict:
    """A channel snapshot as Asterisk 13+ puts in every channel event."""
    base = {
        "Privilege": "call,all",
        "Channel": channel,
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
        "Uniqueid": uniqueid,
        "Linkedid": linkedid,
    }
    return base | fields


def frame(event: str, body: dict, server_id: int = 1, frame_type: int = 3) -> Frame:
    return Frame(frame_type, server_id, "dcrm.makecall.io", {"Event": event} | body)


def root(event: str = "Newchannel", **fields: str) -> Frame:
    return frame(event, snapshot(TRUNK, ROOT_ID, **fields))


def leg(event: str, channel: str, uniqueid: str, **fields: str) -> Frame:
    return frame(event, snapshot(channel, uniqueid, Context="from-internal", **fields))


def dial_end(channel: str, uniqueid: str, dest: str, status: str, **dest_fields: str) -> Frame:
    body = snapshot(channel, uniqueid) | {
        "DestChannel": dest,
        "DestCallerIDNum": dest_fields.pop("DestCallerIDNum", "07045144801"),
        "DestContext": "from-internal",
        "DestUniqueid": uniqueid + "9",
        "DestLinkedid": ROOT_ID,
        "DialStatus": status,
    }
    return frame("DialEnd", body | dest_fields)


def hangup(channel: str = TRUNK, uniqueid: str = ROOT_ID, cause: str = "16") -> Frame:
    return frame("Hangup", snapshot(channel, uniqueid, Cause=cause, **{"Cause-txt": "x"}))


def run(tracker: CallTracker, *stream: Frame) -> list[CallEvent]:
    out: list[CallEvent] = []
    for n, item in enumerate(stream):
        out.extend(tracker.feed(item, T0 + n))
    return out


def kinds(events: list[CallEvent]) -> list[str]:
    return [event.kind.value for event in events]


@pytest.fixture
def tracker() -> CallTracker:
    return CallTracker(RELAY, ["trk", "from-pstn"])


# --- ringing --------------------------------------------------------------------------------


def test_rings_once_with_the_seed_fields(tracker):
    (ring,) = run(tracker, root(Timestamp="1762257300.238151"), root())
    assert ring.kind is Kind.RINGING and ring.call_key == f"{RELAY}/1/{ROOT_ID}"
    assert (ring.caller_number, ring.caller_name, ring.dialled_number) == (
        "01026132471",
        "김철수",
        "07045144801",
    )
    assert ring.channel == TRUNK and ring.server_name == "dcrm.makecall.io"
    assert ring.occurred_at == 1762257300.238151 and ring.detected_at == T0
    assert tracker.active_calls == 1


def test_other_frame_types_and_unhandled_events_do_nothing(tracker):
    assert run(tracker, frame("Newchannel", snapshot(TRUNK, ROOT_ID), frame_type=4)) == []
    assert run(tracker, root("RTCPSent"), root("Newstate"), root("VarSet")) == []
    assert tracker.active_calls == 0


def test_outbound_and_local_channels_on_the_trunk_keep_no_state(tracker):
    outbound = snapshot(TRUNK, "1.700", "1.699", Exten="s", ChannelState="0")
    local = snapshot("Local/100@trk-out-0001;2", "1.800", "1.800")
    assert run(tracker, frame("Newchannel", outbound), frame("Newchannel", local)) == []
    assert tracker.active_calls == 0


def test_frame_without_ids_rings_with_a_derived_id(tracker):
    short = {"Context": "trk-11-in", "CallerIDNum": "01026132471", "Exten": "07045144801"}
    (ring,) = run(tracker, frame("Newchannel", short), frame("Newchannel", short))
    assert ring.linkedid.startswith("frame-")
    # Without ids a pending (`s`) root could never learn its number: not even remembered.
    assert run(tracker, frame("Newchannel", short | {"Exten": "s", "Channel": "SIP/x-1"})) == []


# --- pending roots (Exten s): SYNTHETIC captures -------------------------------------------


def pending_root() -> Frame:
    return root(Exten="s", ChannelState="0", ChannelStateDesc="Down")


def newexten(context: str, exten: str, channel: str = TRUNK, uid: str = ROOT_ID) -> Frame:
    body = snapshot(channel, uid, Context=context, Exten=exten)
    return frame("Newexten", body | {"Extension": exten, "Application": "Goto", "AppData": ""})


def varset(variable: str, value: str, channel: str = TRUNK, uid: str = ROOT_ID) -> Frame:
    body = snapshot(channel, uid, Exten="s") | {"Variable": variable, "Value": value}
    return frame("VarSet", body)


def test_synthetic_pending_root_rings_on_goto_into_the_did(tracker):
    # from-pstn-toheader style: `s` runs, then Goto(from-pstn,${DID},1) on the root channel.
    events = run(
        tracker,
        pending_root(),
        newexten("from-pstn-toheader", "s"),
        varset("TOHEADER", "sip:07045144801@pbx"),
        newexten("from-pstn", "07045144801"),
        newexten("from-pstn", "07045144801"),
    )
    (ring,) = events
    assert ring.dialled_number == "07045144801" and ring.detected_at == T0 + 3
    assert ring.caller_number == "01026132471" and ring.linkedid == ROOT_ID


def test_synthetic_pending_root_rings_on_from_did(tracker):
    (ring,) = run(tracker, pending_root(), varset("__FROM_DID", "07045144801"))
    assert ring.dialled_number == "07045144801"


def test_synthetic_pending_root_rings_on_a_freepbx_inbound_route(tracker):
    (ring,) = run(tracker, pending_root(), newexten("ext-did-0002", "07045144801"))
    assert ring.dialled_number == "07045144801"


@pytest.mark.parametrize(
    "signal",
    [
        newexten("from-internal", "1010"),  # an originate's dialplan, not a trunk context
        newexten("from-pstn", "h"),  # special extensions are no numbers
        newexten("from-pstn", "s"),
        varset("FROM_DID", "s"),  # from-trunk with Exten s sets FROM_DID=s
        varset("FROM_DIDX", "07045144801"),
        varset("FROM_DID", "07045144801", "Local/1@from-internal-0001;2", "1.900"),  # not root
        newexten("from-pstn", "07045144801", "PJSIP/DKCT-000001b2", "1.901"),
    ],
)
def test_synthetic_pending_root_ignores_other_signals(tracker, signal):
    assert run(tracker, pending_root(), signal) == []
    assert run(tracker, hangup()) == []  # a never-rung call ends silently...
    assert tracker.active_calls == 0  # ...and leaves nothing behind


def test_synthetic_pending_call_full_lifecycle(tracker):
    phone = "PJSIP/1010-0000001a"
    events = run(
        tracker,
        pending_root(),
        varset("__FROM_DID", "07045144801"),
        frame("DialBegin", snapshot(TRUNK, ROOT_ID) | {"DestChannel": phone}),
        dial_end(TRUNK, ROOT_ID, phone, "ANSWER", DestCallerIDNum="1010"),
        hangup(phone, "1762257300.680"),
        hangup(),
    )
    assert kinds(events) == ["ringing", "answered", "ended"]
    assert events[1].answered_by == "1010" and events[2].outcome == "answered"
    assert {e.dialled_number for e in events} == {"07045144801"}


# --- answer ---------------------------------------------------------------------------------


def test_answer_through_local_chain_names_the_phone(tracker):
    local1, local2 = "Local/1010@from-internal-0001;1", "Local/1010@from-internal-0001;2"
    phone = "PJSIP/1010-0000001a"
    events = run(
        tracker,
        root(),
        dial_end(local2, "1.2", phone, "ANSWER", DestCallerIDNum="07045144801"),
        dial_end(TRUNK, ROOT_ID, local1, "ANSWER"),
        dial_end(TRUNK, ROOT_ID, local1, "ANSWER"),  # replayed: no second ANSWERED
        hangup(),
    )
    assert kinds(events) == ["ringing", "answered", "ended"]
    assert events[1].answered_by == "1010"  # the DID echoed back is no identity: the device


def test_inner_answer_without_the_roots_answer_is_no_answer(tracker):
    """Voicemail or a call-acceptance prompt behind a Local channel: the root is never connected
    to a person, even though its Dial to the Local channel answered."""
    local1, local2 = "Local/vm@from-internal-0001;1", "Local/vm@from-internal-0001;2"
    events = run(
        tracker,
        root(),
        dial_end(TRUNK, ROOT_ID, local1, "ANSWER"),  # Local;2 ran Answer() itself
        hangup(local2, "1.2"),
        hangup(),
    )
    assert kinds(events) == ["ringing", "ended"] and events[-1].outcome == "no_answer"


def test_queue_agent_connect_answers(tracker):
    connect = snapshot(TRUNK, ROOT_ID) | {
        "Queue": "sales",
        "Interface": "Local/1011@from-queue/n",
        "MemberName": "Kim",
        "DestChannel": "Local/1011@from-queue-0002;1",
        "DestLinkedid": ROOT_ID,
    }
    events = run(tracker, root(), frame("AgentConnect", connect), hangup())
    assert kinds(events) == ["ringing", "answered", "ended"]
    assert events[1].answered_by == "1011"


def test_bridge_fallback_needs_root_and_leg_in_one_bridge(tracker):
    phone, uid = "PJSIP/1012-0000001c", "1762257300.690"
    enter = {"BridgeUniqueid": "b-1", "BridgeNumChannels": "1"}
    events = run(
        tracker,
        root(),
        frame("BridgeEnter", snapshot(TRUNK, ROOT_ID) | enter),
        frame("BridgeLeave", snapshot(TRUNK, ROOT_ID) | enter),  # root left again (hold)
        frame("BridgeEnter", snapshot(phone, uid, CallerIDNum="1012") | enter),
    )
    assert kinds(events) == ["ringing"]
    events = run(tracker, frame("BridgeEnter", snapshot(TRUNK, ROOT_ID) | enter))
    assert kinds(events) == ["answered"] and events[0].answered_by == "1012"


def test_no_answered_or_ended_for_unrung_calls(tracker):
    internal = snapshot("PJSIP/1010-1", "2.1", "2.1", Context="from-internal", Exten="1011")
    stream = [
        frame("Newchannel", internal),
        frame("DialEnd", internal | {"DestChannel": "PJSIP/1011-2", "DialStatus": "ANSWER"}),
        frame("Hangup", internal | {"Cause": "16"}),
    ]
    assert run(tracker, *stream) == []


# --- outcomes -------------------------------------------------------------------------------


def ringing_call(tracker: CallTracker, *stream: Frame) -> CallEvent:
    events = run(tracker, root(), *stream)
    assert kinds(events) == ["ringing", "ended"]
    return events[-1]


PHONE, PHONE_ID = "PJSIP/1010-0000001a", "1762257300.680"
BEGIN = frame("DialBegin", snapshot(TRUNK, ROOT_ID) | {"DestChannel": PHONE})


@pytest.mark.parametrize(
    ("stream", "outcome"),
    [
        # The caller hangs up while phones ring: HangupRequest, then the Dial is CANCELled.
        (
            [BEGIN, root("HangupRequest"), dial_end(TRUNK, ROOT_ID, PHONE, "CANCEL")],
            "caller_abandoned",
        ),
        # ... and without the request (captures filtered by their recorder).
        ([BEGIN, dial_end(TRUNK, ROOT_ID, PHONE, "CANCEL")], "caller_abandoned"),
        # The caller gives up in an IVR, before anyone was dialled.
        ([root("HangupRequest")], "caller_abandoned"),
        ([root("QueueCallerAbandon", Queue="sales")], "caller_abandoned"),
        # Nobody picked up; the caller then hangs up in voicemail: still nobody answered.
        ([BEGIN, dial_end(TRUNK, ROOT_ID, PHONE, "NOANSWER"), root("HangupRequest")], "no_answer"),
        ([], "no_answer"),
        ([BEGIN, dial_end(TRUNK, ROOT_ID, PHONE, "BUSY")], "busy"),
        ([BEGIN, dial_end(TRUNK, ROOT_ID, PHONE, "CHANUNAVAIL")], "busy"),
        ([BEGIN, dial_end(TRUNK, ROOT_ID, PHONE, "CONGESTION")], "busy"),
        # A SoftHangupRequest is Asterisk's own doing (redirect, AMI Hangup): not the caller.
        ([root("SoftHangupRequest", Cause="16")], "no_answer"),
    ],
)
def test_unanswered_outcomes(tracker, stream, outcome):
    assert ringing_call(tracker, *stream, hangup()).outcome == outcome


@pytest.mark.parametrize("cause", ["17", "21"])
def test_rejected_by_the_pbx_is_busy(tracker, cause):
    assert ringing_call(tracker, hangup(cause=cause)).outcome == "busy"


def test_busy_tone_after_ringing_out_is_no_answer(tracker):
    stream = [BEGIN, dial_end(TRUNK, ROOT_ID, PHONE, "NOANSWER"), hangup(cause="17")]
    assert ringing_call(tracker, *stream).outcome == "no_answer"


def test_ring_group_cancel_before_answer_is_answered(tracker):
    other = "PJSIP/1011-0000001b"
    events = run(
        tracker,
        root(),
        dial_end(TRUNK, ROOT_ID, other, "CANCEL"),
        hangup(other, "1.3", cause="26"),
        dial_end(TRUNK, ROOT_ID, PHONE, "ANSWER", DestCallerIDNum="1010"),
        root("HangupRequest"),  # the caller ends the conversation
        hangup(),
    )
    assert kinds(events) == ["ringing", "answered", "ended"]
    assert events[-1].outcome == "answered" and events[-1].answered_by == "1010"


def test_root_found_by_uniqueid_after_its_linkedid_changed(tracker):
    """Bridging with an older call rewrites Linkedid; the root keeps its Uniqueid."""
    events = run(tracker, root(), hangup_with_linkedid("1762257000.001"))
    assert kinds(events) == ["ringing", "ended"]


def hangup_with_linkedid(linkedid: str) -> Frame:
    return frame("Hangup", snapshot(TRUNK, ROOT_ID, linkedid, Cause="16"))


# --- concurrency ----------------------------------------------------------------------------


def test_same_linkedid_on_two_pbxs_are_two_calls(tracker):
    second = frame("Newchannel", snapshot(TRUNK, ROOT_ID), server_id=2)
    events = run(tracker, root(), second, hangup())
    assert [(e.kind.value, e.server_id) for e in events] == [
        ("ringing", 1),
        ("ringing", 2),
        ("ended", 1),
    ]
    assert tracker.active_calls == 1


def test_many_concurrent_calls_on_one_pbx():
    tracker = CallTracker(RELAY, ["trk"])
    ids = [f"1762257300.{n}" for n in range(500)]
    ringing = [frame("Newchannel", snapshot(f"PJSIP/t-{n}", uid, uid)) for n, uid in enumerate(ids)]
    ends = [
        frame("Hangup", snapshot(f"PJSIP/t-{n}", uid, uid, Cause="16")) for n, uid in enumerate(ids)
    ]
    assert Counter(kinds(run(tracker, *ringing))) == {"ringing": 500}
    assert tracker.active_calls == 500
    events = run(tracker, *reversed(ends))
    assert [e.linkedid for e in events] == list(reversed(ids))
    assert tracker.active_calls == 0


# --- limits ---------------------------------------------------------------------------------


def test_expire_drops_old_calls_and_ends_rung_ones():
    tracker = CallTracker(RELAY, ["trk"], max_call_seconds=3600)
    tracker.feed(root(), T0)  # ringing
    tracker.feed(frame("Newchannel", snapshot("PJSIP/t-2", "2.2", "2.2", Exten="s")), T0 + 10)
    tracker.feed(frame("Newchannel", snapshot("PJSIP/t-3", "3.3", "3.3")), T0 + 100)
    assert tracker.expire(T0 + 3599) == []
    (first,) = tracker.expire(T0 + 3600)
    assert (first.linkedid, first.state, first.reason) == (ROOT_ID, "ringing", "max_call_seconds")
    assert first.age_seconds == 3600
    assert first.ended is not None and first.ended.kind is Kind.ENDED
    assert first.ended.outcome == "unknown" and first.ended.detected_at == T0 + 3600
    (pending,) = tracker.expire(T0 + 3610)
    assert (pending.state, pending.ended) == ("pending", None)
    assert tracker.active_calls == 1
    assert tracker.feed(hangup(), T0 + 3700) == []  # the dropped call's late Hangup: nothing


def test_expired_answered_call_keeps_who_answered():
    tracker = CallTracker(RELAY, ["trk"], max_call_seconds=60)
    run(tracker, root(), dial_end(TRUNK, ROOT_ID, PHONE, "ANSWER", DestCallerIDNum="1010"))
    (dropped,) = tracker.expire(T0 + 61)
    assert dropped.state == "answered" and dropped.ended.answered_by == "1010"


def test_max_calls_evicts_the_oldest_and_reports_it_on_expire():
    tracker = CallTracker(RELAY, ["trk"], max_calls=2)
    calls = [frame("Newchannel", snapshot(f"PJSIP/t-{n}", f"9.{n}", f"9.{n}")) for n in range(3)]
    assert Counter(kinds(run(tracker, *calls))) == {"ringing": 3}
    assert tracker.active_calls == 2
    (evicted,) = tracker.expire(T0 + 5)
    assert isinstance(evicted, Dropped)
    assert (evicted.linkedid, evicted.reason) == ("9.0", "max_calls")
    assert evicted.ended is not None and evicted.ended.outcome == "unknown"
    assert tracker.expire(T0 + 6) == []


def test_answer_bookkeeping_is_freed_once_answered(tracker):
    run(tracker, root(), dial_end(TRUNK, ROOT_ID, PHONE, "ANSWER"))
    (call,) = tracker._calls.values()
    assert call.answers is None and call.leg_bridges is None


def test_irrelevant_events_are_cheap():
    """The connector must take ~30k frames/s on one core; the hundreds of VarSet/Newexten/RTCP
    per call have to cost next to nothing, also while a call waits for its number."""
    tracker = CallTracker(RELAY, ["trk"])
    noise = [
        frame(e, snapshot("PJSIP/1010-1", "5.5", "5.5", Context="from-internal"))
        for e in ("VarSet", "Newexten", "RTCPSent", "Newstate", "DialBegin", "Hangup")
    ]
    tracker.feed(pending_root(), T0)
    stream = noise * 20_000
    started = time.perf_counter()
    for item in stream:
        tracker.feed(item, T0)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.5, f"{len(stream)} frames took {elapsed:.2f}s"


# --- robustness -----------------------------------------------------------------------------

EVENT_NAMES = [
    "Newchannel",
    "Newexten",
    "VarSet",
    "DialBegin",
    "DialEnd",
    "AgentConnect",
    "BridgeEnter",
    "BridgeLeave",
    "HangupRequest",
    "SoftHangupRequest",
    "QueueCallerAbandon",
    "Hangup",
    "Newstate",
    "Junk",
]
IDS = ["1.1", "1.2", "1.3", "2.1", ""]
CHANNELS = [TRUNK, "PJSIP/1010-1", "Local/1@from-internal-1;1", "Local/1@from-internal-1;2", ""]
STRINGS = st.sampled_from(
    [
        "",
        "s",
        "h",
        "07045144801",
        "1010",
        "<unknown>",
        "ANSWER",
        "CANCEL",
        "BUSY",
        "NOANSWER",
        "16",
        "17",
        "26",
        "trk-11-in",
        "from-pstn",
        "from-internal",
        "ext-did-1",
        "FROM_DID",
        "__FROM_DID",
        "b-1",
        "b-2",
        "Local/1@q/n",
        "PJSIP/1011",
        "1762257300.5",
        "nan",
    ]
)


def _event_strategy() -> st.SearchStrategy[dict]:
    fields = {
        "Event": st.sampled_from(EVENT_NAMES),
        "Channel": st.sampled_from(CHANNELS),
        "DestChannel": st.sampled_from(CHANNELS),
        "Uniqueid": st.sampled_from(IDS),
        "Linkedid": st.sampled_from(IDS),
        "DestLinkedid": st.sampled_from(IDS),
        "Context": STRINGS,
        "Exten": STRINGS,
        "CallerIDNum": STRINGS,
        "CallerIDName": STRINGS,
        "DialStatus": STRINGS,
        "DestCallerIDNum": STRINGS,
        "BridgeUniqueid": STRINGS,
        "Variable": STRINGS,
        "Value": STRINGS,
        "Cause": STRINGS,
        "Interface": STRINGS,
        "Timestamp": STRINGS,
    }
    return st.fixed_dictionaries({}, optional=fields)


def _check_lifecycle(events: list[CallEvent]) -> None:
    """Per call: ANSWERED and ENDED only after a RINGING, ANSWERED at most once per ring."""
    state: dict[tuple[int, str], str] = {}
    for event in events:
        key = (event.server_id, event.linkedid)
        current = state.get(key, "none")
        if event.kind is Kind.RINGING:
            assert current in ("none", "ended")
            state[key] = "ringing"
        elif event.kind is Kind.ANSWERED:
            assert current == "ringing"
            state[key] = "answered"
        else:
            assert current in ("ringing", "answered")
            state[key] = "ended"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2]), _event_strategy()), max_size=60))
def test_random_event_sequences_keep_the_lifecycle(stream):
    tracker = CallTracker(RELAY, ["trk", "from-pstn"], max_calls=5, max_call_seconds=30)
    events: list[CallEvent] = []
    for n, (server_id, data) in enumerate(stream):
        events.extend(tracker.feed(Frame(3, server_id, "x", data), T0 + n))
    events.extend(d.ended for d in tracker.expire(T0 + 10_000) if d.ended is not None)
    _check_lifecycle(events)
    assert tracker.active_calls == 0


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


FIELD_NAMES = [
    "Event",
    "Channel",
    "Uniqueid",
    "Linkedid",
    "Context",
    "Exten",
    "CallerIDNum",
    "CallerIDName",
    "DialStatus",
    "DestChannel",
    "BridgeUniqueid",
    "Cause",
    "Variable",
]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(-2, 6),
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=12), JSONISH, max_size=8),
    st.sampled_from(EVENT_NAMES),
)
def test_random_dicts_never_raise(frame_type, data, event_name):
    """Values that are not strings (a Frame built by hand, a future decoder) are ignored."""
    tracker = CallTracker(RELAY, ["trk"])
    events: list[CallEvent] = []
    for payload in (data, data | {"Event": event_name}, data | {"Event": ["not", "hashable"]}):
        events.extend(tracker.feed(Frame(frame_type, 1, "x", payload), T0))  # type: ignore[arg-type]
    _check_lifecycle(events)


def test_real_capture_with_events_reordered_never_breaks_the_lifecycle():
    """Out-of-order delivery (a replayed capture reversed) must not produce impossible events."""
    tracker = CallTracker(RELAY, ["voipgrid_in"])
    for name in ("cacofonisk__queue__queue_simple", "cacofonisk__simple__ab_callgroup"):
        stream = list(reversed(frames(name)))
        events = run(tracker, *stream)
        _check_lifecycle(events)
        assert len(load_events(name)) == len(stream)
