"""Whether a raw relay frame may change a call, decided before parsing it.

Most frames cannot: RTCP reports, NewCallerid, VarSet with no call waiting for its number, any
event of a call nobody follows. `may_matter` says so from the raw bytes, so the connector parses
only the rest (the tracker keeps the arguments current: `CallTracker.wanted`, `.raw_ids`,
`.raw_prefixes`). It may say True for a frame that cannot matter (the frame is then parsed and
`CallTracker.needs` decides); it says False only when parsing could not change anything.

The rules, in order:
1. The event name is the first match of `"Event"\\s*:\\s*"([A-Za-z]+)"` (frames.search_event_name).
   None found (a truncated frame, an unusual name): True, the frame is parsed and reported.
2. Another `"Event"` after it: True (a repeated key: JSON readers keep the last).
3. A `\\u` escape anywhere: True. Only it can spell a letter, digit or dot, so only it can hide
   a key (`"Even\\u0074"`), an id or a context from a raw reader; amiws writes `\\"` in values
   often, and that cannot.
4. A name the tracker does not want now: False.
5. A Newchannel: False only when its one `Context` is a plain string outside the trunk prefixes
   (the seed rule's first test); another `"Context"` after it, null or a number: True.
6. Any other event: True when one of the calls' ids occurs in it (every handler finds its call
   by an id whose value is the call's Linkedid); `ids` None (too many calls to scan): True.

Trunk prefixes and call ids are assumed free of characters JSON may escape other than with
`\\u` (quotes, backslashes, slashes, control characters): Asterisk contexts and ids are.

`may_matter` is the compiled `functions.core._raw_gate` when it is built (`make install` builds it
from _raw_gate.c; the connector image too) and this module's Python otherwise: the same answers
(tests/unit/test_raw_gate.py), at about a third of the cost per frame.
"""

from __future__ import annotations

from collections.abc import Set

from functions.core.frames import search_event_name


def python_may_matter(
    payload: bytes, wanted: Set[bytes], ids: tuple[bytes, ...] | None, prefixes: tuple[bytes, ...]
) -> bool:
    found = search_event_name(payload)
    if found is None:
        return True
    if payload.find(b'"Event"', found.end()) >= 0 or has_spelling_escape(payload):
        return True
    name = found[1]
    if name not in wanted:
        return False
    if name == b"Newchannel":
        return may_start_a_call(payload, prefixes)
    return may_name_a_call(payload, ids)


def has_spelling_escape(payload: bytes) -> bool:
    """A `\\u` escape (an escaped backslash before a `u`, `\\\\u`, counts too: a false alarm
    costs a parse, never an event)."""
    return b"\\u" in payload


def may_start_a_call(payload: bytes, prefixes: tuple[bytes, ...]) -> bool:
    at = payload.find(b'Context":')
    if at <= 0 or payload[at - 1] != 0x22:  # '"': the whole key, not "...Context"
        return True
    end = at + 9
    if payload.find(b'"Context"', end) >= 0:  # repeated: JSON readers keep the last
        return True
    quote = payload.find(b'"', end)
    if quote < 0 or payload[end:quote].strip() != b"":
        return True  # not a string (null, a number)
    return payload.startswith(prefixes, quote + 1)


def may_name_a_call(payload: bytes, ids: tuple[bytes, ...] | None) -> bool:
    if ids is None:
        return True
    return any(raw in payload for raw in ids)


try:
    from functions.core._raw_gate import may_matter as compiled_may_matter
except ImportError:  # not built (a checkout without `make install`): the same rules, slower
    compiled_may_matter = None

COMPILED = compiled_may_matter is not None
may_matter = compiled_may_matter if compiled_may_matter is not None else python_may_matter
