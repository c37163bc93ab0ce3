import pytest

from functions.core.numbers import normalize, same_as_given, same_number


@pytest.mark.parametrize(
    "spelling",
    [
        "010-1234-5678",
        "+82-10-1234-5678",
        "01012345678",
        "+821012345678",
        "010 1234 5678",
        "0082 10 1234 5678",
        "82-10-1234-5678",
    ],
)
def test_korean_mobile_spellings_are_one_number(spelling):
    assert normalize(spelling) == "+821012345678"


def test_company_070_number_from_the_seed():
    assert same_number("07045144801", "070-4514-4801")
    assert same_number("07045144801", "+82 70-4514-4801")
    assert not same_number("07045144801", "07045144802")


def test_foreign_did_from_a_trunk_keeps_its_country():
    assert normalize("+31150010004") == "+31150010004"
    assert not same_number("+31150010004", "0150010004")  # KR national != NL number


def test_short_codes_and_garbage_compare_by_digits_only():
    assert normalize("") == ""
    assert not same_number("", "")
    assert normalize("abc") == ""
    assert same_number("1010", "1010")


def test_same_as_given_is_same_number_or_the_same_digits():
    assert same_as_given("010-2613-2471", "01026132471")  # the same digits
    assert same_as_given("+82 10 2613 2471", "01026132471")  # the same number
    assert same_as_given("+1 202 555 0100", "12025550100")  # as given, without its plus
    assert not same_number("+1 202 555 0100", "12025550100")  # parsed in Korea: another one
    assert not same_as_given("01026132471", "01026132472")
    assert not same_as_given("", "")
