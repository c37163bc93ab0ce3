"""The normalized, versioned call event: the contract between the connector and the notifier.

One JSON object per Pub/Sub message (UTF-8). Version 1 fields are documented in README.md
("Call-event schema"). Readers accept unknown extra fields (forward compatible) and reject a
message whose required fields are missing or of the wrong type.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from functions.core.clean_text import clean

SCHEMA_VERSION = 1


class Kind(enum.StrEnum):
    RINGING = "ringing"  # an outside call reached the PBX for a dialled number: ring its owners
    ANSWERED = "answered"  # somebody picked up (desk phone, queue agent, ...): stop ringing
    ENDED = "ended"  # the root channel hung up; `outcome` says how the call went


class Outcome(enum.StrEnum):
    ANSWERED = "answered"  # was answered, then ended normally
    CALLER_ABANDONED = "caller_abandoned"  # the caller hung up before anyone answered
    NO_ANSWER = "no_answer"  # nobody answered (timeout, voicemail-less ring group, ...)
    BUSY = "busy"  # rejected or busy
    UNKNOWN = "unknown"  # ended by the connector without seeing the end (`end_reason` says why)


class EndReason(enum.StrEnum):
    """Why the connector ended a call whose end it never saw (outcome `unknown`)."""

    RING_TIMEOUT = "ring_timeout"  # rang past the ring window with no answer and no end
    RELAY_GAP = "relay_gap"  # events were lost (relay reconnect, PBX re-login, takeover)
    MAX_CALL_SECONDS = "max_call_seconds"  # followed past the tracking limit
    MAX_CALLS = "max_calls"  # evicted: too many calls in progress on one relay


class InvalidCallEvent(ValueError):
    """A message that is not a usable call event; acknowledged and logged, never retried."""


@dataclass(frozen=True, slots=True)
class CallEvent:
    kind: Kind
    relay: str  # relay endpoint "host:port" (lower-case host): with server_id, the PBX identity
    server_id: int
    linkedid: str  # the PBX's id of the whole call; the app keys the call by it
    caller_number: str
    caller_name: str
    dialled_number: str  # the company number (DID) the caller dialled, as the PBX gave it
    channel: str
    occurred_at: float  # epoch seconds, PBX clock (AMI Timestamp) when known, else detected_at
    detected_at: float  # epoch seconds when the connector saw the frame
    server_name: str = ""
    answered_by: str = ""  # ANSWERED/ENDED: extension, number or channel that picked up
    outcome: str = ""  # ENDED: an Outcome value
    hangup_cause: str = ""  # ENDED: Q.850 cause of the root channel's Hangup
    # ENDED with outcome `unknown`: why the connector ended it without seeing its end
    # (END_REASONS); "" for ends the PBX reported
    end_reason: str = ""
    test: bool = False  # a test call (the admin CLI's `ring`): history marks it as such
    version: int = SCHEMA_VERSION

    @property
    def call_key(self) -> str:
        """Stable identity of the call across connectors and redeliveries."""
        return f"{self.relay}/{self.server_id}/{self.linkedid}"

    @property
    def call_hash(self) -> str:
        """Short opaque form of call_key, for ids with length or charset limits."""
        return hashlib.sha256(self.call_key.encode()).hexdigest()[:24]

    @property
    def event_id(self) -> str:
        return f"{self.call_key}/{self.kind.value}"

    def to_json(self) -> bytes:
        body = asdict(self)
        body["kind"] = self.kind.value
        body["occurred_at"] = _iso(self.occurred_at)
        body["detected_at"] = _iso(self.detected_at)
        return orjson.dumps(body)

    def attributes(self) -> dict[str, str]:
        """Pub/Sub attributes: routing facts only, never a phone number."""
        return {"kind": self.kind.value, "version": str(self.version)}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: Any, name: str) -> float:
    if not isinstance(value, str):
        raise InvalidCallEvent(f"{name} must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidCallEvent(f"{name} is not ISO 8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


_REQUIRED_STR = ("relay", "linkedid", "caller_number", "dialled_number")
_OPTIONAL_STR = (
    "caller_name",
    "channel",
    "server_name",
    "answered_by",
    "outcome",
    "hangup_cause",
    "end_reason",
)
# Free text that reaches a phone's screen and history: cleaned whoever published the event.
_SHOWN = ("caller_name", "caller_number", "dialled_number", "server_name", "answered_by")


def parse_call_event(raw: bytes | str) -> CallEvent:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidCallEvent(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidCallEvent("not a JSON object")
    version = body.get("version")
    if version != SCHEMA_VERSION:
        raise InvalidCallEvent(f"unsupported version {version!r}")
    try:
        kind = Kind(body.get("kind"))
    except ValueError:
        raise InvalidCallEvent(f"unknown kind {body.get('kind')!r}") from None
    server_id = body.get("server_id")
    if not isinstance(server_id, int) or isinstance(server_id, bool):
        raise InvalidCallEvent("server_id must be an integer")
    fields: dict[str, Any] = {}
    for name in _REQUIRED_STR:
        value = body.get(name)
        if not isinstance(value, str) or (name != "caller_number" and not value):
            raise InvalidCallEvent(f"{name} must be a non-empty string")
        fields[name] = value
    for name in _OPTIONAL_STR:
        value = body.get(name, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise InvalidCallEvent(f"{name} must be a string")
        fields[name] = value
    for name in _SHOWN:
        fields[name] = clean(fields[name])
    test = body.get("test", False)
    if not isinstance(test, bool):
        raise InvalidCallEvent("test must be a boolean")
    if kind is Kind.ENDED and fields["outcome"] not in {o.value for o in Outcome}:
        raise InvalidCallEvent(f"ended event with unknown outcome {fields['outcome']!r}")
    return CallEvent(
        kind=kind,
        server_id=server_id,
        occurred_at=_parse_time(body.get("occurred_at"), "occurred_at"),
        detected_at=_parse_time(body.get("detected_at"), "detected_at"),
        test=test,
        **fields,
    )
