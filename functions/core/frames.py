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
from typing import Final

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


@dataclass(frozen=True, slots=True)
class Frame:
    """One relay frame that passed validation."""

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


# amiws writes compact JSON, the AMI headers in order, Event first: these are found with plain
# byte searches (several times cheaper than a regex, and than parsing). Other spellings fall
# back to the regex, or to "unknown".
_EVENT_KEY = b'"Event":"'
_PEEK_EVENT = re.compile(rb'"Event"\s*:\s*"([A-Za-z]+)"')
_ID_KEYS = (b'"Uniqueid":"', b'"Linkedid":"', b'"DestLinkedid":"')


def peek_event(payload: bytes) -> str | None:
    """The AMI event name of a raw relay frame, without parsing it (None: not found)."""
    start = payload.find(_EVENT_KEY) + len(_EVENT_KEY)
    if start >= len(_EVENT_KEY):
        end = payload.find(b'"', start)
        try:
            return payload[start:end].decode("ascii") if end > 0 else None  # None: truncated
        except UnicodeDecodeError:
            return None  # no AMI event name: parse it and report it
    match = _PEEK_EVENT.search(payload)
    return match.group(1).decode("ascii") if match is not None else None


def peek_ids(payload: bytes) -> list[str]:
    """The Uniqueid, Linkedid and DestLinkedid values of a raw relay frame, without parsing it.
    A frame with JSON escapes or other spacing is not read: an empty list means "unknown",
    never "none"."""
    if b"\\" in payload:
        return []
    found = []
    for key in _ID_KEYS:
        start = payload.find(key)
        if start >= 0:
            start += len(key)
            found.append(payload[start : payload.find(b'"', start)].decode("utf-8", "replace"))
    return found


def decode_frame(payload: bytes | str, *, max_bytes: int = 256 * 1024) -> Frame | Rejected:
    size = len(payload)
    if size > max_bytes:
        return Rejected("oversize", f"{size} bytes > {max_bytes}")
    repaired = False
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        text = payload if isinstance(payload, str) else _lenient_text(payload)
        try:
            obj = orjson.loads(_repair(text))
        except orjson.JSONDecodeError as exc:
            return Rejected("invalid_json", str(exc)[:120])
        repaired = True
    return _validate(obj, repaired)


def _validate(obj: object, repaired: bool) -> Frame | Rejected:
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
    # Hot path: amiws sends only strings, so the parsed dict is used as it is.
    if all(type(value) is str for value in data.values()):
        return Frame(frame_type, server_id, server_name, data, repaired)
    clean = {key: value for key, value in data.items() if isinstance(value, str)}
    dropped = tuple(key for key in data if key not in clean)
    return Frame(frame_type, server_id, server_name, clean, repaired, dropped)
