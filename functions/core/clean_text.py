"""Caller names and numbers come from carriers and PBX dialplans: anything can be in them. Before
they reach a push, a notification or history they lose the characters a screen must not get:
C0 and C1 controls, DEL, and the bidi controls that can reorder what the user reads (a caller
name that makes a number read backwards). Clipping keeps whole characters: a base letter with
its combining marks, an emoji with its joiners and modifiers, a Hangul syllable in jamo.
"""

from __future__ import annotations

import re
import unicodedata

# C0 (U+0000-U+001F), DEL (U+007F), C1 (U+0080-U+009F); bidi embeddings, overrides and
# isolates (U+202A-U+202E, U+2066-U+2069), marks (LRM, RLM, ALM) and the BOM/zero-width
# no-break space, which hides text boundaries.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_SPACES = re.compile(r"\s{2,}")
_JOINERS = frozenset("\u200c\u200d")  # ZWNJ, ZWJ
_HANGUL_FOLLOWERS = (0x1160, 0x11FF)  # medial vowels and final consonants of conjoining jamo


def clean(text: str) -> str:
    """Unsafe characters become a space (so `Hong\\x0bGildong` reads "Hong Gildong"), runs of
    spaces collapse, the ends are trimmed. Idempotent."""
    if not text:
        return ""
    if _UNSAFE.search(text) is None and "  " not in text:
        return text.strip()
    return _SPACES.sub(" ", _UNSAFE.sub(" ", text)).strip()


def _continues(char: str) -> bool:
    """Whether `char` belongs to the character before it (so a cut must not fall before it)."""
    if char in _JOINERS or unicodedata.category(char) in ("Mn", "Me", "Mc"):
        return True
    code = ord(char)
    return (
        0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0x1F3FB <= code <= 0x1F3FF  # skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # tag characters (flag sequences)
        or _HANGUL_FOLLOWERS[0] <= code <= _HANGUL_FOLLOWERS[1]
    )


def clip(text: str, limit: int, ellipsis: str = "…") -> str:
    """At most `limit` code points, ellipsis included, never splitting a character."""
    if len(text) <= limit:
        return text
    cut = max(0, limit - len(ellipsis))
    # Back off while the cut would separate a character from what continues it, or leave a
    # joiner dangling at the end.
    while cut > 0 and (_continues(text[cut]) or text[cut - 1] in _JOINERS):
        cut -= 1
    return text[:cut].rstrip() + ellipsis
