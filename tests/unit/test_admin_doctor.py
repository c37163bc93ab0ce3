"""The doctor's rules on plain documents (no Firestore): relay host names through an injected
resolver, so every address-policy outcome can be shown without DNS."""

from __future__ import annotations

from typing import Any

import pytest

from functions.admin.doctor import Problem, diagnose, exit_code
from functions.admin.documents import Documents
from functions.settings import load_settings


def settings(**env: str):
    return load_settings({"GOOGLE_CLOUD_PROJECT": "p", **env})


def docs(relay: str = "ws://relay.example:7099", **extra: Any) -> Documents:
    base = {
        "pbx_tenants": {
            "acme": {"pbx": [{"relay": relay}], "numbers": ["02-555-1234"], "members": ["kim"]}
        },
        "users": {"kim": {}},
        "my_extensions": {"e": {"userId": "kim", "accountCode": "025551234"}},
        "fcm_tokens": {"kim_a": {"userId": "kim", "fcmToken": "t"}},
    }
    base.update(extra)
    return Documents.of(base)


def resolving_to(*addresses: str):
    def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("relay.example", 7099)
        return list(addresses)

    return resolve


@pytest.mark.parametrize(
    ("addresses", "allowed", "reason"),
    [
        (["8.8.8.8"], "", None),
        (["10.0.0.5"], "", "private"),
        (["10.0.0.5"], "10.0.0.0/8", None),
        (["8.8.8.8", "169.254.169.254"], "", "link_local"),  # any refused address refuses
        (["::ffff:127.0.0.1"], "", "loopback"),
        ([], "", "unresolvable"),
    ],
)
def test_relay_addresses_follow_the_connectors_policy(addresses, allowed, reason):
    found = diagnose(
        docs(), settings(RELAY_ALLOWED_NETWORKS=allowed), resolve=resolving_to(*addresses)
    )
    refused = [p for p in found if p.code == "relay_not_allowed"]
    if reason is None:
        assert refused == []
    else:
        (problem,) = refused
        assert problem.path == "pbx_tenants/acme" and problem.severity == "error"
        assert f"policy: {reason}" in problem.message


def test_a_resolver_failure_is_unresolvable_not_a_crash():
    def fail(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    (problem,) = [p for p in diagnose(docs(), settings(), resolve=fail)]
    assert problem.code == "relay_not_allowed" and "unresolvable" in problem.message


def test_pbx_relays_from_the_environment_are_checked_too():
    found = diagnose(
        Documents(), settings(PBX_RELAYS="ws://127.0.0.1:7099"), resolve=lambda h, p: [h]
    )
    assert [(p.path, p.code) for p in found] == [("PBX_RELAYS", "relay_not_allowed")]


def test_problems_sorted_errors_first_and_exit_code():
    d = docs(
        fcm_tokens={
            "kim_w": {"userId": "kim", "fcmToken": "web_dummy_token_1"},
        }
    )
    found = diagnose(d, settings(), resolve=lambda h, p: ["8.8.8.8"])
    assert [(p.severity, p.code) for p in found] == [
        ("error", "no_deliverable_device"),
        ("warning", "dummy_token"),
    ]
    assert exit_code(found) == 1
    assert exit_code([p for p in found if p.severity == "warning"]) == 0
    assert found[0].as_dict() == {
        "path": "users/kim",
        "severity": "error",
        "code": "no_deliverable_device",
        "message": found[0].message,
    }


def test_user_documents_mode_unproven_users_are_a_warning():
    d = Documents.of(
        {
            "users": {
                "kim": {"websocketServerUrl": "relay.example"},
                "lee": {"websocketServerUrl": "relay.example"},
            },
            "my_extensions": {
                "e1": {"userId": "kim", "accountCode": "025551234"},
                "e2": {"userId": "lee", "accountCode": "025551234"},
            },
            "fcm_tokens": {
                "k": {"userId": "kim", "fcmToken": "tk"},
                "l": {"userId": "lee", "fcmToken": "tl"},
            },
            "relay_access": {
                "relay.example:7099": {"users": ["kim"], "unproven": ["lee"], "open": False}
            },
        }
    )
    found = diagnose(d, settings(TENANCY="user_documents"), resolve=resolving_to("8.8.8.8"))
    assert found == [
        Problem(
            "users/lee",
            "warning",
            "relay_credentials_unproven",
            found[0].message,
        )
    ]


def test_the_same_documents_judged_by_the_mode_in_force():
    """A tenant with wrong types matters only in directory mode; users' broken relay fields
    only in user-documents mode."""
    d = docs(users={"kim": {"websocketServerPort": "x", "websocketServerUrl": "relay.example"}})
    d = d.with_tenant("bad", {"numbers": "x"})
    directory = {p.code for p in diagnose(d, settings(), resolve=lambda h, p: ["8.8.8.8"])}
    users = {
        (p.path, p.code)
        for p in diagnose(d, settings(TENANCY="user_documents"), resolve=lambda h, p: ["8.8.8.8"])
    }
    assert "wrong_type" in directory
    assert ("users/kim", "wrong_type") in users
    assert ("pbx_tenants/bad", "wrong_type") not in users
