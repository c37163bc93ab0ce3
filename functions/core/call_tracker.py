"""Follows the calls of one relay and turns AMI events into call events. Pure: no I/O, no clock.

A call is keyed by (server_id, Linkedid) and exists here only if its root channel came in on a
trunk: internal, click-to-dial and outbound calls never get any state. See docs/lifecycle.md:

    pending --(dialled number seen on the root)--> ringing --(answer)--> answered
       |                                              |                      |
       +------------------- root Hangup / expiry -----+----------------------+--> gone

RINGING is emitted once when the call rings, ANSWERED once when somebody picks up, ENDED once
(with an `Outcome`) when the root channel hangs up. Only rung calls emit anything.

A call never rings forever (docs/lifecycle.md, "Ends the PBX never sent"): one still ringing
`ring_window + RING_GRACE_SECONDS` after it rang ends as `unknown`/`ring_timeout`; after a gap
in the relay's events (`mark_gap`: a reconnect, a PBX re-login, calls carried over from another
connector by `adopt`) a ringing call that nothing names within `GAP_GRACE_SECONDS` ends as
`unknown`/`relay_gap`. A ringing frame that arrives later than the ring window (a backlog: see
`PbxClock`) rings nobody.

Root events are found by `Uniqueid` (the root's Uniqueid is the call's Linkedid, and stays so even
when bridging rewrites the root's Linkedid); leg events by `Linkedid`.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from functions.core.call_event import CallEvent, EndReason, Kind, Outcome
from functions.core.clean_text import clean
from functions.core.frames import EVENT_FRAME_TYPE, Frame
from functions.core.incoming_rule import (
    UNKNOWN_NAMES,
    channel_peer,
    dialled_number_signal,
    is_dialled_number,
    is_trunk_context,
    match_trunk_root,
    parse_timestamp,
    text,
)
from functions.core.pbx_clock import PbxClock

CallKey = tuple[int, str]  # (server_id, Linkedid of the root == the root's Uniqueid)
Handler = Callable[[Frame, Mapping[str, Any], float], list[CallEvent]]

BUSY_STATUSES: Final = frozenset({"BUSY", "CONGESTION", "CHANUNAVAIL"})
BUSY_CAUSES: Final = frozenset({"17", "21"})  # Q.850 user busy, call rejected
DIALING: Final = "DIALING"  # root_status while a Dial of the root is in progress
MAX_LOCAL_HOPS: Final = 16  # Local channel chains are a few hops; bounds a malformed loop
MAX_LEGS: Final = 32  # answered legs / bridges remembered per ringing call
ROOT: Final = ""  # `answers` key of the root's own answered Dial (a channel name is never "")
DEFAULT_MAX_CALL_SECONDS: Final = 4 * 3600.0
DEFAULT_DID_CONTEXTS: Final = ("ext-did",)  # FreePBX inbound routes (ext-did-0001, -0002)
RING_GRACE_SECONDS: Final = 5.0  # past the ring window before a silent ringing call is ended
MAX_RAW_ID_SCANS: Final = 3  # calls in progress up to which raw frames are scanned for ids
GAP_GRACE_SECONDS: Final = 5.0  # after a gap, for an event to show that a ringing call lives
MAX_CLOCKS: Final = 64  # PBX clocks kept per relay (one per server_id)


@dataclass(frozen=True, slots=True)
class Dropped:
    """A call the tracker stopped following without seeing its end; one log line each."""

    server_id: int
    linkedid: str
    state: str  # "pending", "ringing" or "answered"
    reason: str  # an EndReason value
    age_seconds: float
    ended: CallEvent | None  # ENDED(UNKNOWN) to publish for a rung call, so phones stop ringing


_DIALPLAN_EVENTS = frozenset({"Newexten", "VarSet"})
_ID_HEADERS = ("Uniqueid", "Linkedid", "DestLinkedid")


class _Call:
    """What the outcome decision needs, nothing more. Answer-tracking fields are freed on answer."""

    __slots__ = (
        "abandoned",
        "answered_by",
        "answers",
        "first_seen",
        "gap_until",
        "leg_bridges",
        "pending",
        "root_bridge",
        "root_status",
        "rung_at",
        "template",
    )

    def __init__(self, template: CallEvent, first_seen: float, pending: bool) -> None:
        self.template = template  # the RINGING event (or its pending draft): the call's identity
        self.first_seen = first_seen
        self.pending = pending
        self.rung_at = template.detected_at  # connector clock: when RINGING was emitted
        self.gap_until: float | None = None  # after a gap: ended then unless an event names it
        self.answered_by: str | None = None  # None until answered
        self.root_status = ""  # last DialStatus of the root's own Dial, or DIALING
        self.abandoned = False  # the caller hung up while still being rung
        # Dial ANSWERs seen while ringing: dialling channel (ROOT for the root) -> (dest, who).
        self.answers: dict[str, tuple[str, str]] | None = {}
        self.root_bridge = ""  # fallback: the bridge the root is in
        self.leg_bridges: dict[str, str] | None = {}  # fallback: bridge -> who, non-Local legs

    @property
    def state(self) -> str:
        if self.pending:
            return "pending"
        return "ringing" if self.answered_by is None else "answered"


class CallTracker:
    def __init__(
        self,
        relay: str,
        prefixes: Sequence[str],
        *,
        max_calls: int = 10_000,
        max_call_seconds: float = DEFAULT_MAX_CALL_SECONDS,
        did_contexts: Sequence[str] = DEFAULT_DID_CONTEXTS,
        ring_window: float | None = None,
        gap_grace: float = GAP_GRACE_SECONDS,
    ) -> None:
        self.relay = relay
        # None: no ring timeout and no backlog check (the tracker alone, e.g. corpus replays)
        self.ring_window = ring_window
        self.gap_grace = gap_grace
        # per PBX behind the relay: two PBXs on one relay may keep different clocks
        self.clocks: dict[int, PbxClock] = {}
        self.stale_rings = 0  # ringing frames that arrived too late to ring (a backlog)
        self.last_stale: tuple[int, str, float] | None = None  # (server, linkedid, lateness)
        self._deadlines: list[tuple[float, CallKey]] = []  # ring timeouts and gap ends (lazy)
        self._suspects: set[CallKey] = set()  # calls with a gap_until
        # The calls' ids as bytes (count per id: two PBXs of a relay may reuse one), for a
        # reader that checks a raw frame before parsing it (functions.core.raw_gate): None
        # when more than a few calls are in progress (the scans would cost more than a parse)
        self._ids: dict[bytes, int] = {}
        self.raw_ids: tuple[bytes, ...] | None = ()
        self.raw_prefixes = tuple(prefix.encode() for prefix in prefixes)
        self.prefixes = tuple(prefixes)
        self.did_contexts = tuple(did_contexts)
        self.max_calls = max_calls
        self.max_call_seconds = max_call_seconds
        self._calls: OrderedDict[CallKey, _Call] = OrderedDict()  # oldest first
        self._pending: set[CallKey] = set()
        self._servers: set[int] = set()  # server ids of calls ever followed (usually one)
        self._evicted: deque[Dropped] = deque(maxlen=max(1, max_calls))
        self._handlers: dict[str, Handler] = {
            "Newchannel": self._on_newchannel,
            "Newexten": self._on_dialplan,
            "VarSet": self._on_dialplan,
            "DialBegin": self._on_dial_begin,
            "DialEnd": self._on_dial_end,
            "AgentConnect": self._on_agent_connect,
            "BridgeEnter": self._on_bridge_enter,
            "BridgeLeave": self._on_bridge_leave,
            "HangupRequest": self._on_hangup_request,
            "QueueCallerAbandon": self._on_hangup_request,
            "Hangup": self._on_hangup,
        }
        handled = frozenset(name.encode() for name in self._handlers)
        self._wanted_idle = frozenset({b"Newchannel"})
        self._wanted_no_dialplan = handled - {name.encode() for name in _DIALPLAN_EVENTS}
        self._wanted_all = handled
        # The AMI event names (bytes, as read from a raw frame) that can change anything now,
        # for a reader that looks before parsing: only Newchannel while no call is in progress;
        # Newexten/VarSet only while a call waits for its dialled number. Lets the connector
        # skip the hundreds of frames per call that cannot matter (RTCP, NewCallerid, ...).
        # An attribute, not a method (it is read for every frame), kept current by `feed` and
        # `expire`, the only methods that change the calls.
        self.wanted: frozenset[bytes] = self._wanted_idle

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    def _raw_ids_changed(self) -> None:
        ids = self._ids
        self.raw_ids = tuple(ids) if len(ids) <= MAX_RAW_ID_SCANS else None

    def _update_wanted(self) -> None:
        if not self._calls:
            self.wanted = self._wanted_idle
        else:
            self.wanted = self._wanted_all if self._pending else self._wanted_no_dialplan

    def needs(self, event: str, data: Mapping[str, object]) -> bool:
        """Whether a parsed event (`data`: its headers) can change anything now: besides its
        name, a Newchannel must be in a trunk context to start a call, and any other event
        must name a call in progress by its Uniqueid, Linkedid or DestLinkedid (a call's root
        Uniqueid is its Linkedid)."""
        if event == "Newchannel":  # the seed rule's context test, the cheap part of it
            return is_trunk_context(data.get("Context"), self.prefixes)
        if event not in self._handlers or not self._calls:
            return False
        if event in _DIALPLAN_EVENTS and not self._pending:
            return False
        return self._names_a_call(data)

    def _names_a_call(self, data: Mapping[str, object]) -> bool:
        """Whether the headers name a call in progress; True when they carry no id to read, or
        one that is not a string (validation reports it)."""
        calls = self._calls
        read = False
        for key in _ID_HEADERS:
            value = data.get(key)
            if value is None:
                continue
            if type(value) is not str:
                return True
            read = True
            for server in self._servers:
                if (server, value) in calls:
                    return True
        return not read

    def feed(self, frame: Frame, now: float) -> list[CallEvent]:
        """The call events one relay frame causes (usually none). `now`: epoch seconds."""
        if frame.type != EVENT_FRAME_TYPE:
            return []
        data = frame.data
        try:
            handler = self._handlers.get(data.get("Event"))  # type: ignore[arg-type]
        except TypeError:  # an unhashable Event value is no AMI event
            return []
        if handler is None:
            return []
        if self._suspects:
            self._alive(frame.server_id, data)
        pbx_time = parse_timestamp(data)
        if pbx_time is not None:
            self.clock(frame.server_id).observe(pbx_time, now)
        try:
            return handler(frame, data, now)
        finally:
            self._update_wanted()

    def expire(self, now: float) -> list[Dropped]:
        """Drop calls first seen more than `max_call_seconds` ago, end ringing calls past their
        ring timeout or gap grace; also report calls evicted by `max_calls` since the last call.
        Call it every second; log each `Dropped` and publish its `ended` event when present."""
        dropped = list(self._evicted)
        self._evicted.clear()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, key = heapq.heappop(deadlines)
            call = self._calls.get(key)
            if call is None:
                continue
            reason = self._due(call, now)
            if reason is not None:
                dropped.append(self._drop(key, reason, now))
        while self._calls:
            key, call = next(iter(self._calls.items()))
            if now - call.first_seen < self.max_call_seconds:
                break
            dropped.append(self._drop(key, EndReason.MAX_CALL_SECONDS, now))
        self._update_wanted()
        return dropped

    def _due(self, call: _Call, now: float) -> EndReason | None:
        """Why a call must end now, if it must (a heap entry may be stale: answered since, or a
        gap cleared by an event)."""
        if call.answered_by is not None:
            return None
        if call.gap_until is not None and call.gap_until <= now:
            return EndReason.RELAY_GAP
        if (
            self.ring_window is not None
            and not call.pending
            and call.rung_at + self.ring_window + RING_GRACE_SECONDS <= now
        ):
            return EndReason.RING_TIMEOUT
        return None

    # --- gaps ----------------------------------------------------------------------------------

    def mark_gap(self, now: float, server_id: int | None = None) -> int:
        """Events of `server_id` (None: every PBX of the relay) may have been lost: calls not
        yet answered get `gap_grace` seconds for an event that names them, then end as
        `relay_gap` (pending ones silently). An earlier, unexpired grace is kept, not
        extended (a PBX that refuses the login every second must not keep calls forever).
        Returns how many calls it marked."""
        marked = 0
        until = now + self.gap_grace
        for key, call in self._calls.items():
            if server_id is not None and key[0] != server_id:
                continue
            if call.answered_by is not None or call.gap_until is not None:
                continue
            call.gap_until = until
            self._suspects.add(key)
            heapq.heappush(self._deadlines, (until, key))
            marked += 1
        return marked

    def adopt(self, rung: Sequence[CallEvent], now: float) -> int:
        """Calls rung while another connector read this relay (from the notifier's ledger): they
        are followed from now on, as after a gap. Returns how many were new here."""
        adopted = 0
        until = now + self.gap_grace
        for event in rung:
            if event.kind is not Kind.RINGING or event.relay != self.relay:
                continue
            key = (event.server_id, event.linkedid)
            if key in self._calls:
                continue
            # first_seen=now keeps the calls in arrival order (max_call_seconds expiry)
            call = _Call(event, now, pending=False)
            call.gap_until = until
            self._add(key, call, now)
            self._suspects.add(key)
            heapq.heappush(self._deadlines, (until, key))
            self._ring_deadline(key, call)
            adopted += 1
        self._update_wanted()
        return adopted

    def _alive(self, server_id: int, data: Mapping[str, Any]) -> None:
        """An event that names a call under a gap grace shows it is still followed."""
        for name in _ID_HEADERS:
            value = data.get(name)
            if type(value) is str:
                key = (server_id, value)
                if key in self._suspects:
                    self._suspects.discard(key)
                    self._calls[key].gap_until = None

    def _ring_deadline(self, key: CallKey, call: _Call) -> None:
        if self.ring_window is not None:
            due = call.rung_at + self.ring_window + RING_GRACE_SECONDS
            heapq.heappush(self._deadlines, (due, key))

    def clock(self, server_id: int) -> PbxClock:
        """The PBX's clock as seen from this relay (its offset from ours)."""
        clock = self.clocks.get(server_id)
        if clock is None:
            if len(self.clocks) >= MAX_CLOCKS:  # server ids are the relay's to choose: bounded
                self.clocks.pop(next(iter(self.clocks)))
            clock = self.clocks[server_id] = PbxClock()
        return clock

    def _late(self, server_id: int, linkedid: str, pbx_time: float | None, now: float) -> bool:
        """A ringing frame delivered later than the ring window (a backlog) rings nobody."""
        if self.ring_window is None or pbx_time is None:
            return False
        lateness = self.clock(server_id).lateness(pbx_time, now)
        if lateness <= self.ring_window:
            return False
        self.stale_rings += 1
        self.last_stale = (server_id, linkedid, lateness)
        return True

    # --- call creation -------------------------------------------------------------------------

    def _on_newchannel(self, frame: Frame, data: Mapping[str, Any], now: float) -> list[CallEvent]:
        incoming = match_trunk_root(frame.type, frame.server_id, data, self.prefixes)
        if incoming is None:
            return []
        key = (frame.server_id, incoming.linkedid)
        if key in self._calls:
            return []
        pending = not incoming.dialled_number
        if not pending and self._late(key[0], key[1], incoming.pbx_timestamp, now):
            return []
        if pending and not text(data, "Uniqueid"):
            return []  # nothing could ever tell us its number
        template = CallEvent(
            kind=Kind.RINGING,
            relay=self.relay,
            server_id=frame.server_id,
            server_name=frame.server_name,
            linkedid=incoming.linkedid,
            channel=incoming.channel,
            caller_number=incoming.caller_number,
            caller_name=incoming.caller_name,
            dialled_number=incoming.dialled_number,
            occurred_at=incoming.pbx_timestamp or now,
            detected_at=now,
        )
        call = _Call(template, now, pending)
        self._add(key, call, now)
        if pending:
            return []
        self._ring_deadline(key, call)
        return [template]

    def _add(self, key: CallKey, call: _Call, now: float) -> None:
        self._calls[key] = call
        raw = key[1].encode()
        self._ids[raw] = self._ids.get(raw, 0) + 1
        self._raw_ids_changed()
        self._servers.add(key[0])
        if call.pending:
            self._pending.add(key)
        while len(self._calls) > self.max_calls:
            oldest = next(iter(self._calls))
            self._evicted.append(self._drop(oldest, EndReason.MAX_CALLS, now))

    def _on_dialplan(self, frame: Frame, data: Mapping[str, Any], now: float) -> list[CallEvent]:
        """Newexten/VarSet: the hottest events, so bail out unless a call waits for its number."""
        if not self._pending:
            return []
        key = (frame.server_id, text(data, "Uniqueid"))
        if key not in self._pending:
            return []
        number = dialled_number_signal(data, self.prefixes, self.did_contexts)
        if not number:
            return []
        call = self._calls[key]
        self._pending.discard(key)
        if self._late(key[0], key[1], parse_timestamp(data), now):
            self._forget(key)
            self._suspects.discard(key)
            return []
        call.pending = False
        caller = clean(text(data, "CallerIDNum"))
        if caller and caller.lower() not in UNKNOWN_NAMES:
            # The dialplan may have fixed the caller id since the Newchannel (e.g. a CID prefix).
            name = clean(text(data, "CallerIDName"))
            call.template = replace(
                call.template,
                caller_number=caller,
                caller_name=caller if name.lower() in UNKNOWN_NAMES else name,
            )
        call.template = replace(
            call.template,
            dialled_number=number,
            occurred_at=parse_timestamp(data) or now,
            detected_at=now,
        )
        call.rung_at = now
        self._ring_deadline(key, call)
        return [call.template]

    # --- lookups -------------------------------------------------------------------------------

    def _root_call(self, frame: Frame, data: Mapping[str, Any]) -> _Call | None:
        """The rung call whose root channel sent this event."""
        call = self._calls.get((frame.server_id, text(data, "Uniqueid")))
        return call if call is not None and not call.pending else None

    def _any_call(self, frame: Frame, data: Mapping[str, Any]) -> tuple[_Call | None, bool]:
        """(the rung call this event belongs to, whether it came from the root)."""
        call = self._root_call(frame, data)
        if call is not None:
            return call, True
        linkedid = text(data, "Linkedid") or text(data, "DestLinkedid")
        call = self._calls.get((frame.server_id, linkedid))
        return (call if call is not None and not call.pending else None), False

    # --- answer --------------------------------------------------------------------------------

    def _on_dial_begin(self, frame: Frame, data: Mapping[str, Any], now: float) -> list[CallEvent]:
        call = self._root_call(frame, data)
        if call is not None and call.answered_by is None:
            call.root_status = DIALING
        return []

    def _on_dial_end(self, frame: Frame, data: Mapping[str, Any], now: float) -> list[CallEvent]:
        """Ring groups CANCEL the losers before the winner's ANSWER: a status is only recorded
        here; the outcome is decided on the root's ANSWER or the root's Hangup."""
        call, from_root = self._any_call(frame, data)
        if call is None or call.answered_by is not None or call.answers is None:
            return []
        status = text(data, "DialStatus")
        if from_root:
            call.root_status = status
        if status != "ANSWER":
            return []
        dest = text(data, "DestChannel")
        who = self._party(call, dest, text(data, "DestCallerIDNum"))
        _remember(call.answers, ROOT if from_root else text(data, "Channel"), (dest, who))
        return self._try_answer(call, data, now)

    def _on_agent_connect(
        self, frame: Frame, data: Mapping[str, Any], now: float
    ) -> list[CallEvent]:
        """A queue member picked up: its interface names the member (`Local/1010@from-queue/n`)."""
        call, from_root = self._any_call(frame, data)
        if call is None or call.answered_by is not None or call.answers is None:
            return []
        interface = text(data, "Interface")
        who = (
            _interface_peer(interface)
            or text(data, "MemberName")
            or channel_peer(text(data, "DestChannel"))
        )
        if from_root:
            return self._answered(call, who, data, now)
        _remember(call.answers, text(data, "Channel"), ("", who))  # a queue inside a Local
        return self._try_answer(call, data, now)

    def _try_answer(self, call: _Call, data: Mapping[str, Any], now: float) -> list[CallEvent]:
        """ANSWERED once the root's answered Dial leads, through Local pairs, to a real party.

        Call acceptance (VoIPGRID) and voicemail behind a Local channel answer inner legs that
        never reach the caller, so an inner ANSWER alone is not enough."""
        if call.answers is None:
            return []
        channel = ROOT
        for _ in range(MAX_LOCAL_HOPS):
            hop = call.answers.get(channel)
            if hop is None:
                return []
            dest, who = hop
            if not dest.startswith("Local/"):
                return self._answered(call, who, data, now)
            channel = _local_partner(dest)
        return []

    def _on_bridge_enter(
        self, frame: Frame, data: Mapping[str, Any], now: float
    ) -> list[CallEvent]:
        """Fallback answer: the root and a non-Local leg of the call share a bridge (a connection
        made without a Dial, e.g. Bridge() or a pickup the Dial events did not show)."""
        call, from_root = self._any_call(frame, data)
        if call is None or call.answered_by is not None or call.leg_bridges is None:
            return []
        bridge = text(data, "BridgeUniqueid")
        if not bridge:
            return []
        if from_root:
            call.root_bridge = bridge
            who = call.leg_bridges.get(bridge)
            return [] if who is None else self._answered(call, who, data, now)
        channel = text(data, "Channel")
        if not channel or channel.startswith("Local/"):
            return []
        who = self._party(call, channel, text(data, "CallerIDNum"))
        if bridge == call.root_bridge:
            return self._answered(call, who, data, now)
        _remember(call.leg_bridges, bridge, who)
        return []

    def _on_bridge_leave(
        self, frame: Frame, data: Mapping[str, Any], now: float
    ) -> list[CallEvent]:
        call = self._root_call(frame, data)
        if call is not None and call.root_bridge == text(data, "BridgeUniqueid"):
            call.root_bridge = ""
        return []

    def _answered(
        self, call: _Call, who: str, data: Mapping[str, Any], now: float
    ) -> list[CallEvent]:
        call.answered_by = who
        call.answers = call.leg_bridges = None  # free what only the answer decision needed
        call.root_bridge = ""
        return [
            replace(
                call.template,
                kind=Kind.ANSWERED,
                answered_by=who,
                occurred_at=parse_timestamp(data) or now,
                detected_at=now,
            )
        ]

    @staticmethod
    def _party(call: _Call, channel: str, number: str) -> str:
        """Who a leg reached: the number its channel identifies as (a mobile the call was
        forwarded to, an extension), unless that is only the DID or the caller echoed back by
        Dial, else the device behind the channel (`PJSIP/1010-0000001a` -> `1010`)."""
        if is_dialled_number(number) and number not in (
            call.template.dialled_number,
            call.template.caller_number,
        ):
            return number
        return channel_peer(channel)

    # --- end -----------------------------------------------------------------------------------

    def _on_hangup_request(
        self, frame: Frame, data: Mapping[str, Any], now: float
    ) -> list[CallEvent]:
        """The caller's side hung up (HangupRequest comes from the channel driver; a queue reports
        QueueCallerAbandon). Counts as abandoning only while the call was still being rung."""
        call = self._root_call(frame, data)
        if call is None or call.answered_by is not None:
            return []
        if data.get("Event") == "QueueCallerAbandon" or call.root_status in ("", DIALING):
            call.abandoned = True
        return []

    def _on_hangup(self, frame: Frame, data: Mapping[str, Any], now: float) -> list[CallEvent]:
        key = (frame.server_id, text(data, "Uniqueid"))
        call = self._forget(key)
        if call is None:
            return []
        self._suspects.discard(key)
        if call.pending:
            self._pending.discard(key)
            return []
        cause = text(data, "Cause")
        return [
            replace(
                call.template,
                kind=Kind.ENDED,
                answered_by=call.answered_by or "",
                outcome=_outcome(call, cause).value,
                hangup_cause=cause,
                occurred_at=parse_timestamp(data) or now,
                detected_at=now,
            )
        ]

    def _forget(self, key: CallKey) -> _Call | None:
        call = self._calls.pop(key, None)
        if call is not None:
            raw = key[1].encode()
            left = self._ids[raw] - 1
            if left:
                self._ids[raw] = left
            else:
                del self._ids[raw]
                self._raw_ids_changed()
        return call

    def _drop(self, key: CallKey, reason: EndReason, now: float) -> Dropped:
        call = self._forget(key)
        assert call is not None
        self._pending.discard(key)
        self._suspects.discard(key)
        ended = None
        if not call.pending:
            ended = replace(
                call.template,
                kind=Kind.ENDED,
                answered_by=call.answered_by or "",
                outcome=Outcome.UNKNOWN.value,
                end_reason=reason.value,
                occurred_at=now,
                detected_at=now,
            )
        return Dropped(key[0], key[1], call.state, reason.value, now - call.first_seen, ended)


def _outcome(call: _Call, cause: str) -> Outcome:
    """Decided on the root's Hangup, from what the call went through."""
    if call.answered_by is not None:
        return Outcome.ANSWERED
    # CANCEL on the root's own Dial with nobody answering: the caller left while phones rang.
    if call.abandoned or call.root_status in ("CANCEL", DIALING):
        return Outcome.CALLER_ABANDONED
    # Busy/rejected by the callee, or by the PBX before anyone was rung; a Busy() played after
    # the phones rang out is still "nobody answered".
    if call.root_status in BUSY_STATUSES or (not call.root_status and cause in BUSY_CAUSES):
        return Outcome.BUSY
    return Outcome.NO_ANSWER


def _remember(memo: dict[str, Any], key: str, value: Any) -> None:
    if key in memo or len(memo) < MAX_LEGS:
        memo[key] = value


def _local_partner(channel: str) -> str:
    """`Local/x@ctx-0001;1` <-> `Local/x@ctx-0001;2`: what enters one half leaves the other."""
    if channel.endswith(";1"):
        return channel[:-1] + "2"
    if channel.endswith(";2"):
        return channel[:-1] + "1"
    return channel


def _interface_peer(interface: str) -> str:
    """Queue member interface -> member: `PJSIP/1010` -> `1010`, `Local/1010@from-queue/n` ->
    `1010`."""
    tech, sep, rest = interface.partition("/")
    if not sep:
        return ""
    if tech == "Local":
        return rest.partition("@")[0]
    return rest.partition("/")[0]
