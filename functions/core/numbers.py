"""Phone-number normalization with `phonenumbers`: one canonical form per number, whatever the
spelling a person typed (numbers are always compared normalized, never as spellings).

"010-1234-5678", "+82-10-1234-5678" and "01012345678" are the same number: all normalize to
E.164 "+821012345678". Short internal numbers ("1010") that are not phone numbers normalize to
their digits.
"""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneNumberFormat


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


@lru_cache(maxsize=4096)
def _parse(number: str, region: str) -> phonenumbers.PhoneNumber | None:
    text = number.strip()
    if text.startswith("00"):  # international dialling prefix used by some trunks
        text = "+" + text[2:]
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    # Short internal numbers ("1010") are "possible" in some regions: demand a valid number, or
    # a possible one long enough to be a phone number (ranges newer than the metadata).
    if phonenumbers.is_valid_number(parsed):
        return parsed
    long_enough = len(str(parsed.national_number)) >= 8
    return parsed if long_enough and phonenumbers.is_possible_number(parsed) else None


def normalize(number: str, region: str = "KR") -> str:
    """E.164 when it is a possible phone number, else its digits (extensions, short codes)."""
    parsed = _parse(number, region)
    if parsed is None:
        return _digits(number)
    return phonenumbers.format_number(parsed, PhoneNumberFormat.E164)


def e164(number: str, region: str = "KR") -> str | None:
    """The E.164 form of a phone number in any spelling phonenumbers parses ("+31 50 8009004",
    "(02) 1234-5678", "+82 (0)70 4514 4801", "070.4514.4801"); None when it is not one (an
    extension, a typo), so that it can never match anything by accident."""
    if not isinstance(number, str):
        return None
    parsed = _parse(number, region)
    return None if parsed is None else phonenumbers.format_number(parsed, PhoneNumberFormat.E164)


def same_number(a: str, b: str, region: str = "KR") -> bool:
    na, nb = normalize(a, region), normalize(b, region)
    return bool(na) and na == nb


def same_as_given(a: str, b: str, region: str = "KR") -> bool:
    """`same_number`, or the same digits however they are spelled: for a number the app copied
    from what the PBX sent ("12025550100" is "+1 202 555 0100" written without its plus, though
    parsed in Korea it would be another number)."""
    digits_a = _digits(a)
    return (bool(digits_a) and digits_a == _digits(b)) or same_number(a, b, region)
