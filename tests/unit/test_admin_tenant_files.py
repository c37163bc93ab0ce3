"""Tenant files (YAML) and the import proposal, on plain documents."""

from __future__ import annotations

import pytest

from functions.admin.documents import Documents
from functions.admin.tenant_files import (
    REDACTED,
    TenantFileError,
    load_tenants,
    plan_apply,
    propose_from_users,
    restore_passwords,
    to_yaml,
)
from functions.settings import load_settings

SETTINGS = load_settings({"GOOGLE_CLOUD_PROJECT": "p", "RELAY_ALLOWED_NETWORKS": "127.0.0.0/8"})


def test_one_tenant_or_a_list():
    assert load_tenants("id: a\nname: A\n") == [("a", {"name": "A"})]
    many = load_tenants("tenants:\n  - id: a\n  - id: b\n    active: false\n")
    assert many == [("a", {}), ("b", {"active": False})]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: no id\n", "needs an `id`"),
        ("id: a/b\n", "needs an `id`"),
        ("id: a\nmember: [x]\n", r"unknown field\(s\) member"),
        ("[1, 2", "not YAML"),
        ("tenants: []\n", "one tenant"),
    ],
)
def test_bad_files_are_refused(text, message):
    with pytest.raises(TenantFileError, match=message):
        load_tenants(text)


def test_show_redacts_and_apply_restores_the_stored_password():
    stored = {"pbx": [{"relay": "ws://r:7099", "serverId": 1, "authPassword": "s3cret"}]}
    text = to_yaml("a", stored)
    assert "s3cret" not in text and REDACTED in text
    ((_, doc),) = load_tenants(text)
    assert restore_passwords(doc, stored)["pbx"][0]["authPassword"] == "s3cret"
    with pytest.raises(TenantFileError, match="none is stored"):
        restore_passwords(doc, None)


def test_plan_apply_diff_is_empty_when_nothing_changes():
    doc = {"pbx": [{"relay": "ws://127.0.0.1:7099"}], "numbers": ["02-555-1234"]}
    documents = Documents.of({"pbx_tenants": {"a": doc}})
    plan = plan_apply(documents, SETTINGS, "a", dict(doc), resolve=lambda h, p: [h])
    assert plan.unchanged and plan.refused == []
    changed = plan_apply(
        documents, SETTINGS, "a", {**doc, "active": False}, resolve=lambda h, p: [h]
    )
    assert "+active: false" in changed.diff


def test_import_takes_the_settings_most_users_share_and_flags_a_shared_pbx():
    def user(company: str, password: str, server: int = 1) -> dict:
        return {
            "companyId": company,
            "websocketServerUrl": "relay.example",
            "websocketHttpAuthId": "ops",
            "websocketHttpAuthPassword": password,
            "amiServerId": server,
        }

    documents = Documents.of(
        {
            "users": {
                "a1": user("a", "right"),
                "a2": user("a", "right"),
                "a3": user("a", "typo"),
                "b1": user("b", "other", server=2),
                "c1": user("c", "x"),
                "nobody": {},
            },
            "my_extensions": {"e": {"userId": "a1", "accountCode": "02-555-1234"}},
        }
    )
    proposal = propose_from_users(documents, SETTINGS)
    assert proposal.tenants["a"]["pbx"] == [
        {
            "relay": "ws://relay.example:7099",
            "serverId": 1,
            "authId": "ops",
            "authPassword": "right",
        }
    ]
    assert proposal.tenants["a"]["numbers"] == ["+8225551234"]
    assert proposal.tenants["b"]["pbx"][0]["serverId"] == 2  # another PBX: no conflict with a
    (conflict,) = proposal.conflicts
    assert "server 1" in conflict and "a (3 users)" in conflict and "c (1 user)" in conflict
    assert proposal.conflicted == {"a", "c"}
    assert any("a3" in note for note in proposal.notes)
    assert any("users/nobody" in note for note in proposal.notes)
    only_b = propose_from_users(documents, SETTINGS, "b")
    assert list(only_b.tenants) == ["b"] and only_b.conflicts == []


def test_the_order_firestore_gives_map_keys_in_is_not_a_change():
    a = {"pbx": [{"relay": "ws://r:7099", "serverId": 1}], "name": "A", "numbers": []}
    b = {"numbers": [], "name": "A", "pbx": [{"serverId": 1, "relay": "ws://r:7099"}]}
    assert to_yaml("a", a) == to_yaml("a", b)
