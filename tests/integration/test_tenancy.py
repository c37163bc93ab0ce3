"""Tenancy you can trust, on the real parts: the backend-owned PBX directory (`pbx_tenants`) in
Google's Firestore emulator, the notifier in directory mode under functions-framework, and the
connector in directory mode against relays that check HTTP Basic auth on the upgrade.

Each test is one of the findings made against the user-documents design: an outsider naming a
company's relay and number, a colleague's mistyped relay password, a suspension a user undoes,
an inactive tenant, numbers a person spelled their own way, a directory changed at run time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest

from devtools.demo_data import seed_frame
from devtools.demo_relay import DemoRelay
from functions.connector.adapters.event_publishers import PushPublisher
from functions.connector.app import Connector
from functions.core.call_event import CallEvent
from functions.settings import load_settings
from tests.integration.conftest import PROJECT
from tests.integration.scenario import device, user, write
from tests.integration.test_lifecycle_notifier import deliver
from tests.integration.test_lifecycle_notifier import ringing as lifecycle_ringing
from tests.integration.test_relay_addresses import healthz
from tests.support import LOOPBACK_RELAYS, NotifierProcess, eventually

CREDENTIALS = ("acme-relay", "correct horse")
TENANT_CACHE_SECONDS = 0.5


@pytest.fixture(scope="module")
def directory_notifier(emulator, fcm, tmp_path_factory) -> Iterator[NotifierProcess]:
    """The notifier as deployed by default (TENANCY unset = directory), with a directory copy
    at most TENANT_CACHE_SECONDS old (15 s in production) so that changes show quickly."""
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "FIRESTORE_EMULATOR_HOST": emulator.host,
        "FCM_ENDPOINT": fcm.url,
        "RING_WINDOW_SECONDS": "60",
        "RECIPIENT_CACHE_SECONDS": "0",
        "TENANT_CACHE_SECONDS": str(TENANT_CACHE_SECONDS),
        "TENANCY": "",
    }
    log = tmp_path_factory.mktemp("directory-notifier") / "notifier.log"
    proc = NotifierProcess(env, log).start()
    yield proc
    proc.stop()


def acme(relay_port: int, **changes: Any) -> dict[str, Any]:
    return {
        "name": "Acme",
        "active": True,
        "pbx": [
            {
                "relay": f"ws://127.0.0.1:{relay_port}",
                "serverId": 1,
                "authId": CREDENTIALS[0],
                "authPassword": CREDENTIALS[1],
            }
        ],
        "numbers": ["070-4514-4801"],
        "members": ["kim", "lee"],
        **changes,
    }


def extension(uid: str, code: str = "070-4514-4801") -> dict[str, Any]:
    return {"userId": uid, "extension": "1010", "accountCode": code}


def settle() -> None:
    """Past the age of the notifier's directory copy: the next call reads the directory."""
    time.sleep(TENANT_CACHE_SECONDS + 0.1)


def company_a(db, relay_port: int, **tenant: Any) -> None:
    """Acme's directory entry and its two members' app documents (then settle())."""
    write(
        db,
        {
            "pbx_tenants": {"acme": acme(relay_port, **tenant)},
            "users": {"kim": user(relay_port), "lee": user(relay_port)},
            "my_extensions": {"e-kim": extension("kim"), "e-lee": extension("lee")},
            "fcm_tokens": {
                "kim_a_Android": device("kim", "tok-kim"),
                "lee_a_Android": device("lee", "tok-lee"),
            },
        },
    )
    settle()


def ringing(linkedid: str, relay_port: int, dialled: str = "07045144801") -> CallEvent:
    """The lifecycle tests' ringing call, from Acme's relay, to `dialled`."""
    return replace(
        lifecycle_ringing(linkedid), relay=f"127.0.0.1:{relay_port}", dialled_number=dialled
    )


def rung(fcm, linkedid: str) -> set[str]:
    return {
        m["token"]
        for m in fcm.sent_messages()
        if m["data"].get("linkedid") == linkedid and m["data"]["type"] == "incoming_call"
    }


# -- the notifier: who rings -------------------------------------------------------------------


def test_an_outsider_naming_the_relay_and_claiming_the_number_gets_nothing(
    db, fcm, directory_notifier
):
    company_a(db, 7201)
    # Mallory (company B) names Acme's relay in her own users document and claims its number.
    write(
        db,
        {
            "users": {"mallory": user(7201, companyId="acme")},
            "my_extensions": {"e-mallory": extension("mallory", "+82-70-4514-4801")},
            "fcm_tokens": {"mallory_a_Android": device("mallory", "tok-mallory")},
        },
    )
    deliver(directory_notifier, ringing("t.outsider", 7201))
    assert rung(fcm, "t.outsider") == {"tok-kim", "tok-lee"}


def test_a_member_of_another_tenant_claiming_this_number_is_not_rung(db, fcm, directory_notifier):
    company_a(db, 7202)
    write(
        db,
        {
            "pbx_tenants": {
                "bravo": {
                    "pbx": [{"relay": "ws://127.0.0.1:7299"}],
                    "numbers": ["02-555-1234"],
                    "members": ["mallory"],
                }
            },
            "users": {"mallory": user(7202)},
            "my_extensions": {"e-mallory": extension("mallory")},
            "fcm_tokens": {"mallory_a_Android": device("mallory", "tok-mallory")},
        },
    )
    settle()
    deliver(directory_notifier, ringing("t.other-tenant", 7202))
    assert rung(fcm, "t.other-tenant") == {"tok-kim", "tok-lee"}


def test_an_admin_suspension_holds_whatever_the_users_own_document_says(
    db, fcm, directory_notifier
):
    company_a(db, 7203, suspended=["lee"])
    db.collection("users").document("lee").update({"isActive": True})  # lee "undoes" it
    line = deliver(directory_notifier, ringing("t.suspended", 7203))
    assert rung(fcm, "t.suspended") == {"tok-kim"}
    assert line["skipped"].get("suspended_by_admin") == 1


def test_an_inactive_tenant_rings_nobody(db, fcm, directory_notifier):
    company_a(db, 7204, active=False)
    line = deliver(directory_notifier, ringing("t.inactive", 7204))
    assert rung(fcm, "t.inactive") == set()
    assert line["skipped"].get("tenant_inactive") == 1


def test_the_users_own_isactive_false_still_silences_them(db, fcm, directory_notifier):
    company_a(db, 7205)
    db.collection("users").document("lee").update({"isActive": False})
    deliver(directory_notifier, ringing("t.self-off", 7205))
    assert rung(fcm, "t.self-off") == {"tok-kim"}


@pytest.mark.parametrize(
    ("tenant_number", "account_code", "dialled"),
    [
        ("+31 50 8009004", "+31508009004", "+31508009004"),
        ("+31 50 8009004", "0031 50 800 9004", "0031508009004"),
        ("(02) 1234-5678", "02-1234-5678", "0212345678"),
        ("+82 (0)70 4514 4801", "070.4514.4801", "07045144801"),
        ("070.4514.4801", "+82 70-4514-4801", "+827045144801"),
        ("07045144801", "(070) 4514 4801", "0704514480 1".replace(" ", "")),
    ],
)
def test_numbers_match_in_any_spelling(
    db, fcm, directory_notifier, tenant_number, account_code, dialled
):
    company_a(db, 7206, numbers=[tenant_number])
    write(db, {"my_extensions": {"e-kim": extension("kim", account_code)}})
    db.collection("my_extensions").document("e-lee").delete()
    linkedid = f"t.spell.{abs(hash((tenant_number, account_code, dialled)))}"
    deliver(directory_notifier, ringing(linkedid, 7206, dialled))
    assert rung(fcm, linkedid) == {"tok-kim"}


def test_a_number_that_does_not_normalize_never_matches(db, fcm, directory_notifier):
    company_a(db, 7207, numbers=["1010", "070-4514-4801"])
    write(db, {"my_extensions": {"e-kim": extension("kim", "1010")}})
    db.collection("my_extensions").document("e-lee").delete()
    deliver(directory_notifier, ringing("t.short", 7207, "1010"))
    assert rung(fcm, "t.short") == set()


def test_a_bad_tenant_document_is_logged_once_and_the_others_ring(db, fcm, directory_notifier):
    company_a(db, 7208)
    write(
        db,
        {
            "pbx_tenants": {
                "broken": {
                    "pbx": [{"relay": "pbx.example:7099", "serverId": "x"}],
                    "numbers": "070-4514-4801",
                    "members": [1, 2],
                }
            }
        },
    )
    settle()
    deliver(directory_notifier, ringing("t.bad-doc.1", 7208))
    settle()  # the directory is read again: the bad document is not logged again
    deliver(directory_notifier, ringing("t.bad-doc.2", 7208))
    assert rung(fcm, "t.bad-doc.1") == rung(fcm, "t.bad-doc.2") == {"tok-kim", "tok-lee"}
    skipped = [
        line
        for line in directory_notifier.log_lines()
        if "pbx_tenants document skipped" in line and "pbx_tenants/broken" in line
    ]
    assert len(skipped) == 1, skipped


def test_directory_changes_apply_to_calls_within_the_copys_age(db, fcm, directory_notifier):
    company_a(db, 7209)
    deliver(directory_notifier, ringing("t.change.0", 7209))
    assert rung(fcm, "t.change.0") == {"tok-kim", "tok-lee"}
    tenants = db.collection("pbx_tenants")
    checks: list[tuple[str, dict[str, Any], set[str]]] = [
        ("removed-member", {"members": ["kim"]}, {"tok-kim"}),
        ("suspended", {"members": ["kim", "lee"], "suspended": ["kim"]}, {"tok-lee"}),
        ("tenant-off", {"suspended": [], "active": False}, set()),
        ("tenant-on", {"active": True}, {"tok-kim", "tok-lee"}),
        ("number-removed", {"numbers": ["02-555-1234"]}, set()),
    ]
    for step, change, expected in checks:
        tenants.document("acme").update(change)
        changed = time.monotonic()
        n = 0

        def rings_as_expected(step: str = step, expected: set[str] = expected) -> bool:
            nonlocal n
            n += 1
            linkedid = f"t.change.{step}.{n}"
            deliver(directory_notifier, ringing(linkedid, 7209))
            return rung(fcm, linkedid) == expected

        eventually(rings_as_expected, 5, 0.2)
        assert time.monotonic() - changed < TENANT_CACHE_SECONDS + 2.0, step
    tenants.document("acme").delete()  # a tenant removed: nobody rings
    eventually(
        lambda: (
            not deliver(directory_notifier, ringing(f"t.gone.{time.time()}", 7209))["recipients"]
        ),
        5,
        0.2,
    )


# -- the connector: which relays, with whose credentials -----------------------------------------


@contextlib.asynccontextmanager
async def running_connector(db, notifier, **env: str) -> AsyncIterator[Connector]:
    """A connector reading Firestore `db`, pushing straight to `notifier`, loopback relays
    allowed; `env` adds settings (TENANCY unset = directory)."""
    settings = load_settings(
        {
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "CALL_EVENTS_PUSH_URL": notifier.url,
            "PORT": "0",
            **LOOPBACK_RELAYS,
            **env,
        }
    )
    conn = Connector(settings, PushPublisher(notifier.url, PROJECT, settings.topic_id), db)
    stop = asyncio.Event()
    task = asyncio.create_task(conn.run(stop, host="127.0.0.1"))
    try:
        yield conn
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def directory_connector(db, notifier) -> contextlib.AbstractAsyncContextManager[Connector]:
    return running_connector(db, notifier)  # TENANCY unset: the default, directory mode


@pytest.fixture
async def guarded_relay() -> AsyncIterator[DemoRelay]:
    relay = await DemoRelay(credentials=CREDENTIALS).start()
    yield relay
    await relay.stop()


async def ring_through(relay: DemoRelay, fcm, linkedid: str) -> set[str]:
    await relay.broadcast(orjson.dumps(seed_frame(linkedid, str(time.time()))))
    await asyncio.to_thread(
        eventually, lambda: len(rung(fcm, linkedid)) >= 2 or rung(fcm, linkedid), 10
    )
    await asyncio.sleep(0.3)
    return rung(fcm, linkedid)


@pytest.mark.parametrize("outsider", ["wrong password", "no credentials", "right credentials"])
async def test_users_relay_settings_cannot_cut_the_company_off_or_get_its_calls(
    db, fcm, directory_notifier, guarded_relay, outsider
):
    """A colleague's mistyped password, an outsider naming the relay with or without its
    credentials: users' relay fields are not what the connector uses. The directory's are."""
    relay = guarded_relay
    company_a(db, relay.port)
    creds = {
        "wrong password": {"websocketHttpAuthId": CREDENTIALS[0], "websocketHttpAuthPassword": "x"},
        "no credentials": {},
        "right credentials": {
            "websocketHttpAuthId": CREDENTIALS[0],
            "websocketHttpAuthPassword": CREDENTIALS[1],
        },
    }[outsider]
    write(
        db,
        {
            # lee (a colleague) and mallory (an outsider) both name the relay their own way
            "users": {"lee": user(relay.port, **creds), "mallory": user(relay.port, **creds)},
            "my_extensions": {"e-mallory": extension("mallory")},
            "fcm_tokens": {"mallory_a_Android": device("mallory", "tok-mallory")},
        },
    )
    async with directory_connector(db, directory_notifier):
        await relay.wait_for_clients(1, timeout=15)
        assert await ring_through(relay, fcm, f"t.relay.{outsider}") == {"tok-kim", "tok-lee"}
    assert relay.refused == 0  # the connector never tried anyone's credentials but the directory's


async def test_a_tenant_added_changed_and_removed_at_run_time_is_followed(
    db, fcm, directory_notifier
):
    first = await DemoRelay(credentials=CREDENTIALS).start()
    second = await DemoRelay(credentials=("other-id", "other-pw")).start()
    try:
        async with directory_connector(db, directory_notifier) as conn:
            await asyncio.sleep(0.5)
            assert conn.relays == {}  # no tenant yet: no relay
            company_a(db, first.port)  # added
            await first.wait_for_clients(1, timeout=30)
            assert await ring_through(first, fcm, "t.run.added") == {"tok-kim", "tok-lee"}

            # changed: the PBX moves to another relay with other credentials
            moved = acme(second.port)
            moved["pbx"][0].update(authId="other-id", authPassword="other-pw")
            db.collection("pbx_tenants").document("acme").set(moved)
            await second.wait_for_clients(1, timeout=30)
            await asyncio.to_thread(eventually, lambda: not first.clients, 30)
            settle()  # the notifier's copy of the directory knows the new PBX too
            assert await ring_through(second, fcm, "t.run.changed") == {"tok-kim", "tok-lee"}
            assert second.refused == 0

            db.collection("pbx_tenants").document("acme").delete()  # removed
            await asyncio.to_thread(eventually, lambda: not second.clients, 30)
            await asyncio.to_thread(eventually, lambda: conn.relays == {}, 5)
    finally:
        await first.stop()
        await second.stop()


async def test_a_bad_tenant_is_skipped_and_the_other_relays_connect(db, directory_notifier, caplog):
    relay = await DemoRelay(credentials=CREDENTIALS).start()
    try:
        company_a(db, relay.port)
        db.collection("pbx_tenants").document("broken").set(
            {"pbx": [{"relay": "127.0.0.1:1", "serverId": "x"}], "members": "kim"}
        )
        async with directory_connector(db, directory_notifier):
            await relay.wait_for_clients(1, timeout=15)
        messages = [r for r in caplog.records if r.getMessage() == "pbx_tenants document skipped"]
        assert len(messages) == 1 and messages[0].fields["path"] == "pbx_tenants/broken"
    finally:
        await relay.stop()


async def test_directory_credentials_never_reach_logs_healthz_or_relay_status(
    db, fcm, directory_notifier, guarded_relay, caplog
):
    relay = guarded_relay
    company_a(db, relay.port)
    caplog.set_level(logging.DEBUG)
    async with directory_connector(db, directory_notifier) as conn:
        await relay.wait_for_clients(1, timeout=15)
        assert await ring_through(relay, fcm, "t.secret") == {"tok-kim", "tok-lee"}
        text, report = await healthz(conn.health_port)
        assert report["relays_connected"] == 1
        statuses = await asyncio.to_thread(
            eventually, lambda: [d.to_dict() for d in db.collection("relay_status").stream()], 10
        )
    assert relay.handshakes[-1].get("Authorization", "").startswith("Basic ")  # they were used
    password = CREDENTIALS[1]
    assert password not in text
    assert password not in json.dumps(statuses, default=str)
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert password not in logged
    assert not any(password in line for line in directory_notifier.log_lines())
