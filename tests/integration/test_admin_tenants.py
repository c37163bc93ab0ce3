"""Directory management against the Firestore emulator: `tenants`, `tenant show`, `tenant
apply` (dry-run diff, the doctor's rules refusing a bad file, the write, passwords kept out of
the output) and `tenant import --from-users` (conflicts reported, never merged)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import yaml

from devtools.demo_data import demo_documents
from functions.admin.__main__ import main
from tests.integration.conftest import PROJECT
from tests.integration.scenario import write

ENV = {"GOOGLE_CLOUD_PROJECT": PROJECT, "RELAY_ALLOWED_NETWORKS": "127.0.0.0/8"}
RELAY = "ws://127.0.0.1:7099"


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), ENV, out)
    return code, out.getvalue()


def tenant_doc(db, tenant_id: str) -> dict[str, Any] | None:
    snap = db.collection("pbx_tenants").document(tenant_id).get()
    return snap.to_dict() if snap.exists else None


def file_of(tmp_path: Path, body: dict[str, Any], name: str = "tenant.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return str(path)


def demo_company_file(**changes: Any) -> dict[str, Any]:
    doc = demo_documents("127.0.0.1", 7099)["pbx_tenants"]["demo-company"]
    return {"id": "demo-company", **doc, **changes}


def test_tenants_lists_the_directory(db):
    write(db, demo_documents("127.0.0.1", 7099))
    code, text = cli("tenants", "--json")
    assert code == 0
    rows = {row["id"]: row for row in json.loads(text)["tenants"]}
    assert rows["demo-company"]["members"] == 4 and rows["demo-company"]["suspended"] == 1
    assert rows["demo-branch"]["pbx"] == [f"{RELAY} #2"]
    assert rows["demo-company"]["errors"] == 0


def test_apply_dry_run_shows_the_diff_and_writes_nothing(db, tmp_path):
    write(db, demo_documents("127.0.0.1", 7099))
    before = tenant_doc(db, "demo-company")
    members = ["demo-kim", "demo-lee", "demo-park"]  # demo-jung leaves
    path = file_of(
        tmp_path, demo_company_file(numbers=["070-4514-4801", "02-555-1234"], members=members)
    )
    code, text = cli("tenant", "apply", path, "--dry-run")
    assert code == 0
    assert "+- 02-555-1234" in text and "-- demo-jung" in text
    assert "dry run: nothing written" in text
    assert tenant_doc(db, "demo-company") == before


def test_apply_writes_and_a_shown_file_applies_back_unchanged(db, tmp_path):
    write(db, demo_documents("127.0.0.1", 7099))
    path = file_of(tmp_path, demo_company_file(numbers=["070-4514-4801", "02-555-1234"]))
    code, text = cli("tenant", "apply", path, "--json")
    body = json.loads(text)
    assert code == 0 and body["written"] is True
    assert tenant_doc(db, "demo-company")["numbers"] == ["070-4514-4801", "02-555-1234"]

    code, shown = cli("tenant", "show", "demo-company", "--yaml")
    assert code == 0
    (tmp_path / "shown.yaml").write_text(shown, encoding="utf-8")
    code, text = cli("tenant", "apply", str(tmp_path / "shown.yaml"))
    assert code == 0 and "pbx_tenants/demo-company: unchanged" in text


def test_apply_creates_a_new_tenant_and_shows_its_members_problems(db, tmp_path):
    write(db, demo_documents("127.0.0.1", 7099))
    new = {
        "id": "acme",
        "name": "Acme",
        "pbx": [{"relay": "ws://127.0.0.1:7100", "serverId": 1}],
        "numbers": ["02-555-1234"],
        "members": ["newcomer"],  # no users document yet: shown, not refused
    }
    code, text = cli("tenant", "apply", file_of(tmp_path, new), "--json")
    body = json.loads(text)
    assert code == 0 and body["written"] is True
    (plan,) = body["tenants"]
    assert plan["refused"] == []
    assert {p["code"] for p in plan["problems"]} == {"member_without_user"}
    assert tenant_doc(db, "acme")["members"] == ["newcomer"]


def test_apply_refuses_what_the_doctor_calls_an_error(db, tmp_path):
    write(db, demo_documents("127.0.0.1", 7099))
    before = tenant_doc(db, "demo-company")
    cases = {
        "wrong_type": demo_company_file(numbers="070-4514-4801"),
        "number_not_normalized": demo_company_file(numbers=["070-4514-4801", "12-3"]),
        "relay_not_allowed": demo_company_file(pbx=[{"relay": "ws://10.1.2.3:7099"}]),
    }
    for code_name, body in cases.items():
        code, text = cli("tenant", "apply", file_of(tmp_path, body), "--json")
        result = json.loads(text)
        assert code == 1, code_name
        assert result["written"] is False
        assert [p["code"] for p in result["tenants"][0]["refused"]] == [code_name]
        assert tenant_doc(db, "demo-company") == before

    rival = {"id": "rival", "pbx": [{"relay": RELAY}], "numbers": ["+82 70 4514 4801"]}
    code, text = cli("tenant", "apply", file_of(tmp_path, rival), "--json")
    assert code == 1
    refused = json.loads(text)["tenants"][0]["refused"]
    assert [p["code"] for p in refused] == ["number_in_two_tenants"]
    assert tenant_doc(db, "rival") is None

    code, _ = cli("tenant", "apply", file_of(tmp_path, {"id": "x", "member": ["a"]}))
    assert code == 1  # an unknown field (a typo) is refused before anything is read


def test_passwords_never_shown_and_kept_on_apply(db, tmp_path):
    docs = demo_documents("127.0.0.1", 7099)
    docs["pbx_tenants"]["demo-company"]["pbx"][0].update(authId="ops", authPassword="s3cret")
    write(db, docs)
    code, shown = cli("tenant", "show", "demo-company", "--yaml")
    assert "s3cret" not in shown and "authPassword: <redacted>" in shown
    edited = yaml.safe_load(shown)
    edited["name"] = "데모상사 본사"
    code, text = cli("tenant", "apply", file_of(tmp_path, edited))
    assert code == 0 and "s3cret" not in text
    stored = tenant_doc(db, "demo-company")
    assert stored["name"] == "데모상사 본사"
    assert stored["pbx"][0]["authPassword"] == "s3cret"


def test_import_from_users_reports_two_companies_naming_one_relay(db):
    docs = demo_documents("127.0.0.1", 7099)
    del docs["pbx_tenants"]
    # a third company on a relay of its own: no conflict, written by --apply
    docs["users"]["third-a"] = {
        "companyId": "third-co",
        "companyName": "삼사",
        "websocketServerUrl": "127.0.0.1",
        "websocketServerPort": 7200,
        "websocketHttpAuthId": "ops",
        "websocketHttpAuthPassword": "pw",
    }
    docs["my_extensions"]["ext-third"] = {"userId": "third-a", "accountCode": "(02) 1234-5678"}
    write(db, docs)

    code, text = cli("tenant", "import", "--from-users", "--json")
    body = json.loads(text)
    assert code == 1
    (conflict,) = body["conflicts"]
    assert "127.0.0.1:7099 server 1" in conflict
    assert "demo-company (4 users)" in conflict and "other-company (1 user)" in conflict
    third = body["tenants"]["third-co"]
    assert third["numbers"] == ["+82212345678"]
    assert third["pbx"] == [
        {
            "relay": "ws://127.0.0.1:7200",
            "serverId": 1,
            "authId": "ops",
            "authPassword": "<redacted>",
        }
    ]
    assert body["tenants"]["demo-company"]["members"] == [
        "demo-choi",
        "demo-jung",
        "demo-kim",
        "demo-lee",
        "demo-park",
    ]
    assert body["written"] == []
    assert tenant_doc(db, "third-co") is None  # a proposal only

    code, text = cli("tenant", "import", "--from-users", "--apply", "--json")
    assert code == 1
    assert json.loads(text)["written"] == ["third-co"]
    assert tenant_doc(db, "third-co")["pbx"][0]["authPassword"] == "pw"
    assert tenant_doc(db, "demo-company") is None and tenant_doc(db, "other-company") is None

    code, text = cli("tenant", "import", "--from-users", "--company", "third-co", "--json")
    body = json.loads(text)
    assert code == 0 and body["conflicts"] == [] and body["existing"] == ["third-co"]
