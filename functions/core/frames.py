"""Decoding relay (amiws) frames: bytes in, a validated `Frame` or a rejection reason out.

The relay copies AMI bytes verbatim, so a caller name sent by a carrier in CP949/EUC-KR arrives as
invalid UTF-8 inside a text frame, and some frames are not valid JSON (e.g. `\\v`). We read frames
as bytes, decode leniently and repair what can be repaired; everything else is rejected with a
reason the connection counts and logs. Nothing here raises on bad input.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Final, NamedTuple

import orjson

EVENT_FRAME_TYPE: Final = 3  # amiws: 0 unknown, 1 prompt, 2 action, 3 event, 4 response, ...
RESPONSE_FRAME_TYPE: Final = 4


def _utf8_else_cp949(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: decode the offending bytes as CP949, else U+FFFD.

    Applied per bad sequence, so valid UTF-8 elsewhere in the frame stays intact.
    """
    if not isinstance(error, UnicodeDecodeError):
        raise error
    raw = error.object[error.start : error.start + 2]
    try:
        return raw.decode("cp949"), error.start + 2
    except UnicodeDecodeError:
        return "\ufffd", error.start + 1


codecs.register_error("makecall_utf8_else_cp949", _utf8_else_cp949)

# A JSON string literal, tolerating any escape so that bad ones can be mended inside it.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
# JSON allows only these escapes; amiws writes others (`\v`, `\a`, ...) verbatim.
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_VALID_ESCAPES = frozenset('"\\/bfnrtu')
_CONTROL = re.compile(r"[\x00-\x1f]")
_NAMED = {"v": "\\u000b", "a": "\\u0007", "0": "\\u0000", "e": "\\u001b"}


def _lenient_text(payload: bytes) -> str:
    """UTF-8, else CP949 (Korean carriers' caller names), else UTF-8 mending byte by byte."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return payload.decode("cp949")
    except UnicodeDecodeError:
        return payload.decode("utf-8", "makecall_utf8_else_cp949")


def _repair_string(match: re.Match[str]) -> str:
    def mend(escape: re.Match[str]) -> str:
        char = escape.group(1)
        if char in _VALID_ESCAPES:
            return escape.group(0)
        return _NAMED.get(char, "\\\\" + char)

    literal = _ESCAPE.sub(mend, match.group(0))
    # Raw control characters are illegal inside JSON strings.
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group(0)):04x}", literal)


def _repair(text: str) -> str:
    return _STRING.sub(_repair_string, text)


class Frame(NamedTuple):
    """One relay frame that passed validation. Immutable; a named tuple because one is built per
    parsed frame and it builds in a third of a frozen dataclass's time."""

    type: int
    server_id: int
    server_name: str
    data: dict[str, str]  # AMI headers; values are strings (non-strings were dropped)
    repaired: bool = False  # decoded only after lenient decoding or JSON repair
    dropped_fields: tuple[str, ...] = ()  # data keys whose value was null or not a string


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame that cannot be used; `reason` is a short stable label for counters and logs."""

    reason: str
    detail: str = ""


# The event name read from the raw bytes with one compiled search, wherever the key sits (amiws
# sends the AMI headers in order, Event first; captures may sort them). `"Event"` inside a
# string value is written `\"Event\"`, which does not match. Not covered, as amiws cannot send
# them: a header name containing a quote before `Event`, and two Event keys (the first is
# used; JSON readers keep the last). A lookbehind for those would cost the search its fast
# literal scan (3x slower, measured).
# `search_event_name(payload)[1]` is the name (None: not found, e.g. a truncated frame, which
# is then parsed and reported); a module-level bound method so the per-frame reader pays no
# extra call.
search_event_name = re.compile(rb'"Event"\s*:\s*"([A-Za-z]+)"').search
_STR_ONLY = frozenset({str})


def decode_frame(payload: bytes | str, *, max_bytes: int = 256 * 1024) -> Frame | Rejected:
    loaded = load_frame(payload, max_bytes=max_bytes)
    if type(loaded) is Rejected:
        return loaded
    return validate_frame(*loaded)  # type: ignore[misc]


def load_frame(
    payload: bytes | str, *, max_bytes: int = 256 * 1024
) -> tuple[object, bool] | Rejected:
    """The frame's JSON, decoded leniently: (value, repaired), not yet validated. Split from
    `validate_frame` so a reader can look at a parsed frame and drop it before paying for more."""
    size = len(payload)
    if size > max_bytes:
        return Rejected("oversize", f"{size} bytes > {max_bytes}")
    try:
        return orjson.loads(payload), False
    except orjson.JSONDecodeError:
        text = payload if isinstance(payload, str) else _lenient_text(payload)
        repaired = _repair(text)
        try:
            return orjson.loads(repaired), True
        except orjson.JSONDecodeError as exc:
            # amiws cuts a frame short itself when a name ends mid-character: the JSON stops
            # before its end. Counted apart: the event is lost, not malformed.
            if exc.pos >= len(repaired.rstrip()) and repaired.lstrip().startswith("{"):
                return Rejected("truncated", f"{size} bytes, ends inside the JSON")
            return Rejected("invalid_json", str(exc)[:120])


def validate_frame(obj: object, repaired: bool) -> Frame | Rejected:
    if not isinstance(obj, dict):
        return Rejected("not_an_object", type(obj).__name__)
    frame_type = obj.get("type")
    # bool is an int subclass; amiws never sends true/false for type.
    if not isinstance(frame_type, int) or isinstance(frame_type, bool):
        return Rejected("bad_type_field", repr(frame_type)[:40])
    server_id = obj.get("server_id", 1)
    if not isinstance(server_id, int) or isinstance(server_id, bool):
        return Rejected("bad_server_id", repr(server_id)[:40])
    server_name = obj.get("server_name")
    if not isinstance(server_name, str):
        server_name = ""
    data = obj.get("data")
    if not isinstance(data, dict):
        # Frames of other types may carry no data; only events need it.
        if frame_type == EVENT_FRAME_TYPE:
            return Rejected("bad_data_field", type(data).__name__)
        data = {}
    # Hot path: amiws sends only strings, so the parsed dict is used as it is (one C-level pass).
    if {*map(type, data.values())} <= _STR_ONLY:
        return Frame(frame_type, server_id, server_name, data, repaired)
    clean = {key: value for key, value in data.items() if isinstance(value, str)}
    dropped = tuple(key for key in data if key not in clean)
    return Frame(frame_type, server_id, server_name, clean, repaired, dropped)
