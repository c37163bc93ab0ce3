"""One relay's frames in, call events out: decode, count and log bad frames, follow calls.

Synchronous and free of I/O so the WebSocket reader can call it inline for every frame and stay
prompt (amiws buffers without limit for a slow reader).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field

from functions.core.call_event import CallEvent
from functions.core.call_tracker import CallTracker
from functions.core.frames import (
    EVENT_FRAME_TYPE,
    RESPONSE_FRAME_TYPE,
    Frame,
    Rejected,
    load_frame,
    validate_frame,
)
from functions.core.raw_gate import may_matter
from functions.log import fields, mask_number

log = logging.getLogger("connector.ingest")
CLOCK_SAMPLE_EVERY = 1.0  # seconds between PBX clock samples taken from frames we skip
# AMI's Timestamp header (timestampevents=yes), read from raw bytes like the event name
search_timestamp = re.compile(rb'"Timestamp"\s*:\s*"([0-9]{1,12}(?:\.[0-9]{1,9})?)"').search
search_server_id = re.compile(rb'"server_id"\s*:\s*([0-9]{1,9})\b').search
_LOG_EVERY = 100  # after the first few, log one bad frame of each reason per this many
# amiws's replies to its own AMI Login (design.md "The relay (amiws) frames")
_LOGIN_REPLIES = {"Authentication accepted": "up", "Authentication failed": "auth_failed"}


@dataclass
class RelayStats:
    frames: int = 0
    events: int = 0
    repaired: int = 0
    skipped: int = 0  # frames that could not change a call, dropped before validation
    bad_frames: Counter[str] = field(default_factory=Counter)
    last_frame_at: float | None = None
    last_event_at: float | None = None
    # amiws's own AMI link to the PBX, from its login replies only: "up", "auth_failed", ""
    # (unknown: amiws sends nothing on connect), and since when (connector clock)
    pbx_link: str = ""
    pbx_link_since: float | None = None
    gaps: int = 0  # reconnects and PBX re-logins: events may have been lost

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "events": self.events,
            "repaired": self.repaired,
            "skipped": self.skipped,
            "bad_frames": dict(self.bad_frames),
            "last_frame_at": self.last_frame_at,
            "last_event_at": self.last_event_at,
            "pbx_link": self.pbx_link,
            "pbx_link_since": self.pbx_link_since,
            "gaps": self.gaps,
        }


class RelayIngest:
    def __init__(self, relay: str, tracker: CallTracker, max_frame_bytes: int) -> None:
        self.relay = relay
        self.tracker = tracker
        self.max_frame_bytes = max_frame_bytes
        self.stats = RelayStats()
        self._next_clock_sample = 0.0

    def on_frame(self, payload: bytes | str, now: float | None = None) -> list[CallEvent]:
        stats = self.stats
        stats.frames += 1
        stats.last_frame_at = now = time.time() if now is None else now
        tracker = self.tracker
        if now >= self._next_clock_sample:  # the PBX's clock, from any frame, once a second
            self._sample_clock(payload, now)
        # Most frames cannot change a call. The raw bytes say so for most (the event name, a
        # Newchannel's context, the calls' ids: functions.core.raw_gate, compiled); the parsed
        # headers say so for most of the rest, before validation and tracking.
        if (
            type(payload) is bytes
            and len(payload) <= self.max_frame_bytes
            and not may_matter(payload, tracker.wanted, tracker.raw_ids, tracker.raw_prefixes)
        ):
            stats.skipped += 1
            return []
        loaded = load_frame(payload, max_bytes=self.max_frame_bytes)
        if type(loaded) is Rejected:
            self._bad(loaded, payload)
            return []
        obj, repaired = loaded  # type: ignore[misc]
        # Checked before validation (which costs about as much again for a third of the
        # frames): a malformed frame that could not matter anyway counts as skipped, not bad.
        if type(obj) is dict and obj.get("type") == EVENT_FRAME_TYPE:
            data = obj.get("data")
            if type(data) is dict:
                event = data.get("Event")
                if type(event) is str and not tracker.needs(event, data):
                    stats.skipped += 1
                    return []
        decoded = validate_frame(obj, repaired)
        if isinstance(decoded, Rejected):
            self._bad(decoded, payload)
            return []
        if decoded.repaired:
            self.stats.repaired += 1
        if decoded.type == RESPONSE_FRAME_TYPE:
            self._pbx_link(decoded, now)
            return []
        stale = tracker.stale_rings
        try:
            events = self.tracker.feed(decoded, now)
        except Exception:  # a tracker bug must not take the relay's other calls down with it
            self.stats.bad_frames["tracker_error"] += 1
            log.exception("call tracker failed on a frame", extra=fields(relay=self.relay))
            return []
        if tracker.stale_rings != stale:
            self._log_stale_ring()
        if events:
            self.stats.events += len(events)
            self.stats.last_event_at = now
            for event in events:
                log.info(
                    "call event",
                    extra=fields(
                        relay=self.relay,
                        server_id=event.server_id,
                        linkedid=event.linkedid,
                        kind=event.kind.value,
                        caller=mask_number(event.caller_number),
                        dialled=mask_number(event.dialled_number),
                    ),
                )
        return events

    def _bad(self, rejected: Rejected, payload: bytes | str) -> None:
        count = self.stats.bad_frames[rejected.reason] + 1
        self.stats.bad_frames[rejected.reason] = count
        if count <= 3 or count % _LOG_EVERY == 0:
            log.warning(
                "bad frame skipped",
                extra=fields(
                    relay=self.relay,
                    reason=rejected.reason,
                    detail=rejected.detail,
                    size=len(payload),
                    count=count,
                ),
            )

    def _sample_clock(self, payload: bytes | str, now: float) -> None:
        self._next_clock_sample = now + CLOCK_SAMPLE_EVERY
        raw = payload if type(payload) is bytes else payload.encode()
        found = search_timestamp(raw)
        if found is not None:  # digits and one dot: float() cannot fail
            server = search_server_id(raw, 0, 200)  # amiws writes it first, in the envelope
            server_id = int(server[1]) if server is not None else 1
            self.tracker.clock(server_id).observe(float(found[1]), now)

    def on_connected(self, connects: int, now: float | None = None) -> None:
        """The relay client (re)connected. After a reconnect the events of the gap are lost:
        calls still ringing get a short grace, then end (CallTracker.mark_gap)."""
        if connects > 1:
            self._gap("reconnect", None, time.time() if now is None else now)

    def _gap(self, cause: str, server_id: int | None, now: float) -> None:
        self.stats.gaps += 1
        marked = self.tracker.mark_gap(now, server_id)
        if marked:
            log.warning(
                "relay gap: calls in progress may have lost their events",
                extra=fields(relay=self.relay, cause=cause, server_id=server_id, calls=marked),
            )

    def _pbx_link(self, frame: Frame, now: float) -> None:
        """amiws sends every AMI Response to every client: only its own login replies (no
        ActionID) say anything about its link to the PBX."""
        data = frame.data
        if "ActionID" in data:
            return
        link = _LOGIN_REPLIES.get(data.get("Message", ""))
        if link is None:
            return
        stats = self.stats
        # A login means the link was down: its events are lost. A refused one repeats every
        # second while the PBX refuses; the first says the link is down.
        if link == "up" or link != stats.pbx_link:
            self._gap("pbx_login" if link == "up" else "pbx_auth_failed", frame.server_id, now)
        if link != stats.pbx_link:
            stats.pbx_link, stats.pbx_link_since = link, now
            log.log(
                logging.INFO if link == "up" else logging.WARNING,
                "relay PBX link",
                extra=fields(
                    relay=self.relay,
                    server_id=frame.server_id,
                    pbx_link=link,
                    pbx_message=data.get("Message", ""),
                ),
            )

    def _log_stale_ring(self) -> None:
        server_id, linkedid, lateness = self.tracker.last_stale or (0, "", 0.0)
        log.warning(
            "ringing frame arrived too late to ring",
            extra=fields(
                relay=self.relay,
                server_id=server_id,
                linkedid=linkedid,
                late_s=round(lateness, 1),
                clock_offset_s=round(self.tracker.clock(server_id).offset or 0.0, 1),
            ),
        )
