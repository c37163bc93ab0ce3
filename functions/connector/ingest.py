"""One relay's frames in, call events out: decode, count and log bad frames, follow calls.

Synchronous and free of I/O so the WebSocket reader can call it inline for every frame and stay
prompt (amiws buffers without limit for a slow reader).
"""

from __future__ import annotations

import logging
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
    search_event_name,
    validate_frame,
)
from functions.log import fields, mask_number

log = logging.getLogger("connector.ingest")
_LOG_EVERY = 100  # after the first few, log one bad frame of each reason per this many


@dataclass
class RelayStats:
    frames: int = 0
    events: int = 0
    repaired: int = 0
    skipped: int = 0  # frames that could not change a call, dropped before validation
    bad_frames: Counter[str] = field(default_factory=Counter)
    last_frame_at: float | None = None
    last_event_at: float | None = None
    pbx_link: str = ""  # last amiws type-4 message: its own AMI link to the PBX

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
        }


class RelayIngest:
    def __init__(self, relay: str, tracker: CallTracker, max_frame_bytes: int) -> None:
        self.relay = relay
        self.tracker = tracker
        self.max_frame_bytes = max_frame_bytes
        self.stats = RelayStats()

    def on_frame(self, payload: bytes | str, now: float | None = None) -> list[CallEvent]:
        stats = self.stats
        stats.frames += 1
        stats.last_frame_at = now = time.time() if now is None else now
        tracker = self.tracker
        # Most frames cannot change a call. The event name, read from the raw bytes, says so
        # for most; the parsed headers say so for most of the rest, before validation and
        # tracking.
        if type(payload) is bytes and len(payload) <= self.max_frame_bytes:
            name = search_event_name(payload)
            if name is not None and name[1] not in tracker.wanted:
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
            self._pbx_link(decoded)
            return []
        try:
            events = self.tracker.feed(decoded, now)
        except Exception:  # a tracker bug must not take the relay's other calls down with it
            self.stats.bad_frames["tracker_error"] += 1
            log.exception("call tracker failed on a frame", extra=fields(relay=self.relay))
            return []
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

    def _pbx_link(self, frame: Frame) -> None:
        message = frame.data.get("Message", "") or frame.data.get("Response", "")
        if message and message != self.stats.pbx_link:
            self.stats.pbx_link = message
            level = logging.WARNING if "fail" in message.lower() else logging.INFO
            log.log(level, "relay PBX link", extra=fields(relay=self.relay, message=message))
