"""Issue 13: a call never rings forever. The tracker ends ringing calls whose end never comes
(ring window, gaps, carried-over calls), refuses backlogged rings, and the ingest reads amiws's
own login replies only. Pure, with the clock passed in."""

from __future__ import annotations

import ast
import io
import logging
from dataclasses import replace

import orjson
import pytest

from devtools.demo_relay import envelope
from functions.connector.adapters import rung_calls
from functions.connector.ingest import RelayIngest
from functions.core.call_event import CallEvent, Kind, parse_call_event
from functions.core.call_tracker import GAP_GRACE_SECONDS, RING_GRACE_SECONDS, CallTracker
from functions.core.clean_text import clean, clip
from functions.core.pbx_clock import PbxClock
from functions.core.push import cancel_action, incoming_push
from functions.core.recipients import Device, Recipient
from functions.log import RESERVED_KEYS, JsonFormatter, fields
from functions.notifier.adapters import ledger_store
from functions.settings import SettingsError, load_settings
from tests.support import ROOT
from tests.unit.test_call_tracker import RELAY, ROOT_ID, T0, TRUNK, frame, leg, root, snapshot

WINDOW = 60


def tracker(**kw) -> CallTracker:
    return CallTracker(RELAY, ("trk",), ring_window=WINDOW, **kw)


def ring(t: CallTracker, now: float = T0, **fields: str) -> CallEvent:
    [event] = t.feed(root(Timestamp=f"{now:.6f}", **fields), now)
    assert event.kind is Kind.RINGING
    return event


# --- 1. no ring past the ring window -------------------------------------------------------


def test_a_call_whose_hangup_never_comes_ends_at_the_ring_window_plus_grace():
    t = tracker()
    ring(t)
    due = T0 + WINDOW + RING_GRACE_SECONDS
    assert t.expire(due - 0.5) == []
    [dropped] = t.expire(due)
    assert dropped.reason == "ring_timeout" and dropped.state == "ringing"
    assert dropped.ended is not None
    assert dropped.ended.kind is Kind.ENDED and dropped.ended.outcome == "unknown"
    assert dropped.ended.end_reason == "ring_timeout" and dropped.ended.linkedid == ROOT_ID
    assert t.active_calls == 0 and t.expire(due + 100) == []
    assert RING_GRACE_SECONDS <= 10


def test_an_answered_call_is_not_ended_by_the_ring_window():
    t = tracker()
    ring(t)
    dest = "PJSIP/201-00000001"
    t.feed(leg("DialBegin", TRUNK, ROOT_ID, DestChannel=dest), T0 + 1)
    [answered] = t.feed(
        frame("DialEnd", snapshot(TRUNK, ROOT_ID, DialStatus="ANSWER", DestChannel=dest)), T0 + 5
    )
    assert answered.kind is Kind.ANSWERED
    assert t.expire(T0 + WINDOW + 60) == [] and t.active_calls == 1


def test_the_tracker_alone_has_no_ring_timeout():
    t = CallTracker(RELAY, ("trk",))
    ring(t)
    assert t.expire(T0 + 3600) == []


def test_the_ring_timeout_cancel_has_its_own_action():
    assert cancel_action("ended", "unknown", "ring_timeout") == "ring_timeout"
    assert cancel_action("ended", "unknown", "relay_gap") == "call_lost"
    assert cancel_action("ended", "unknown") == "call_ended"
    assert cancel_action("ended", "no_answer", "ring_timeout") == "no_answer"


# --- 2. gaps --------------------------------------------------------------------------------


def test_after_a_gap_a_silent_ringing_call_ends_after_the_grace():
    t = tracker()
    ring(t)
    assert t.mark_gap(T0 + 10) == 1
    assert t.expire(T0 + 10 + GAP_GRACE_SECONDS - 0.1) == []
    [dropped] = t.expire(T0 + 10 + GAP_GRACE_SECONDS)
    assert dropped.reason == "relay_gap" and dropped.ended.end_reason == "relay_gap"


def test_after_a_gap_an_event_naming_the_call_keeps_it():
    t = tracker()
    ring(t)
    t.mark_gap(T0 + 10)
    t.feed(leg("DialBegin", TRUNK, ROOT_ID, DestChannel="PJSIP/202-2"), T0 + 12)
    assert t.expire(T0 + 10 + GAP_GRACE_SECONDS + 1) == []
    # ... and its Hangup then ends it as the PBX says
    [ended] = t.feed(frame("Hangup", snapshot(TRUNK, ROOT_ID, Cause="16")), T0 + 20)
    assert ended.kind is Kind.ENDED and ended.end_reason == ""


def test_a_repeated_gap_does_not_extend_the_grace():
    t = tracker()
    ring(t)
    t.mark_gap(T0 + 10)
    assert t.mark_gap(T0 + 12) == 0  # "Authentication failed" every second
    assert [d.reason for d in t.expire(T0 + 10 + GAP_GRACE_SECONDS)] == ["relay_gap"]


def test_a_gap_on_one_pbx_of_a_relay_leaves_the_others():
    t = tracker()
    ring(t)
    [other] = t.feed(frame("Newchannel", snapshot(TRUNK, "9.1", "9.1"), server_id=2), T0)
    assert t.mark_gap(T0 + 1, server_id=2) == 1
    [dropped] = t.expire(T0 + 1 + GAP_GRACE_SECONDS)
    assert (dropped.server_id, dropped.linkedid) == (2, other.linkedid)
    assert t.active_calls == 1


def test_carried_over_calls_end_after_the_grace_unless_their_end_comes():
    t = tracker()
    rung = CallEvent(
        kind=Kind.RINGING,
        relay=RELAY,
        server_id=1,
        linkedid="7.1",
        caller_number="01012345678",
        caller_name="",
        dialled_number="07045144801",
        channel="PJSIP/x-1",
        occurred_at=T0,
        detected_at=T0,
    )
    second = replace(rung, linkedid="7.2")
    foreign = replace(rung, linkedid="7.3", relay="other:7099")
    assert t.adopt([rung, second, foreign], T0 + 20) == 2
    assert t.adopt([rung], T0 + 21) == 0  # already followed
    [ended] = t.feed(frame("Hangup", snapshot(TRUNK, "7.2", "7.2", Cause="16")), T0 + 22)
    assert ended.linkedid == "7.2" and ended.outcome == "no_answer"
    [dropped] = t.expire(T0 + 20 + GAP_GRACE_SECONDS)
    assert dropped.linkedid == "7.1" and dropped.ended.end_reason == "relay_gap"


# --- 5. AMI 1.3 -----------------------------------------------------------------------------


def test_an_ami_1_3_root_without_linkedid_is_ended_by_its_hangup():
    t = tracker()
    body = snapshot(TRUNK, "1400000000.5")
    del body["Linkedid"]
    [rung] = t.feed(frame("Newchannel", body), T0)
    assert rung.linkedid == "1400000000.5"
    hangup = snapshot(TRUNK, "1400000000.5", Cause="16")
    del hangup["Linkedid"]
    [ended] = t.feed(frame("Hangup", hangup), T0 + 5)
    assert ended.kind is Kind.ENDED and ended.linkedid == rung.linkedid
    assert t.active_calls == 0


# --- 6. clean text --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("Hong\u000bGildong", "Hong Gildong"),
        ("\u202eKim\u202c", "Kim"),
        ("a\x00b\x7fc\x85d\x9fe", "a b c d e"),
        ("\u2066010\u2069-1234", "010 -1234"),
        ("  김철수\t ", "김철수"),
        ("plain", "plain"),
    ],
)
def test_control_and_bidi_characters_never_reach_the_screen(raw, shown):
    assert clean(raw) == shown
    assert clean(clean(raw)) == clean(raw)


def test_caller_text_is_clean_in_the_event_the_push_and_a_published_event():
    t = tracker()
    event = ring(t, CallerIDName="Hong\u000bGil\u202edong", CallerIDNum="010\x1b2613")
    assert event.caller_name == "Hong Gil dong" and event.caller_number == "010 2613"
    # an event from any publisher is cleaned on the notifier's side too
    dirty = orjson.loads(event.to_json()) | {"caller_name": "A\u0007B\u2067"}
    parsed = parse_call_event(orjson.dumps(dirty))
    assert parsed.caller_name == "A B"
    device = Device("d1", "tok")
    recipient = Recipient("u1", "201", company_name="Acme\u202e Corp", devices=(device,))
    push = incoming_push(
        replace(parsed, caller_name="X\x0bY"), recipient, device, now=T0, ring_window=WINDOW
    )
    assert all(
        not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in v) for v in push.data.values()
    )
    assert "\u202e" not in str(push.data) and push.body is not None and "\x0b" not in push.body


@pytest.mark.parametrize(
    "character",
    [
        "e\u0301",  # a letter and its combining accent
        "👩\u200d💻",  # emoji joined by ZWJ
        "\u1100\u1161\u11a8",  # a Hangul syllable in conjoining jamo
        "👍🏽",  # skin-tone modifier
        "가",
    ],
)
@pytest.mark.parametrize("limit", [40, 41, 42, 120])
def test_clipping_keeps_whole_characters(character, limit):
    text = character * 130
    clipped = clip(text, limit)
    assert len(clipped) <= limit and clipped.endswith("…")
    kept = clipped[:-1]
    assert kept and kept == character * (len(kept) // len(character))


# --- 3. PBX link ----------------------------------------------------------------------------


def ingest(**kw) -> RelayIngest:
    return RelayIngest(RELAY, tracker(**kw), max_frame_bytes=64 * 1024)


def test_responses_to_other_clients_never_change_the_pbx_link():
    relay = ingest()
    relay.on_frame(
        envelope({"Response": "Success", "Message": "Authentication accepted"}, frame_type=4), 1.0
    )
    assert (relay.stats.pbx_link, relay.stats.pbx_link_since) == ("up", 1.0)
    foreign = [
        {"Response": "Success", "ActionID": "42", "Ping": "Pong"},
        {"Response": "Success", "ActionID": "43", "Message": "Originate successfully queued"},
        {"Response": "Error", "ActionID": "44", "Message": "Authentication failed"},
        {"Response": "Success", "Message": "Channel status will follow"},
    ]
    for n, data in enumerate(foreign):
        relay.on_frame(envelope(data, frame_type=4), 2.0 + n)
    assert (relay.stats.pbx_link, relay.stats.pbx_link_since) == ("up", 1.0)
    relay.on_frame(
        envelope({"Response": "Error", "Message": "Authentication failed"}, frame_type=4), 9.0
    )
    assert (relay.stats.pbx_link, relay.stats.pbx_link_since) == ("auth_failed", 9.0)


def test_a_pbx_relogin_is_a_gap_for_that_pbx():
    relay = ingest()
    relay.on_frame(envelope(snapshot(TRUNK, ROOT_ID) | {"Event": "Newchannel"}), T0)
    assert relay.tracker.active_calls == 1
    relay.on_frame(
        envelope({"Response": "Success", "Message": "Authentication accepted"}, frame_type=4),
        T0 + 30,
    )
    assert relay.stats.gaps == 1
    [dropped] = relay.tracker.expire(T0 + 30 + GAP_GRACE_SECONDS)
    assert dropped.reason == "relay_gap"


def test_a_reconnect_is_a_gap_the_first_connect_is_not():
    relay = ingest()
    relay.on_frame(envelope(snapshot(TRUNK, ROOT_ID) | {"Event": "Newchannel"}), T0)
    relay.on_connected(1, T0 + 1)
    assert relay.stats.gaps == 0 and relay.tracker.expire(T0 + 30) == []
    relay.on_connected(2, T0 + 30)
    assert relay.stats.gaps == 1
    assert [d.reason for d in relay.tracker.expire(T0 + 30 + GAP_GRACE_SECONDS)] == ["relay_gap"]


# --- 7. truncated frames --------------------------------------------------------------------


def test_a_frame_cut_mid_character_is_counted_as_truncated():
    relay = ingest()
    raw = envelope(snapshot(TRUNK, ROOT_ID, CallerIDName="홍길동") | {"Event": "Newchannel"})
    cut = raw[: raw.find("홍길동".encode()) + 4]  # inside 길
    assert relay.on_frame(cut, T0) == []
    assert dict(relay.stats.bad_frames) == {"truncated": 1}
    relay.on_frame(b"{not json}", T0)
    assert dict(relay.stats.bad_frames) == {"truncated": 1, "invalid_json": 1}


# --- 9. backlogs ----------------------------------------------------------------------------


def test_a_backlogged_ringing_frame_rings_nobody_but_a_skewed_clock_rings():
    relay = ingest()
    # frames stamped in step with our clock establish the offset
    relay.on_frame(envelope({"Event": "Hangup", "Uniqueid": "x", "Timestamp": f"{T0:.6f}"}), T0)
    relay.on_frame(
        envelope(
            {
                "Event": "Newchannel",
                **snapshot("PJSIP/1", "y", "y", Context="from-internal"),
                "Timestamp": f"{T0 + 1:.6f}",
            }
        ),
        T0 + 1,
    )
    late = snapshot(TRUNK, ROOT_ID) | {"Event": "Newchannel", "Timestamp": f"{T0 - 600:.6f}"}
    assert relay.on_frame(envelope(late), T0 + 2) == []
    assert relay.tracker.stale_rings == 1 and relay.tracker.active_calls == 0
    # a fresh call right after still rings
    fresh = snapshot(TRUNK, "2.2", "2.2") | {"Event": "Newchannel", "Timestamp": f"{T0 + 3:.6f}"}
    assert [e.linkedid for e in relay.on_frame(envelope(fresh), T0 + 3)] == ["2.2"]

    skewed = ingest()  # a PBX whose clock is five hours behind, consistently
    off = -5 * 3600
    for n in range(3):
        call = snapshot(TRUNK, f"3.{n}", f"3.{n}") | {
            "Event": "Newchannel",
            "Timestamp": f"{T0 + off + n * 10:.6f}",
        }
        assert len(skewed.on_frame(envelope(call), T0 + n * 10 + 0.05)) == 1
    assert skewed.tracker.stale_rings == 0


def test_the_clock_offset_is_the_quickest_recent_delivery():
    clock = PbxClock(window=120)
    assert clock.lateness(100.0, 200.0) == 0.0  # nothing observed: trust the frame
    clock.observe(1000.0, 1000.2)
    clock.observe(1001.0, 1001.1)
    assert clock.offset == pytest.approx(0.1)
    assert clock.lateness(400.0, 1002.0) == pytest.approx(601.9)
    # an old minimum leaves the window: a PBX clock stepped back is accepted after it
    clock.observe(1200.0 - 3600, 1200.0)
    assert clock.offset == pytest.approx(3600.0)


# --- 4. logs --------------------------------------------------------------------------------


def test_a_field_cannot_replace_the_lines_own_keys():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter({"component": "test"}))
    logger = logging.getLogger("test.reserved")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.warning(
        "relay PBX link",
        extra=fields(
            message="Authentication failed",
            severity="DEBUG",
            time="never",
            logger="x",
            **{"logging.googleapis.com/labels": {"component": "forged"}},
        ),
    )
    line = orjson.loads(stream.getvalue())
    assert line["message"] == "relay PBX link" and line["severity"] == "WARNING"
    assert line["logger"] == "test.reserved" and line["time"] != "never"
    assert line["logging.googleapis.com/labels"] == {"component": "test"}
    assert line["field_message"] == "Authentication failed"
    assert line["field_severity"] == "DEBUG"


def test_the_pbx_link_line_keeps_its_message(caplog):
    relay = ingest()
    with caplog.at_level(logging.INFO, logger="connector.ingest"):
        relay.on_frame(
            envelope({"Response": "Error", "Message": "Authentication failed"}, frame_type=4), 1.0
        )
    [record] = [r for r in caplog.records if r.getMessage() == "relay PBX link"]
    line = orjson.loads(JsonFormatter().format(record))
    assert line["message"] == "relay PBX link"
    assert line["pbx_link"] == "auth_failed" and line["pbx_message"] == "Authentication failed"


# --- 8. health server address ---------------------------------------------------------------


def test_the_health_server_binds_what_the_setting_names():
    base = {"GOOGLE_CLOUD_PROJECT": "p"}
    assert load_settings(base).health_host == "0.0.0.0"
    assert load_settings(base | {"HEALTH_HOST": "127.0.0.1"}).health_host == "127.0.0.1"
    assert load_settings(base | {"HEALTH_HOST": "::1"}).health_host == "::1"
    with pytest.raises(SettingsError):
        load_settings(base | {"HEALTH_HOST": "localhost; rm"})


def test_no_log_call_in_the_product_passes_a_reserved_key():
    """Every `fields(...)` in functions/ and devtools/: none names a key the formatter owns (the
    formatter would rename it, and a dashboard filtering on it would find nothing)."""
    offenders = []
    for path in [*ROOT.glob("functions/**/*.py"), *ROOT.glob("devtools/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "fields":
                offenders += [
                    f"{path.relative_to(ROOT)}:{node.lineno} {kw.arg}"
                    for kw in node.keywords
                    if kw.arg in RESERVED_KEYS
                ]
    assert offenders == []


def test_the_connector_reads_the_ledger_the_notifier_writes():
    assert rung_calls.LEDGER == ledger_store.LEDGER


def test_two_pbxs_behind_one_relay_keep_their_own_clocks():
    relay = ingest()
    behind = -5 * 3600
    for n in range(4):
        now = T0 + n * 2
        in_step = snapshot(TRUNK, f"4.{n}", f"4.{n}") | {"Event": "Newchannel"}
        in_step["Timestamp"] = f"{now - 0.05:.6f}"
        late_clock = snapshot(TRUNK, f"5.{n}", f"5.{n}") | {"Event": "Newchannel"}
        late_clock["Timestamp"] = f"{now + behind:.6f}"
        assert len(relay.on_frame(envelope(in_step, server_id=1), now)) == 1
        assert len(relay.on_frame(envelope(late_clock, server_id=2), now + 0.5)) == 1
    assert relay.tracker.stale_rings == 0
    assert relay.tracker.clock(2).offset == pytest.approx(-behind + 0.5)
