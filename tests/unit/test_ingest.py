import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.demo_data import seed_frame
from functions.connector.ingest import RelayIngest
from functions.core.call_tracker import CallTracker


def ingest() -> RelayIngest:
    return RelayIngest("pbx:7099", CallTracker("pbx:7099", ("trk",)), max_frame_bytes=4096)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_garbage_never_raises_and_never_rings(frames):
    relay = ingest()
    for raw in frames:
        assert relay.on_frame(raw, now=1.0) == []
    assert relay.stats.frames == len(frames)


frame_values = st.one_of(
    st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=12), st.booleans()
)


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(
            ["Event", "Context", "CallerIDNum", "Exten", "Uniqueid", "Linkedid", "Channel"]
        ),
        frame_values,
    )
)
def test_seed_shaped_frames_with_wrong_types_never_raise(data):
    relay = ingest()
    for event in relay.on_frame(orjson.dumps({"type": 3, "server_id": 1, "data": data}), 1.0):
        # Whatever rang, it satisfied the seed's rule with real strings.
        assert isinstance(event.dialled_number, str) and event.dialled_number


def test_counts_and_rings_between_garbage():
    relay = ingest()
    assert relay.on_frame(b"\xff", 1.0) == []
    [event] = relay.on_frame(orjson.dumps(seed_frame("1.1", "1.0")), 2.0)
    assert event.linkedid == "1.1" and relay.stats.events == 1
    assert relay.on_frame(b"x" * 5000, 3.0) == []
    assert dict(relay.stats.bad_frames) == {"invalid_json": 1, "oversize": 1}


def test_pbx_link_problems_from_amiws_responses_are_kept():
    relay = ingest()
    frame = {
        "type": 4,
        "server_id": 1,
        "data": {"Response": "Error", "Message": "Authentication failed"},
    }
    relay.on_frame(orjson.dumps(frame), 1.0)
    assert relay.stats.pbx_link == "auth_failed" and relay.stats.pbx_link_since == 1.0


def _envelope(frame) -> bytes:
    return orjson.dumps(
        {
            "type": frame.type,
            "server_id": frame.server_id,
            "server_name": frame.server_name,
            "data": frame.data,
        }
    )


def test_events_the_tracker_cannot_use_are_skipped():
    relay = ingest()
    rtcp = b'{"type":3,"server_id":1,"data":{"Event":"RTCPSent","Channel":"x"}}'
    varset = b'{"type":3,"server_id":1,"data":{"Event": "VarSet","Variable":"FROM_DID"}}'
    assert relay.on_frame(rtcp, 1.0) == [] and relay.on_frame(varset, 1.0) == []
    assert relay.stats.skipped == 2 and relay.stats.bad_frames == {}
    [ring] = relay.on_frame(orjson.dumps(seed_frame("1.1", "1.0")), 2.0)  # parsed: it matters
    assert ring.linkedid == "1.1"


def test_dialplan_events_are_parsed_while_a_call_waits_for_its_number():
    from tests.unit.test_call_tracker import pending_root, varset

    relay = ingest()
    root = pending_root()
    assert relay.on_frame(_envelope(root), 1.0) == []  # Exten "s": no number yet
    [ring] = relay.on_frame(_envelope(varset("__FROM_DID", "07045144801")), 2.0)
    assert ring.dialled_number == "07045144801" and relay.stats.skipped == 0


def _corpus_streams() -> list[tuple[str, list[bytes]]]:
    """Every capture alone, and the inbound captures interleaved with all the others (as a busy
    PBX sends them), as the bytes amiws writes."""
    from tests.corpus import amiws_bytes, capture_names, envelope, load_events, namespaced

    def raw(name: str, prefix: str = "") -> list[bytes]:
        events = load_events(name)
        return [orjson.dumps(envelope(namespaced(e, prefix) if prefix else e)) for e in events]

    names = capture_names()
    streams = [(name, raw(name)) for name in names]
    mixed: list[bytes] = []
    parts = [raw(name, f"m{i}-") for i, name in enumerate(names)]
    for index in range(max(len(p) for p in parts)):
        mixed += [p[index] for p in parts if index < len(p)]
    # the same interleaved stream in amiws' own layout: spaced pairs, Event first
    spaced = [amiws_bytes(orjson.loads(frame)) for frame in mixed]
    return [*streams, ("all interleaved", mixed), ("all interleaved, amiws layout", spaced)]


def test_skipping_frames_never_changes_a_call_event():
    """The prefilter (event name from the raw bytes, then the parsed call ids) against the
    tracker fed every parsed frame, over the whole corpus: the same events, most frames
    skipped."""
    from functions.core.frames import decode_frame

    skipped = total = 0
    for name, stream in _corpus_streams():
        relay = RelayIngest("pbx:7099", CallTracker("pbx:7099", ("trk", "voipgrid_in")), 65536)
        tracker = CallTracker("pbx:7099", ("trk", "voipgrid_in"))
        via_ingest, direct = [], []
        for index, payload in enumerate(stream):
            now = 1_700_000_000.0 + index * 0.01
            via_ingest += relay.on_frame(payload, now)
            direct += tracker.feed(decode_frame(payload), now)
        assert via_ingest == direct, name
        skipped += relay.stats.skipped
        total += len(stream)
    assert skipped > total / 2  # the prefilter is doing its job


def test_frames_of_calls_not_followed_are_skipped_but_a_followed_calls_are_not():
    relay = ingest()
    assert len(relay.on_frame(orjson.dumps(seed_frame("1.1", "1.0")), 1.0)) == 1
    other = b'{"type":3,"server_id":1,"data":{"Event":"Hangup","Uniqueid":"9.9","Linkedid":"9.9"}}'
    assert relay.on_frame(other, 2.0) == [] and relay.stats.skipped == 1
    # ids are compared once parsed, so JSON escapes in them change nothing
    escaped = other.replace(b"9.9", b"8\\u002e8")
    assert relay.on_frame(escaped, 2.5) == [] and relay.stats.skipped == 2
    [ended] = relay.on_frame(other.replace(b"9.9", b"1\\u002e1"), 3.0)
    assert ended.linkedid == "1.1" and ended.kind.value == "ended"
    assert relay.on_frame(other, 4.0) == [] and relay.stats.skipped == 3  # no call in progress


def test_a_frame_with_no_ids_or_odd_ones_changes_nothing():
    relay = ingest()
    assert len(relay.on_frame(orjson.dumps(seed_frame("1.1", "1.0")), 1.0)) == 1
    no_ids = b'{"type":3,"server_id":1,"data":{"Event":"Hangup","Channel":"x"}}'
    odd = b'{"type":3,"server_id":1,"data":{"Event":"Hangup","Uniqueid":7,"Linkedid":null}}'
    assert relay.on_frame(no_ids, 2.0) == [] and relay.on_frame(odd, 2.0) == []
    # no call's id occurs in them: they cannot name one, and are skipped unparsed
    assert relay.stats.skipped == 2 and relay.tracker.active_calls == 1
    named = b'{"type":3,"server_id":1,"data":{"Event":"Hangup","Uniqueid":"1.1","Linkedid":7}}'
    [ended] = relay.on_frame(named, 3.0)
    assert ended.kind.value == "ended"


def test_a_truncated_frame_is_reported_as_bad_not_skipped():
    relay = ingest()
    assert relay.on_frame(b'{"type":3,"server_id":1,"data":{"Event":"Newch', 1.0) == []
    assert relay.stats.skipped == 0 and sum(relay.stats.bad_frames.values()) == 1


def test_any_of_the_three_ids_can_name_the_call():
    relay = ingest()
    relay.on_frame(orjson.dumps(seed_frame("1.1", "1.0")), 1.0)
    needs = relay.tracker.needs
    assert needs("DialBegin", {"Uniqueid": "5.5", "DestLinkedid": "1.1"})
    assert needs("Hangup", {"Uniqueid": "1.1", "Linkedid": "0.9"})  # linkedid changed on bridge
    assert not needs("DialBegin", {"Uniqueid": "5.5", "Linkedid": "5.5", "DestLinkedid": "6.6"})


def test_the_names_wanted_unparsed_follow_the_tracker_state():
    from tests.unit.test_call_tracker import pending_root

    relay = ingest()
    assert relay.tracker.wanted == {b"Newchannel"}  # nothing in progress
    relay.on_frame(_envelope(pending_root()), 1.0)  # a call waits for its number
    assert {b"Hangup", b"VarSet", b"Newexten"} <= relay.tracker.wanted
    relay = ingest()
    relay.on_frame(orjson.dumps(seed_frame("1.1", "1.0")), 1.0)  # rung: its number is known
    wanted = relay.tracker.wanted
    assert b"Hangup" in wanted and b"VarSet" not in wanted and b"RTCPSent" not in wanted


def test_a_newchannel_outside_the_trunk_contexts_is_skipped_after_parsing():
    relay = ingest()
    internal = orjson.dumps(seed_frame("2.2", "2.0"))
    internal = internal.replace(b'"Context":"', b'"Context":"from-internal-')
    assert relay.on_frame(internal, 1.0) == [] and relay.stats.skipped == 1
    assert len(relay.on_frame(orjson.dumps(seed_frame("1.1", "1.0")), 1.0)) == 1


def test_names_are_wanted_again_only_for_newchannel_once_calls_expire():
    relay = ingest()
    relay.on_frame(orjson.dumps(seed_frame("1.1", "1.0")), 1.0)
    assert b"Hangup" in relay.tracker.wanted
    assert len(relay.tracker.expire(1.0 + 10 * 24 * 3600)) == 1
    assert relay.tracker.wanted == {b"Newchannel"}


def test_a_malformed_frame_is_reported_when_it_could_matter_skipped_when_not():
    relay = ingest()
    relay.on_frame(orjson.dumps(seed_frame("1.1", "1.0")), 1.0)
    mine = b'{"type":3,"server_id":"x","data":{"Event":"Hangup","Uniqueid":"1.1"}}'
    other = b'{"type":3,"server_id":"x","data":{"Event":"Hangup","Uniqueid":"9.9"}}'
    assert relay.on_frame(mine, 2.0) == [] and relay.stats.bad_frames == {"bad_server_id": 1}
    assert relay.on_frame(other, 2.0) == [] and relay.stats.skipped == 1  # cannot matter
