"""The PBX directory's rules (functions.core.tenancy): parsing admins' documents, and who may be
rung for a call from a PBX to a number."""

from __future__ import annotations

import pytest

from functions.core.numbers import e164
from functions.core.tenancy import TenantError, TenantIndex, parse_tenant

RELAY = "ws://pbx.acme.example:7099"
ACME = {
    "name": "Acme",
    "pbx": [{"relay": RELAY, "serverId": 1, "authId": "acme", "authPassword": "s3cret"}],
    "numbers": ["070-4514-4801", "+31 50 8009004"],
    "members": ["kim", "lee", "park"],
    "suspended": ["park"],
}


def tenant(tenant_id: str = "acme", **changes):
    return parse_tenant(tenant_id, {**ACME, **changes}, "KR")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"numbers": "070-4514-4801"}, "numbers must be a list of strings"),
        ({"numbers": ["070-4514-4801", 7045144801]}, "numbers must be a list of strings"),
        ({"members": ["kim", 42]}, "members must be a list of strings"),
        ({"members": {"kim": True}}, "members must be a list of strings"),
        ({"suspended": "park"}, "suspended must be a list of strings"),
        ({"active": "no"}, "active must be true or false"),
        ({"name": 5}, "name must be a string"),
        ({"pbx": {"relay": RELAY}}, "pbx must be a list of maps"),
        ({"pbx": ["ws://x:1"]}, "each pbx entry must be a map"),
        ({"pbx": [{"relay": "pbx.acme.example:7099"}]}, "ws:// or wss:// URL"),
        ({"pbx": [{"relay": "http://pbx.acme.example"}]}, "ws:// or wss:// URL"),
        ({"pbx": [{"relay": 7099}]}, "ws:// or wss:// URL"),
        ({"pbx": [{"relay": RELAY, "serverId": "x"}]}, "serverId must be an integer"),
        ({"pbx": [{"relay": RELAY, "serverId": True}]}, "serverId must be an integer"),
        ({"pbx": [{"relay": RELAY, "serverId": 1.5}]}, "serverId must be an integer"),
        ({"pbx": [{"relay": RELAY, "authPassword": 1234}]}, "authPassword must be a string"),
        (
            {"pbx": [{"relay": RELAY, "authPassword": "a", "authSecret": "projects/p/x"}]},
            "both authPassword and authSecret",
        ),
        ({"pbx": [{"relay": RELAY, "authSecret": "my-secret"}]}, "Secret Manager version name"),
        ({"pbx": [{"relay": "ws://host:99999"}]}, "pbx relay"),
    ],
)
def test_wrong_types_refuse_the_document_with_a_reason(changes, problem):
    with pytest.raises(TenantError, match=problem):
        tenant(**changes)


def test_a_good_document_parses():
    acme = tenant()
    [pbx] = acme.pbx
    assert (pbx.endpoint, pbx.server_id) == ("pbx.acme.example:7099", 1)
    assert (pbx.relay.auth_id, pbx.relay.auth_password) == ("acme", "s3cret")
    assert "s3cret" not in repr(acme)  # credentials never in a repr (logs, errors)
    assert acme.numbers == {"+827045144801", "+31508009004"}
    assert acme.members == {"kim", "lee", "park"} and acme.suspended == {"park"}
    assert acme.active is True and acme.bad_numbers == ()
    assert tenant(pbx=[{"relay": RELAY, "serverId": "2"}]).pbx[0].server_id == 2
    assert tenant(pbx=[{"relay": RELAY}]).pbx[0].server_id == 1  # amiws' first server


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("+31 50 8009004", "+31508009004"),
        ("(02) 1234-5678", "+82212345678"),
        ("+82 (0)70 4514 4801", "+827045144801"),
        ("070.4514.4801", "+827045144801"),
        ("07045144801", "+827045144801"),
        ("+82-70-4514-4801", "+827045144801"),
        ("0082 70 4514 4801", "+827045144801"),
        ("070 4514 4801", "+827045144801"),
        ("1010", None),  # an extension
        ("070-4514", None),  # too short
        ("call me", None),
        ("", None),
    ],
)
def test_any_spelling_phonenumbers_parses_is_one_number(typed, expected):
    assert e164(typed, "KR") == expected


def test_numbers_that_do_not_normalize_are_reported_and_never_match():
    acme = tenant(numbers=["070-4514-4801", "1010", "ext. 12"])
    assert acme.bad_numbers == ("1010", "ext. 12")
    assert acme.numbers == {"+827045144801"}
    index = TenantIndex.build([acme])
    assert index.candidates("pbx.acme.example:7099", 1, "1010").users == frozenset()


def test_members_of_the_tenant_that_lists_the_pbx_and_the_number_may_ring():
    index = TenantIndex.build([tenant()])
    found = index.candidates("pbx.acme.example:7099", 1, "+827045144801")
    assert found.users == {"kim", "lee"}  # park is suspended by the admin
    assert found.tenants == ("acme",)
    assert ("park", "suspended_by_admin") in found.skipped
    # the same number from another PBX, or another server behind the same relay: nobody
    assert index.candidates("pbx.other.example:7099", 1, "+827045144801").users == frozenset()
    assert index.candidates("pbx.acme.example:7099", 2, "+827045144801").users == frozenset()
    # a number the tenant does not list: nobody
    assert index.candidates("pbx.acme.example:7099", 1, "+82212345678").users == frozenset()


def test_an_inactive_tenant_rings_nobody():
    index = TenantIndex.build([tenant(active=False)])
    found = index.candidates("pbx.acme.example:7099", 1, "+827045144801")
    assert found.users == frozenset() and found.skipped == (("acme", "tenant_inactive"),)


def test_a_member_of_another_tenant_claiming_this_number_is_not_a_candidate():
    other = parse_tenant(
        "bravo",
        {"pbx": [{"relay": "ws://pbx.bravo.example"}], "numbers": ["070-4514-4801"],
         "members": ["mallory"]},
        "KR",
    )  # fmt: skip
    index = TenantIndex.build([tenant(), other])
    found = index.candidates("pbx.acme.example:7099", 1, "+827045144801")
    assert "mallory" not in found.users and found.tenants == ("acme",)


def test_one_relay_named_differently_by_two_tenants_uses_the_lowest_tenant_id():
    a = tenant("a-corp", pbx=[{"relay": RELAY, "serverId": 1, "authId": "a", "authPassword": "1"}])
    b = tenant("b-corp", pbx=[{"relay": RELAY, "serverId": 2, "authId": "b", "authPassword": "2"}])
    index = TenantIndex.build([b, a])
    assert index.relays()["pbx.acme.example:7099"].relay.auth_id == "a"
    assert index.disagreements() == ["pbx.acme.example:7099"]
    same = tenant(
        "c-corp", pbx=[{"relay": RELAY, "serverId": 3, "authId": "a", "authPassword": "1"}]
    )
    assert TenantIndex.build([a, same]).disagreements() == []  # same settings, other server
