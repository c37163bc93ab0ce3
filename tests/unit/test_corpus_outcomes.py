"""Every real capture in tests/fixtures/corpus replayed through the call tracker.

The expected tables were written by reading each capture (DialBegin/DialEnd, BridgeEnter, Hangup,
transfers), not by printing the tracker's output. Indexes are 0-based line numbers in the capture
file: the frame that must produce the event. Frames carry server_id 1; cacofonisk's trunk context
is `voipgrid_in`, so the tracker gets the prefixes ("voipgrid_in", "trk").
"""

from __future__ import annotations

from itertools import combinations
from typing import NamedTuple

import pytest

from functions.core.call_event import CallEvent, Kind
from functions.core.call_tracker import CallTracker
from tests.corpus import capture_names, frames, inbound_names, interleave, replay

PREFIXES = ("voipgrid_in", "trk")
RELAY = "pbx.example:7099"


class Expected(NamedTuple):
    rings_at: int
    dialled: str
    caller: str
    answered_at: int | None  # None: nobody answered, no ANSWERED event
    answered_by: str
    ended_at: int | None  # None: the capture stops before the root hangs up
    outcome: str
    cause: str


# Calls that come in on the trunk. Reading notes per capture:
INBOUND: dict[str, Expected] = {
    # Group with call acceptance: both mobiles pick up (64, 74) but only +31150010001 accepts; the
    # root's Dial CANCELs the loser (84) before its ANSWER (88) -> answered by that mobile.
    "cacofonisk__mobile__acceptance_group_pickup": Expected(
        2, "+31260010001", "+31150010003", 88, "+31150010001", 125, "answered", "16"
    ),
    # The mobile's leg answers (36) but rejects the DTMF challenge: the root's Dial ends NOANSWER
    # (52) and the PBX hangs up the caller (54). An inner ANSWER alone is no answer.
    "cacofonisk__mobile__acceptance_reject": Expected(
        2, "+31260010001", "+31150010003", None, "", 54, "no_answer", "16"
    ),
    # Forwarded to a mobile via the trunk, accepted: root Dial ANSWER at 47.
    "cacofonisk__mobile__acceptance_simple": Expected(
        2, "+31150010004", "+31150010001", 47, "+31260010001", 76, "answered", "16"
    ),
    # The mobile answers (36) but never completes the challenge; root NOANSWER (43), cause 19.
    "cacofonisk__mobile__acceptance_timeout": Expected(
        2, "+31260010001", "+31150010003", None, "", 45, "no_answer", "19"
    ),
    # Fixed destination = a mobile over the trunk: answered by that number (root ANSWER at 44).
    "cacofonisk__mobile__simple_mobile": Expected(
        2, "+31150010004", "+31150010001", 44, "+31260010001", 76, "answered", "16"
    ),
    # Queue to account 150010001 (root ANSWER 28), then an attended transfer to 202 (85): no new
    # ANSWERED; the transfer target's Linkedid is rewritten to the call's (84).
    "cacofonisk__queue__queue_attn_xfer": Expected(
        2, "+31150010001", "+31260010001", 28, "150010001", 97, "answered", "16"
    ),
    # Queue answer (29), blind transfer to 202 (42): the root dials again and is answered again
    # (71) - still one ANSWERED.
    "cacofonisk__queue__queue_blind_xfer": Expected(
        2, "+31150010001", "+31260010001", 29, "150010001", 88, "answered", "16"
    ),
    # Queue rings two members: 150010003 is BUSY (35, root leg NOANSWER 38), 150010002 answers
    # (45, root ANSWER 47). A member's BUSY does not make the call busy.
    "cacofonisk__queue__queue_simple": Expected(
        2, "+31150010004", "+31150010001", 47, "150010002", 66, "answered", "16"
    ),
    # Attended transfer after answer (90); the caller hangs up last (99).
    "cacofonisk__xfer_attended__xfer_abbcac_anon": Expected(
        2, "+31150010001", "+31260010001", 28, "150010001", 99, "answered", "16"
    ),
    # Blind transfer to ring group 401 (44): the group CANCELs one member (88) and answers the
    # other (93) - already answered, so nothing new.
    "cacofonisk__xfer_blind__xfer_blind_group": Expected(
        2, "+31150010001", "+31260010001", 27, "150010001", 111, "answered", "16"
    ),
    # Blonde transfer (65): the root dials 202 itself (71) and gets answered (84): no re-answer.
    "cacofonisk__xfer_blonde__xfer_blonde_abbcac": Expected(
        2, "+31150010001", "+31260010001", 25, "150010001", 100, "answered", "16"
    ),
    # Blonde transfer to a target that is BUSY (82); the root ends with cause 17 (84), but the
    # call had been answered first (27): outcome answered, cause kept.
    "cacofonisk__xfer_blonde__xfer_blonde_reject": Expected(
        2, "+31150010001", "+31260010001", 27, "150010001", 84, "answered", "17"
    ),
    # 150010001 forwards to 202 (DialEnd CANCEL with Forward=202 at 29); 202's phone answers
    # (53), the Local chain propagates it to the root's Dial (67). Answered by 202.
    "cacofonisk__xfer_misc__call_forwarding": Expected(
        2, "+31150010001", "+31260010001", 67, "202", 104, "answered", "16"
    ),
    # SOURCES.md calls these two "internal", but the call leaves through the trunk and comes back
    # in on voipgrid_in with a new Linkedid (a hairpin): for the PBX that second half is an
    # inbound trunk call, so it rings. The outbound half (Exten s, not root) does not.
    "cacofonisk__simple__ab_success_twoclients": Expected(
        22, "+31150010001", "+31260010001", 50, "150010001", 85, "answered", "16"
    ),
    "cacofonisk__var_set__user_events": Expected(
        23, "+31150010001", "+31260010001", 53, "150010001", 90, "answered", "16"
    ),
    # Two unrelated documented events: a trunk Newchannel (rings) and another call's Hangup.
    "fromdocs__envelope_examples": Expected(
        0, "07045144801", "01026132471", None, "", None, "", ""
    ),
}

# Internal captures replayed as if the phones' context `osvpi_account` were a trunk context:
# the only real captures of a caller giving up, a busy callee and a ring group whose CANCEL
# precedes its ANSWER. Keyed by (capture, Linkedid suffix) since pickups start a second call.
RELABELLED_PREFIXES = ("osvpi_account",)
RELABELLED: dict[tuple[str, str], Expected] = {
    # A hangs up while B rings: root Dial CANCEL (23), root Hangup cause 0 (28).
    ("cacofonisk__simple__ab_a_cancel", ".21"): Expected(
        2, "202", "150010001", None, "", 28, "caller_abandoned", "0"
    ),
    # B rejects: root Dial BUSY (26), root cause 17 (28).
    ("cacofonisk__simple__ab_reject", ".98"): Expected(
        2, "202", "150010001", None, "", 28, "busy", "17"
    ),
    # B on do-not-disturb: the same as a reject on the wire.
    ("cacofonisk__simple__ab_dnd", ".77"): Expected(
        2, "202", "150010001", None, "", 26, "busy", "17"
    ),
    # Group 401: 150010002 answers (41); the root's Dial CANCELs the other member (44) before
    # its ANSWER (49); the losers hang up with cause 26 (answered elsewhere).
    ("cacofonisk__simple__ab_callgroup", ".168"): Expected(
        2, "401", "150010001", 49, "150010002", 68, "answered", "16"
    ),
    # 150010003 picks up with *8 (22): the ringing leg is CANCELled (26), the picker answered (33,
    # root ANSWER 38). The picker's own *8 call is a second root in that context.
    ("cacofonisk__xfer_misc__star_pickup", ".414"): Expected(
        1, "202", "150010001", 38, "150010003", 57, "answered", "16"
    ),
    ("cacofonisk__xfer_misc__star_pickup", ".424"): Expected(
        22, "*8", "150010003", None, "", 55, "no_answer", "16"
    ),
}


def _tracker(prefixes: tuple[str, ...] = PREFIXES) -> CallTracker:
    return CallTracker(RELAY, prefixes)


def _by_call(events: list[tuple[int, CallEvent]]) -> dict[str, list[tuple[int, CallEvent]]]:
    calls: dict[str, list[tuple[int, CallEvent]]] = {}
    for index, event in events:
        calls.setdefault(event.linkedid, []).append((index, event))
    return calls


def _assert_call(events: list[tuple[int, CallEvent]], want: Expected) -> None:
    kinds = [event.kind for _, event in events]
    expected_kinds = [Kind.RINGING]
    if want.answered_at is not None:
        expected_kinds.append(Kind.ANSWERED)
    if want.ended_at is not None:
        expected_kinds.append(Kind.ENDED)
    assert kinds == expected_kinds
    at = {event.kind: index for index, event in events}
    by_kind = {event.kind: event for _, event in events}
    ring = by_kind[Kind.RINGING]
    assert at[Kind.RINGING] == want.rings_at
    assert (ring.dialled_number, ring.caller_number) == (want.dialled, want.caller)
    assert ring.relay == RELAY and ring.server_id == 1 and ring.channel
    if want.answered_at is not None:
        assert at[Kind.ANSWERED] == want.answered_at
        assert by_kind[Kind.ANSWERED].answered_by == want.answered_by
    if want.ended_at is not None:
        end = by_kind[Kind.ENDED]
        assert at[Kind.ENDED] == want.ended_at
        assert (end.outcome, end.hangup_cause) == (want.outcome, want.cause)
        assert end.answered_by == want.answered_by
    # Every event describes the same call as the ring did.
    for _, event in events:
        assert (event.linkedid, event.dialled_number, event.caller_number) == (
            ring.linkedid,
            ring.dialled_number,
            ring.caller_number,
        )


def test_every_capture_is_in_a_table():
    inbound = inbound_names()
    assert inbound, "SOURCES.md lost its INBOUND markers"
    assert inbound <= INBOUND.keys()
    assert set(capture_names()) >= INBOUND.keys()


@pytest.mark.parametrize("name", sorted(INBOUND))
def test_inbound_capture_outcome(name):
    tracker = _tracker()
    calls = _by_call(replay(tracker, frames(name)))
    assert len(calls) == 1
    _assert_call(next(iter(calls.values())), INBOUND[name])
    want_left = 0 if INBOUND[name].ended_at is not None else 1
    assert tracker.active_calls == want_left


@pytest.mark.parametrize("name", sorted(set(capture_names()) - INBOUND.keys()))
def test_internal_originate_and_click_to_dial_captures_ring_nobody(name):
    tracker = _tracker()
    for index, frame in enumerate(frames(name)):
        assert tracker.feed(frame, 1.0 + index) == []
        # Never rung calls (most of the traffic) keep no state at all.
        assert tracker.active_calls == 0


@pytest.mark.parametrize("capture", sorted({name for name, _ in RELABELLED}))
def test_relabelled_internal_capture_outcomes(capture):
    calls = _by_call(replay(_tracker(RELABELLED_PREFIXES), frames(capture)))
    wanted = {suffix: want for (name, suffix), want in RELABELLED.items() if name == capture}
    assert len(calls) == len(wanted)
    for linkedid, events in calls.items():
        (suffix,) = [s for s in wanted if linkedid.endswith(s)]
        _assert_call(events, wanted[suffix])


def test_bridge_enter_fallback_on_a_capture_without_dial_end():
    """goami2's capture has a DialBegin but no DialEnd: the answer shows only as the root and
    the outbound leg entering one bridge (32, 33). Replayed with `default` as the trunk context;
    the leg identifies as the dialled number, so the device name answers."""
    calls = _by_call(replay(_tracker(("default",)), frames("goami2__fixture_call")))
    (events,) = calls.values()
    want = Expected(1, "9898", "9170", 33, "okon.ferry.sip.com", 48, "answered", "16")
    _assert_call(events, want)


def _signature(events: list[tuple[int, CallEvent]], prefix: str = "") -> list[tuple]:
    """What must not change when calls run side by side: everything but the clocks."""
    return sorted(
        (
            event.linkedid.removeprefix(prefix),
            event.kind.value,
            event.dialled_number,
            event.caller_number,
            event.answered_by,
            event.outcome,
            event.hangup_cause,
        )
        for _, event in events
    )


PAIRS = [
    # Same server_id, second capture in its own id namespace.
    ("cacofonisk__queue__queue_simple", "cacofonisk__mobile__acceptance_group_pickup", 1),
    ("cacofonisk__xfer_misc__call_forwarding", "cacofonisk__mobile__acceptance_reject", 1),
    # A capture against itself: same channel names and ids, told apart only by the namespace...
    ("cacofonisk__xfer_blind__xfer_blind_group", "cacofonisk__xfer_blind__xfer_blind_group", 1),
    # ...or only by the server_id (the same ids on two PBXs of one relay).
    ("cacofonisk__queue__queue_attn_xfer", "cacofonisk__queue__queue_attn_xfer", 2),
]


@pytest.mark.parametrize(("first", "second", "server_id"), PAIRS)
def test_interleaved_captures_are_independent_calls(first, second, server_id):
    prefix = "b-" if server_id == 1 else ""
    alone_a = replay(_tracker(), frames(first))
    alone_b = replay(_tracker(), frames(second))
    both = replay(
        _tracker(),
        interleave(frames(first), frames(second, server_id=server_id, id_prefix=prefix)),
    )
    from_a = [(i, e) for i, e in both if e.server_id == 1 and not e.linkedid.startswith("b-")]
    from_b = [(i, e) for i, e in both if (i, e) not in from_a]
    assert _signature(from_a) == _signature(alone_a)
    assert _signature(from_b, prefix) == _signature(alone_b)


def test_all_inbound_captures_at_once():
    names = sorted(INBOUND)
    streams = [frames(name, id_prefix=f"{n}-") for n, name in enumerate(names)]
    tracker = _tracker()
    together = replay(tracker, interleave(*streams))
    for n, name in enumerate(names):
        mine = [(i, e) for i, e in together if e.linkedid.startswith(f"{n}-")]
        assert _signature(mine, f"{n}-") == _signature(replay(_tracker(), frames(name)))
    assert tracker.active_calls == 1  # only the documentation example never hangs up


@pytest.mark.parametrize(("first", "second"), list(combinations(sorted(INBOUND)[:6], 2)))
def test_pairs_of_inbound_captures_stay_independent(first, second):
    together = replay(_tracker(), interleave(frames(first), frames(second, id_prefix="x-")))
    mine = [(i, e) for i, e in together if not e.linkedid.startswith("x-")]
    theirs = [(i, e) for i, e in together if e.linkedid.startswith("x-")]
    assert _signature(mine) == _signature(replay(_tracker(), frames(first)))
    assert _signature(theirs, "x-") == _signature(replay(_tracker(), frames(second)))
