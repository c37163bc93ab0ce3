"""Which relay frames are an incoming outside call: the seed's rule, then the root refinement.

The seed (the app's original client-side filter) rings on: frame type 3, `Event == "Newchannel"`,
`Context` starting with a trunk prefix, `CallerIDNum` and `Exten` present. On top of it, only the
root channel of a call rings (`Uniqueid == Linkedid`, not a `Local/` channel), and a root with
`Exten` `s`/empty has no dialled number yet (the call tracker waits for it, see
`dialled_number_signal`).

Every reader treats a value that is not a string as absent: frames built by hand or by a future
decoder must not crash the rule.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from functions.core.clean_text import clean
from functions.core.frames import EVENT_FRAME_TYPE

UNKNOWN_NAMES = frozenset({"", "<unknown>", "unknown"})
NO_EXTEN = frozenset({"", "s"})
# Characters a dialled number may hold besides digits (E.164 plus, separators, DTMF keys).
_NUMBER_CHARS = frozenset("0123456789+-*#() .")
# FreePBX's from-trunk sets `__FROM_DID=${EXTEN}`; AMI reports the name with its underscores.
FROM_DID_VARIABLE = "FROM_DID"


@dataclass(frozen=True, slots=True)
class IncomingCall:
    linkedid: str
    channel: str
    caller_number: str
    caller_name: str
    dialled_number: str  # "" from `match_trunk_root` while the dialplan has not told it yet
    pbx_timestamp: float | None  # AMI `Timestamp` (timestampevents=yes), epoch seconds


def text(data: Mapping[str, Any], key: str) -> str:
    """`data[key]` when it is a string, else "" (absent, null and non-string values alike)."""
    value = data.get(key)
    return value if isinstance(value, str) else ""


def is_trunk_context(context: object, prefixes: Sequence[str]) -> bool:
    return isinstance(context, str) and context.startswith(tuple(prefixes))


def seed_rule(frame_type: int, data: Mapping[str, str], prefixes: Sequence[str]) -> bool:
    """The seed's filter, exactly (a value that is not a string counts as absent)."""
    return (
        frame_type == EVENT_FRAME_TYPE
        and data.get("Event") == "Newchannel"
        and is_trunk_context(text(data, "Context"), prefixes)
        and isinstance(data.get("CallerIDNum"), str)
        and isinstance(data.get("Exten"), str)
    )


def is_root_channel(data: Mapping[str, str]) -> bool:
    """A call's first channel; frames without ids (the seed's short example) count as root."""
    if text(data, "Channel").startswith("Local/"):
        return False
    uniqueid, linkedid = text(data, "Uniqueid"), text(data, "Linkedid")
    if uniqueid and linkedid:
        return uniqueid == linkedid
    return True


def caller_display_name(data: Mapping[str, str]) -> str:
    name = clean(text(data, "CallerIDName"))
    return clean(text(data, "CallerIDNum")) if name.lower() in UNKNOWN_NAMES else name


def derived_linkedid(server_id: int, data: Mapping[str, str]) -> str:
    """A stable call id for frames that carry no Linkedid: equal frames give equal ids, so two
    connectors seeing the same frame still agree on the call."""
    material = "\x1f".join(
        [str(server_id)]
        + [text(data, k) for k in ("Channel", "CallerIDNum", "Exten", "Context", "Timestamp")]
    )
    return "frame-" + hashlib.sha256(material.encode()).hexdigest()[:20]


def parse_timestamp(data: Mapping[str, str]) -> float | None:
    raw = text(data, "Timestamp")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value > 0 and math.isfinite(value) else None


def match_trunk_root(
    frame_type: int, server_id: int, data: Mapping[str, str], prefixes: Sequence[str]
) -> IncomingCall | None:
    """The root channel of a trunk call (seed rule + root), even before its number is known:
    `dialled_number` is "" when `Exten` is `s`/empty."""
    if not seed_rule(frame_type, data, prefixes) or not is_root_channel(data):
        return None
    exten = data["Exten"].strip()
    return IncomingCall(
        # AMI 1.3 has no Linkedid: a root's Uniqueid is the call's id there too, and its
        # Hangup names it; a frame with neither (a hand-written one) gets a derived id.
        linkedid=text(data, "Linkedid")
        or text(data, "Uniqueid")
        or derived_linkedid(server_id, data),
        channel=text(data, "Channel"),
        caller_number=clean(data["CallerIDNum"]),
        caller_name=caller_display_name(data),
        dialled_number="" if exten in NO_EXTEN else exten,
        pbx_timestamp=parse_timestamp(data),
    )


def match_incoming(
    frame_type: int, server_id: int, data: Mapping[str, str], prefixes: Sequence[str]
) -> IncomingCall | None:
    """An incoming call to ring now, or None (not a trunk root Newchannel with a dialled number)."""
    call = match_trunk_root(frame_type, server_id, data, prefixes)
    return call if call is not None and call.dialled_number else None


def is_dialled_number(value: str) -> bool:
    """A real number (a DID), not `s`, `h`, `i`, `t`, `failed` or another special extension."""
    return (
        isinstance(value, str)
        and any(ch.isdigit() for ch in value)
        and all(ch in _NUMBER_CHARS for ch in value)
    )


def dialled_number_signal(
    data: Mapping[str, str], prefixes: Sequence[str], did_contexts: Sequence[str] = ()
) -> str:
    """The dialled number that a root channel's `Newexten` or `VarSet` reveals, else "".

    Counts: the root entering a real number in a trunk context (a `Goto(from-pstn,${DID},1)` after
    the `s` extension) or in one of `did_contexts` (FreePBX inbound routes, `ext-did-*`); and a
    `FROM_DID` variable (FreePBX `from-trunk`). The caller must check that the frame is the root's.
    """
    event = data.get("Event")
    if event == "VarSet":
        if text(data, "Variable").lstrip("_") != FROM_DID_VARIABLE:
            return ""
        value = text(data, "Value").strip()
    elif event == "Newexten":
        context = text(data, "Context")
        if not (is_trunk_context(context, prefixes) or is_trunk_context(context, did_contexts)):
            return ""
        # Asterisk 13+ sends `Exten`; 11 sent only `Extension`.
        value = (text(data, "Exten") or text(data, "Extension")).strip()
    else:
        return ""
    return value if is_dialled_number(value) else ""


def channel_peer(channel: str) -> str:
    """`PJSIP/1010-0000001a` -> `1010`; `Local/201@ctx-0001;2` -> `201`; the device or number."""
    if not isinstance(channel, str):
        return ""
    _, _, rest = channel.partition("/")
    if channel.startswith("Local/"):
        return rest.partition("@")[0]
    peer, sep, _ = rest.rpartition("-")
    return peer if sep else rest
