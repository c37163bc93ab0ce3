import pytest

from functions.core.numbers import MAX_QUERY_VARIANTS, normalize, same_number, spellings


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


@pytest.mark.parametrize("number", ["07045144801", "010-1234-5678", "+82-10-1234-5678", "1010"])
def test_spellings_cover_what_admins_type_and_fit_one_in_query(number):
    variants = spellings(number)
    assert variants[0] == number
    assert len(variants) == len(set(variants)) <= MAX_QUERY_VARIANTS
    assert all(normalize(v) == normalize(number) for v in variants)


def test_spellings_of_the_seed_number_include_the_usual_formats():
    variants = set(spellings("07045144801"))
    assert {
        "07045144801",
        "070-4514-4801",
        "+827045144801",
        "+82-70-4514-4801",
        "+82 70-4514-4801",
    } <= variants
