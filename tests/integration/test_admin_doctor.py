"""`python -m functions.admin doctor` against Google's Firestore emulator: one seeded case per
finding, the exit codes (0 nothing stops a phone from ringing, 1 something does, 2 could not
run) and the --json shape; `--live` against the demo relay (devtools/demo_relay.py)."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from devtools.demo_relay import DemoRelay
from functions.admin import firestore_reader
from functions.admin.__main__ import main
from tests.integration.conftest import PROJECT
from tests.integration.scenario import write
from tests.support import ROOT, free_port

RELAY = "ws://127.0.0.1:7099"  # not running: without --live the doctor only resolves it
LOOPBACK = "127.0.0.0/8"
Docs = dict[str, dict[str, dict[str, Any]]]


def healthy(relay: str = RELAY) -> Docs:
    """One tenant whose two members ring: the doctor finds nothing."""

    def token(uid: str, value: str, **extra: Any) -> dict[str, Any]:
        return {
            "userId": uid,
            "fcmToken": value,
            "platform": "android",
            "isActive": True,
            "isApproved": True,
            **extra,
        }

    return {
        "pbx_tenants": {
            "acme": {
                "name": "에이씨엠이",
                "active": True,
                "pbx": [{"relay": relay, "serverId": 1}],
                "numbers": ["070-4514-4801"],
                "members": ["kim", "lee"],
            }
        },
        "users": {
            "kim": {"companyId": "acme", "isActive": True},
            "lee": {"companyId": "acme", "isActive": True},
        },
        "my_extensions": {
            "e-kim": {"userId": "kim", "extension": "1010", "accountCode": "07045144801"},
            "e-lee": {"userId": "lee", "extension": "1011", "accountCode": "+82 70 4514 4801"},
        },
        "fcm_tokens": {
            "kim_a_Android": token("kim", "tok-kim"),
            "lee_a_Android": token("lee", "tok-lee"),
        },
        "user_notification_settings": {"kim": {"pushEnabled": True}},
    }


def env(**extra: str) -> dict[str, str]:
    return {"GOOGLE_CLOUD_PROJECT": PROJECT, "RELAY_ALLOWED_NETWORKS": LOOPBACK, **extra}


def doctor(env_: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = main(["doctor", "--json", *args], env_, out)
    return code, json.loads(out.getvalue())


def found(body: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(p["severity"], p["code"], p["path"]) for p in body["problems"]}


def test_healthy_directory_has_no_problems_and_exits_0(db):
    write(db, healthy())
    code, body = doctor(env())
    assert body == {
        "problems": [],
        "summary": {"errors": 0, "warnings": 0, "tenancy": "directory"},
    }
    assert code == 0


def _two_tenants(d: Docs) -> None:
    d["pbx_tenants"]["beta"] = {
        "pbx": [{"relay": RELAY}],  # serverId defaults to 1: the same PBX
        "numbers": ["+82 (0)70 4514 4801"],  # the same number, spelled otherwise
        "members": ["han"],
    }
    d["users"]["han"] = {"isActive": True}
    d["my_extensions"]["e-han"] = {"userId": "han", "accountCode": "070.4514.4801"}
    d["fcm_tokens"]["han_a_Android"] = {"userId": "han", "fcmToken": "tok-han"}


def _pop(collection: str, doc_id: str) -> Callable[[Docs], None]:
    return lambda d: d[collection].pop(doc_id)


def _set(collection: str, doc_id: str, **fields: Any) -> Callable[[Docs], None]:
    def change(d: Docs) -> None:
        d[collection].setdefault(doc_id, {}).update(fields)

    return change


def _token(doc_id: str, **fields: Any) -> Callable[[Docs], None]:
    base = {"userId": "kim", "fcmToken": "tok-x", "isActive": True, "isApproved": True}
    return lambda d: d["fcm_tokens"].__setitem__(doc_id, {**base, **fields})


# (id, change to the healthy documents, extra env, expected exit code, findings that must be
# there: (severity, code, path))
CASES: list[tuple[str, Callable[[Docs], None], dict[str, str], int, set]] = [
    (
        "one number in two tenants on one PBX",
        _two_tenants,
        {},
        1,
        {
            ("error", "number_in_two_tenants", "pbx_tenants/acme"),
            ("error", "number_in_two_tenants", "pbx_tenants/beta"),
        },
    ),
    (
        "relay address not allowed (loopback without RELAY_ALLOWED_NETWORKS)",
        lambda d: None,
        {"RELAY_ALLOWED_NETWORKS": ""},
        1,
        {("error", "relay_not_allowed", "pbx_tenants/acme")},
    ),
    (
        "relay address not allowed (the metadata server)",
        lambda d: d["pbx_tenants"]["acme"].update(pbx=[{"relay": "ws://169.254.169.254:7099"}]),
        {},
        1,
        {("error", "relay_not_allowed", "pbx_tenants/acme")},
    ),
    (
        "wrong type in a tenant (numbers not a list)",
        _set("pbx_tenants", "acme", numbers="070-4514-4801"),
        {},
        1,
        {("error", "wrong_type", "pbx_tenants/acme")},
    ),
    (
        "wrong type in a tenant (serverId 'x')",
        lambda d: d["pbx_tenants"]["acme"].update(pbx=[{"relay": RELAY, "serverId": "x"}]),
        {},
        1,
        {("error", "wrong_type", "pbx_tenants/acme")},
    ),
    (
        "wrong type in my_extensions (accountCode a number)",
        _set("my_extensions", "e-kim", accountCode=7045144801),
        {},
        1,
        {("error", "wrong_type", "my_extensions/e-kim")},
    ),
    (
        "wrong type in fcm_tokens (fcmToken a number)",
        _set("fcm_tokens", "lee_a_Android", fcmToken=12345),
        {},
        1,
        {
            ("error", "wrong_type", "fcm_tokens/lee_a_Android"),
            ("error", "no_deliverable_device", "users/lee"),
        },
    ),
    (
        "wrong type in users (isActive a string)",
        _set("users", "kim", isActive="nope"),
        {},
        0,
        {("warning", "wrong_type", "users/kim")},
    ),
    (
        "wrong type in user_notification_settings",
        _set("user_notification_settings", "kim", pushEnabled=0),
        {},
        0,
        {("warning", "wrong_type", "user_notification_settings/kim")},
    ),
    (
        "a claimed number that does not normalize (my_extensions)",
        _set("my_extensions", "e-kim", accountCode="12"),
        {},
        1,
        {
            ("error", "number_not_normalized", "my_extensions/e-kim"),
            ("warning", "member_claims_no_number", "users/kim"),
        },
    ),
    (
        "a tenant number that does not normalize",
        _set("pbx_tenants", "acme", numbers=["070-4514-4801", "12-34"]),
        {},
        1,
        {("error", "number_not_normalized", "pbx_tenants/acme")},
    ),
    (
        "a member with no user document",
        lambda d: d["pbx_tenants"]["acme"]["members"].append("ghost"),
        {},
        1,
        {("error", "member_without_user", "pbx_tenants/acme")},
    ),
    (
        "a member with no device",
        _pop("fcm_tokens", "lee_a_Android"),
        {},
        1,
        {("error", "no_deliverable_device", "users/lee")},
    ),
    (
        "a member whose only device is unapproved",
        _set("fcm_tokens", "lee_a_Android", isApproved=False),
        {},
        1,
        {("error", "no_deliverable_device", "users/lee")},
    ),
    (
        "a user who suspended themselves (isActive false)",
        _set("users", "kim", isActive=False),
        {},
        0,
        {("warning", "user_inactive", "users/kim")},
    ),
    (
        "a member suspended by the admin",
        _set("pbx_tenants", "acme", suspended=["kim"]),
        {},
        0,
        {("warning", "member_suspended", "pbx_tenants/acme")},
    ),
    (
        "an inactive tenant",
        _set("pbx_tenants", "acme", active=False),
        {},
        0,
        {("warning", "tenant_inactive", "pbx_tenants/acme")},
    ),
    (
        "pushes turned off",
        _set("user_notification_settings", "kim", pushEnabled=False),
        {},
        0,
        {("warning", "push_disabled", "user_notification_settings/kim")},
    ),
    (
        "a web dummy token",
        _token("kim_w_Web", fcmToken="web_dummy_token_1762257300000"),
        {},
        0,
        {("warning", "dummy_token", "fcm_tokens/kim_w_Web")},
    ),
    (
        "a duplicate token",
        _token("kim_b_Android", fcmToken="tok-kim"),
        {},
        0,
        {("warning", "duplicate_token", "fcm_tokens/kim_b_Android")},
    ),
    (
        "one device registered for two users",
        _token("lee_b_Android", userId="lee", fcmToken="tok-kim"),
        {},
        0,
        {("warning", "duplicate_token", "fcm_tokens/lee_b_Android")},
    ),
    (
        "an owner of the number who is not a member",
        lambda d: d["my_extensions"].update(
            {"e-eve": {"userId": "eve", "accountCode": "070 4514 4801"}}
        ),
        {},
        0,
        {("warning", "claim_by_non_member", "my_extensions/e-eve")},
    ),
]


@pytest.mark.parametrize(
    ("change", "extra_env", "exit_code", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_finding_in_directory_mode(db, change, extra_env, exit_code, expected):
    docs = copy.deepcopy(healthy())
    change(docs)
    write(db, docs)
    code, body = doctor(env(**extra_env))
    assert expected <= found(body), body
    assert code == exit_code
    errors = sum(p["severity"] == "error" for p in body["problems"])
    assert body["summary"] == {
        "errors": errors,
        "warnings": len(body["problems"]) - errors,
        "tenancy": "directory",
    }
    for problem in body["problems"]:
        assert set(problem) == {"path", "severity", "code", "message"}
        assert problem["severity"] in {"error", "warning"} and problem["message"]


def test_relay_refusal_names_the_reason_and_the_address(db):
    write(db, healthy())
    _, body = doctor(env(RELAY_ALLOWED_NETWORKS=""))
    (problem,) = [p for p in body["problems"] if p["code"] == "relay_not_allowed"]
    assert "loopback (127.0.0.1)" in problem["message"]


# user-documents mode


def user_documents(relay_port: int = 7099) -> Docs:
    def user(**extra: Any) -> dict[str, Any]:
        return {"websocketServerUrl": "127.0.0.1", "websocketServerPort": relay_port, **extra}

    docs = healthy()
    del docs["pbx_tenants"]
    docs["users"] = {
        "kim": user(websocketHttpAuthId="ops", websocketHttpAuthPassword="right"),
        "lee": user(websocketHttpAuthId="ops", websocketHttpAuthPassword="right"),
        "han": user(websocketHttpAuthId="ops", websocketHttpAuthPassword="typo"),
    }
    docs["my_extensions"]["e-han"] = {"userId": "han", "accountCode": "07045144801"}
    docs["fcm_tokens"]["han_a_Android"] = {"userId": "han", "fcmToken": "tok-han"}
    docs["relay_access"] = {
        f"127.0.0.1:{relay_port}": {
            "users": ["kim", "lee"],
            "refused": ["han"],
            "unproven": [],
            "open": False,
        }
    }
    return docs


def test_user_documents_mode_disagreeing_relay_settings(db):
    write(db, user_documents())
    code, body = doctor(env(TENANCY="user_documents"))
    assert found(body) == {
        ("warning", "relay_settings_disagree", "users/han"),
        ("error", "relay_credentials_refused", "users/han"),
    }
    (disagree,) = [p for p in body["problems"] if p["code"] == "relay_settings_disagree"]
    assert "password" in disagree["message"] and "typo" not in disagree["message"]
    assert code == 1
    assert body["summary"]["tenancy"] == "user_documents"


def test_user_documents_mode_relay_not_recorded_and_open(db):
    docs = user_documents()
    docs.pop("relay_access")
    write(db, docs)
    code, body = doctor(env(TENANCY="user_documents"))
    assert ("error", "relay_not_recorded", "relay_access/127.0.0.1:7099") in found(body)
    assert code == 1

    write(db, {"relay_access": {"127.0.0.1:7099": {"users": [], "open": True}}})
    code, body = doctor(env(TENANCY="user_documents"))
    assert ("warning", "relay_open", "relay_access/127.0.0.1:7099") in found(body)
    assert not any(p["code"] == "relay_credentials_refused" for p in body["problems"])
    assert code == 0


# --live: the relay's own answer to the upgrade


async def test_live_reports_a_relay_that_refuses_the_credentials(db):
    relay = await DemoRelay(credentials=("ops", "right")).start()
    try:
        docs = healthy(relay.url)
        docs["pbx_tenants"]["acme"]["pbx"][0].update(authId="ops", authPassword="wrong")
        write(db, docs)
        code, body = await asyncio.to_thread(doctor, env(), "--live")
        assert ("error", "relay_credentials_refused", "pbx_tenants/acme") in found(body)
        assert body["live"] == [
            {
                "relay": relay.url,
                "endpoint": f"127.0.0.1:{relay.port}",
                "ok": False,
                "answer": "HTTP 401",
            }
        ]
        assert code == 1
        assert relay.refused == 1  # one upgrade tried, nothing else

        docs["pbx_tenants"]["acme"]["pbx"][0]["authPassword"] = "right"
        write(db, docs)
        code, body = await asyncio.to_thread(doctor, env(), "--live")
        assert body["problems"] == [] and body["live"][0]["ok"] is True
        assert code == 0
        assert relay.received == []  # the doctor never sends a frame to the PBX

        without = await asyncio.to_thread(doctor, env())
        assert "live" not in without[1]
        assert len(relay.handshakes) == 2  # without --live, no upgrade is tried
    finally:
        await relay.stop()


async def test_live_reports_an_unreachable_relay(db):
    url = f"ws://127.0.0.1:{free_port()}"
    write(db, healthy(url))
    code, body = await asyncio.to_thread(doctor, env(), "--live")
    assert ("error", "relay_unreachable", "pbx_tenants/acme") in found(body)
    assert code == 1


async def test_live_in_user_documents_mode_tries_each_users_settings(db):
    relay = await DemoRelay(credentials=("ops", "right")).start()
    try:
        docs = user_documents(relay.port)
        write(db, docs)
        code, body = await asyncio.to_thread(doctor, env(TENANCY="user_documents"), "--live")
        refused = {p["path"] for p in body["problems"] if p["code"] == "relay_credentials_refused"}
        assert refused == {"users/han"}
        assert sorted(r["ok"] for r in body["live"]) == [False, True]
        assert code == 1
    finally:
        await relay.stop()


# exit code 2: could not run


def test_exit_2_without_a_project(emulator):
    out = io.StringIO()
    assert main(["doctor", "--json"], {}, out) == 2
    assert out.getvalue() == ""


def test_exit_2_when_firestore_does_not_answer(emulator, monkeypatch):
    monkeypatch.setattr(firestore_reader, "READ_TIMEOUT", 2.0)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    out = io.StringIO()
    assert main(["doctor", "--json"], env(), out) == 2
    assert out.getvalue() == ""


def test_the_module_runs_as_a_process_with_its_exit_code(db, emulator):
    docs = healthy()
    docs["pbx_tenants"]["acme"]["members"].append("ghost")
    write(db, docs)
    proc = subprocess.run(
        [sys.executable, "-m", "functions.admin", "doctor", "--json"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "FIRESTORE_EMULATOR_HOST": emulator.host,
            **env(),
        },
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    body = json.loads(proc.stdout)
    assert ("error", "member_without_user", "pbx_tenants/acme") in found(body)
    human = subprocess.run(
        [sys.executable, "-m", "functions.admin", "doctor"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "FIRESTORE_EMULATOR_HOST": emulator.host, **env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert human.returncode == 1
    assert "member_without_user" in human.stdout and "some phones will not ring" in human.stdout


async def test_run_doctor_is_what_the_cli_reports(db):
    """The console's entry point (functions.admin.doctor.run_doctor) gives the CLI's findings,
    also from inside an event loop (the console's)."""
    from functions.admin.doctor import run_doctor
    from functions.settings import load_settings

    docs = healthy()
    docs["pbx_tenants"]["acme"]["members"].append("ghost")
    write(db, docs)
    settings = load_settings(env())
    problems = run_doctor(db, settings)
    _, body = await asyncio.to_thread(doctor, env())
    assert [p.as_dict() for p in problems] == body["problems"]
    assert ("error", "member_without_user", "pbx_tenants/acme") in found(body)
