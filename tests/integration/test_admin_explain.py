"""`python -m functions.admin explain` against the Firestore emulator seeded with the demo
company (devtools/demo_data.py): who rings, why every other owner does not, in both TENANCY
modes. Agreement with the real notifier is in test_admin_ring.py (the same call, rung)."""

from __future__ import annotations

import io
import json
from typing import Any

from devtools.demo_data import demo_documents
from functions.admin.__main__ import main
from tests.integration.conftest import PROJECT
from tests.integration.scenario import write

RELAY = "ws://127.0.0.1:7099"
ENV = {"GOOGLE_CLOUD_PROJECT": PROJECT, "RELAY_ALLOWED_NETWORKS": "127.0.0.0/8"}


def explain(*args: str, **env: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = main(["explain", *args, "--json"], {**ENV, **env}, out)
    return code, json.loads(out.getvalue())


def test_directory_mode_rings_members_and_says_why_not_for_every_other_owner(db):
    write(db, demo_documents("127.0.0.1", 7099))
    code, body = explain("070-4514-4801", "--relay", RELAY)
    assert code == 0
    assert body["number"] == "070-4514-4801" and body["normalized"] == "+827045144801"
    assert body["rings"] == [
        {
            "user": "demo-kim",
            "extension": "1010",
            "devices": ["demo-kim_iphone_iOS", "demo-kim_pixel_Android"],
        },
        {"user": "demo-lee", "extension": "1011", "devices": ["demo-lee_galaxy_Android"]},
    ]
    reasons = {n["user"]: n["reason"] for n in body["not_rung"]}
    assert reasons == {
        "demo-park": "suspended_by_admin",
        "demo-jung": "push_disabled",
        "demo-choi": "tenant_on_other_pbx",  # the branch's PBX is server 2
        "demo-mallory": "not_a_member",  # names the relay and claims the number: no
    }
    assert body["skipped_devices"] == [{"device": "demo-kim_web_Web", "reason": "web_dummy_token"}]


def test_directory_mode_other_server_id_and_unknown_number(db):
    write(db, demo_documents("127.0.0.1", 7099))
    code, body = explain("+82 70 4514 4801", "--relay", "127.0.0.1:7099", "--server-id", "2")
    assert code == 0
    assert [r["user"] for r in body["rings"]] == ["demo-choi"]
    assert {n["user"]: n["reason"] for n in body["not_rung"]}["demo-kim"] == "tenant_on_other_pbx"

    code, body = explain("02-555-1234", "--relay", RELAY)
    assert code == 1
    assert body["rings"] == [] and body["notes"] == ["no_tenant_for_pbx_and_number"]

    code, body = explain("1010", "--relay", RELAY)
    assert code == 1
    assert body["normalized"] is None
    assert body["notes"] == ["dialled_number_not_a_phone_number"]


def test_directory_mode_inactive_tenant_and_number_missing_from_tenant(db):
    docs = demo_documents("127.0.0.1", 7099)
    docs["pbx_tenants"]["demo-company"]["active"] = False
    write(db, docs)
    code, body = explain("070-4514-4801", "--relay", RELAY)
    assert code == 1
    reasons = {n["user"]: n["reason"] for n in body["not_rung"]}
    assert reasons["demo-kim"] == "tenant_inactive" and reasons["demo-lee"] == "tenant_inactive"

    docs["pbx_tenants"]["demo-company"].update(active=True, numbers=["02-555-1234"])
    write(db, docs)
    _, body = explain("070-4514-4801", "--relay", RELAY)
    reasons = {n["user"]: n["reason"] for n in body["not_rung"]}
    assert reasons["demo-kim"] == "number_not_in_tenant"


def test_user_documents_mode_follows_relay_access(db):
    docs = demo_documents("127.0.0.1", 7099)
    docs["relay_access"] = {
        "127.0.0.1:7099": {
            "users": ["demo-kim", "demo-lee", "demo-park", "demo-choi", "demo-jung"],
            "refused": ["demo-mallory"],
            "unproven": [],
            "open": False,
        }
    }
    write(db, docs)
    code, body = explain("070-4514-4801", "--relay", RELAY, TENANCY="user_documents")
    assert code == 0
    assert [r["user"] for r in body["rings"]] == ["demo-kim", "demo-lee"]
    reasons = {n["user"]: n["reason"] for n in body["not_rung"]}
    assert reasons == {
        "demo-park": "suspended",
        "demo-choi": "other_pbx",
        "demo-jung": "push_disabled",
        "demo-mallory": "relay_credentials_refused",
    }

    db.collection("relay_access").document("127.0.0.1:7099").delete()
    code, body = explain("070-4514-4801", "--relay", RELAY, TENANCY="user_documents")
    assert code == 1
    assert body["notes"] == ["relay_not_recorded"]
    assert {n["reason"] for n in body["not_rung"]} == {"relay_not_recorded", "other_pbx"}


def test_human_output_lists_both_tables(db):
    write(db, demo_documents("127.0.0.1", 7099))
    out = io.StringIO()
    assert main(["explain", "07045144801", "--relay", RELAY], ENV, out) == 0
    text = out.getvalue()
    assert "normalized +827045144801" in text
    assert "demo-lee_galaxy_Android" in text and "not_a_member" in text


def test_only_owners_of_the_number_are_listed(db):
    """The notifier lists a tenant's suspended members for every call; explain names only
    those who claim the number."""
    docs = demo_documents("127.0.0.1", 7099)
    docs["pbx_tenants"]["demo-company"]["numbers"].append("02-555-1234")
    write(db, docs)
    code, body = explain("02-555-1234", "--relay", RELAY)
    assert code == 1
    assert body["rings"] == [] and body["not_rung"] == [] and body["notes"] == []
