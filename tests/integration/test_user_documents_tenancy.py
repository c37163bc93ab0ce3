"""User-documents mode (TENANCY=user_documents) on the real parts: the connector following users'
own relay settings against relays that check HTTP Basic auth on the upgrade, Google's Firestore
emulator, the notifier (user-documents mode) under functions-framework.

The relay is connected with the settings it accepts, never those of whoever sorts first; a user
is rung from it only when their own settings were accepted (relay_access), unless the relay is
open (it accepts anyone: no proof, everyone naming it is rung as before)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest

from devtools.demo_data import seed_frame
from devtools.demo_relay import DemoRelay
from functions.adapters.relay_access import RELAY_ACCESS
from functions.connector.app import Connector
from tests.integration.scenario import company, device, relay_access, user, write
from tests.integration.test_lifecycle_notifier import deliver
from tests.integration.test_lifecycle_notifier import ringing as lifecycle_ringing
from tests.integration.test_tenancy import extension, ringing, rung, running_connector
from tests.support import USER_DOCUMENTS, eventually

AUTH_ID, PASSWORD = "acme-relay", "correct horse"
WRONG = "correct h0rse"
SECRETS = (PASSWORD, WRONG, "made-up")  # none may appear in logs, /healthz or Firestore


def creds(password: str = PASSWORD, auth_id: str = AUTH_ID) -> dict[str, Any]:
    return {"websocketHttpAuthId": auth_id, "websocketHttpAuthPassword": password}


def people(db, relay_port: int, named: dict[str, dict[str, Any]]) -> None:
    """Users naming the relay (each with their own relay settings), each claiming the company
    number, each with one phone `tok-<uid>`."""
    write(
        db,
        {
            "users": {uid: user(relay_port, **extra) for uid, extra in named.items()},
            "my_extensions": {f"e-{uid}": extension(uid) for uid in named},
            "fcm_tokens": {f"{uid}_a_Android": device(uid, f"tok-{uid}") for uid in named},
        },
    )


def user_documents_connector(db, notifier) -> contextlib.AbstractAsyncContextManager[Connector]:
    return running_connector(db, notifier, **USER_DOCUMENTS)


async def access_doc(db, relay: DemoRelay, check) -> dict[str, Any]:
    """relay_access of the relay once `check(doc)` holds (the probes are done)."""
    ref = db.collection(RELAY_ACCESS).document(f"127.0.0.1:{relay.port}")

    def ready() -> dict[str, Any] | None:
        doc = ref.get().to_dict()
        return doc if doc is not None and check(doc) else None

    return await asyncio.to_thread(eventually, ready, 15, 0.1)


async def ring_through(relay: DemoRelay, fcm, linkedid: str, expected: set[str]) -> set[str]:
    """A call through the relay, the connector and the notifier; who got it."""
    await relay.broadcast(orjson.dumps(seed_frame(linkedid, str(time.time()))))
    await asyncio.to_thread(eventually, lambda: rung(fcm, linkedid) >= expected or None, 10)
    await asyncio.sleep(0.5)  # anyone else who would be rung is rung by now
    return rung(fcm, linkedid)


async def health(conn: Connector) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{conn.health_port}/healthz", timeout=2)
    return response.json()


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def connected(conn: Connector, relay: DemoRelay) -> bool:
    runtime = conn.relays.get(f"127.0.0.1:{relay.port}")
    return runtime is not None and runtime.client.status.state == "connected"


async def test_a_colleagues_mistyped_password_cuts_nobody_off_and_rings_only_them_not(
    db, fcm, notifier, caplog
):
    """(a) lee's wrong password sorts first by the old rule (lowest user id); the relay is still
    connected with kim's, a call rings kim and not lee, and lee is reported refused."""
    caplog.set_level(logging.INFO)
    relay = await DemoRelay(credentials=(AUTH_ID, PASSWORD)).start()
    try:
        people(db, relay.port, {"kim": creds(), "aaa-lee": creds(WRONG)})
        async with user_documents_connector(db, notifier) as conn:
            await asyncio.to_thread(eventually, lambda: connected(conn, relay), 10)
            client = conn.relays[f"127.0.0.1:{relay.port}"].client
            assert client.spec.auth_password == PASSWORD  # kim's settings are in use
            assert relay.refused >= 1  # lee's were tried first, and refused

            assert await ring_through(relay, fcm, "u.mistyped", {"tok-kim"}) == {"tok-kim"}
            doc = await access_doc(db, relay, lambda d: d["users"] and d["refused"])
            assert doc["users"] == ["kim"] and doc["refused"] == ["aaa-lee"]
            assert doc["open"] is False
            line = await asyncio.to_thread(
                deliver, notifier, ringing("u.mistyped.direct", relay.port)
            )
            assert line["skipped"].get("relay_credentials_refused") == 1

            body = await health(conn)
            (entry,) = body["relays"]
            assert entry["refused_users"] == 1 and entry["accepted_users"] == 1
            snapshot = db.collection(RELAY_ACCESS).document(f"127.0.0.1:{relay.port}").get()
            assert_no_secrets(orjson.dumps(body).decode(), repr(snapshot.to_dict()))
        warnings = [
            r
            for r in caplog.records
            if r.levelno == logging.WARNING and r.getMessage().startswith("relay refused users")
        ]
        assert len(warnings) == 1  # one line per change
        assert warnings[0].fields["refused_users"] == ["aaa-lee"]
        assert_no_secrets(*(repr(r.__dict__) for r in caplog.records))
    finally:
        await relay.stop()


async def test_an_outsider_naming_the_relay_without_credentials_is_not_rung(db, fcm, notifier):
    """(b) mallory names the company's relay without credentials and claims its number: the
    company still rings, she does not."""
    relay = await DemoRelay(credentials=(AUTH_ID, PASSWORD)).start()
    try:
        people(db, relay.port, {"kim": creds(), "lee": creds(), "aaa-mallory": {}})
        async with user_documents_connector(db, notifier) as conn:
            await asyncio.to_thread(eventually, lambda: connected(conn, relay), 10)
            got = await ring_through(relay, fcm, "u.outsider", {"tok-kim", "tok-lee"})
            assert got == {"tok-kim", "tok-lee"}
            doc = await access_doc(db, relay, lambda d: d["refused"])
            assert doc["users"] == ["kim", "lee"] and doc["refused"] == ["aaa-mallory"]
            assert doc["open"] is False
    finally:
        await relay.stop()


async def test_an_outsider_with_the_relays_right_credentials_is_rung(db, fcm, notifier):
    """(c) The documented weakness of this mode: the credentials are the proof. mallory (another
    company) knows them and is rung; lee, who mistyped them, is not."""
    relay = await DemoRelay(credentials=(AUTH_ID, PASSWORD)).start()
    try:
        people(db, relay.port, {"kim": creds(), "aaa-lee": creds(WRONG), "mallory": creds()})
        async with user_documents_connector(db, notifier) as conn:
            await asyncio.to_thread(eventually, lambda: connected(conn, relay), 10)
            got = await ring_through(relay, fcm, "u.knows", {"tok-kim", "tok-mallory"})
            assert got == {"tok-kim", "tok-mallory"}
            doc = await access_doc(db, relay, lambda d: d["refused"] and d["users"])
            assert doc["users"] == ["kim", "mallory"] and doc["refused"] == ["aaa-lee"]
    finally:
        await relay.stop()


async def test_an_open_relay_rings_everyone_naming_it_as_before(db, fcm, notifier):
    """(d) A relay that asks for no credentials proves nothing: `open`, everyone naming it is
    rung, whatever credentials they typed."""
    relay = await DemoRelay().start()
    try:
        people(db, relay.port, {"kim": creds(), "aaa-lee": creds("made-up"), "park": {}})
        async with user_documents_connector(db, notifier) as conn:
            await asyncio.to_thread(eventually, lambda: connected(conn, relay), 10)
            expected = {"tok-kim", "tok-aaa-lee", "tok-park"}
            assert await ring_through(relay, fcm, "u.open", expected) == expected
            doc = await access_doc(db, relay, lambda d: d["open"] and not d["unproven"])
            assert doc["refused"] == []
            (entry,) = (await health(conn))["relays"]
            assert entry["open"] is True and entry["refused_users"] == 0
        assert relay.refused == 0
    finally:
        await relay.stop()


async def test_a_colleague_fixing_their_password_is_probed_and_then_rung(db, fcm, notifier):
    """A change of the users' settings is followed without dropping the connection: the new
    settings are probed once (a handshake closed at once: nothing reaches the PBX)."""
    relay = await DemoRelay(credentials=(AUTH_ID, PASSWORD)).start()
    try:
        people(db, relay.port, {"kim": creds(), "aaa-lee": creds(WRONG)})
        async with user_documents_connector(db, notifier) as conn:
            await access_doc(db, relay, lambda d: d["refused"] == ["aaa-lee"])
            client = conn.relays[f"127.0.0.1:{relay.port}"].client
            connects = client.status.connects
            db.collection("users").document("aaa-lee").update(creds())
            await access_doc(db, relay, lambda d: d["users"] == ["aaa-lee", "kim"])
            assert client.status.connects == connects  # the connection stayed up
            got = await ring_through(relay, fcm, "u.fixed", {"tok-kim", "tok-aaa-lee"})
            assert got == {"tok-kim", "tok-aaa-lee"}
        assert relay.received == []  # neither the connection nor a probe sent anything
    finally:
        await relay.stop()


async def test_a_relay_refusing_every_setting_is_retried_at_the_backoff_pace(
    db, fcm, notifier, caplog
):
    """Nobody's settings are accepted: each attempt tries each setting once, attempts back off
    as before (no storm of handshakes), the refusal is logged once, and nobody is rung."""
    caplog.set_level(logging.INFO)
    relay = await DemoRelay(credentials=(AUTH_ID, PASSWORD)).start()
    try:
        people(db, relay.port, {"aaa": creds(WRONG), "bbb": creds("made-up")})
        async with user_documents_connector(db, notifier) as conn:
            doc = await access_doc(db, relay, lambda d: len(d["refused"]) == 2)
            assert doc["users"] == [] and doc["open"] is False
            await asyncio.sleep(3.0)
            # 0.5 s doubling: about four attempts in 3 s, two handshakes each
            assert 2 <= relay.refused <= 12, relay.refused
            (entry,) = (await health(conn))["relays"]
            assert entry["state"] != "connected" and entry["refused_users"] == 2
            assert "401" in entry["last_error"]
            line = await asyncio.to_thread(deliver, notifier, ringing("u.none", relay.port))
            assert line["recipients"] == 0
            assert line["skipped"].get("relay_credentials_refused") == 2
        warnings = [r for r in caplog.records if r.getMessage().startswith("relay refused users")]
        assert len(warnings) == 1
        assert_no_secrets(*(repr(r.__dict__) for r in caplog.records))
    finally:
        await relay.stop()


async def test_a_colleagues_wrong_ssl_setting_does_not_cut_the_company_off(db, fcm, notifier):
    """aaa-lee ticks SSL on a plain relay (a TLS failure, not a 401) and sorts first: the next
    settings are tried at once, and lee, whose settings never opened the relay, is not rung."""
    relay = await DemoRelay(credentials=(AUTH_ID, PASSWORD)).start()
    try:
        people(db, relay.port, {"kim": creds(), "aaa-lee": {**creds(), "websocketUseSSL": True}})
        async with user_documents_connector(db, notifier) as conn:
            await asyncio.to_thread(eventually, lambda: connected(conn, relay), 10)
            assert await ring_through(relay, fcm, "u.ssl", {"tok-kim"}) == {"tok-kim"}
            doc = await access_doc(db, relay, lambda d: d["users"])
            assert doc["users"] == ["kim"] and doc["unproven"] == ["aaa-lee"]
    finally:
        await relay.stop()


@pytest.mark.parametrize(
    "account_code", ["(070) 4514 4801", "+82 (0)70 4514 4801", "070 4514-4801"]
)
async def test_any_spelling_of_the_number_rings_in_user_documents_mode_too(
    db, fcm, notifier, account_code
):
    """Spellings outside the common-spellings list: with the relay's relay_access known, the
    users naming it are read and their numbers compared as E.164."""
    relay = await DemoRelay().start()
    try:
        people(db, relay.port, {"kim": {}})
        db.collection("my_extensions").document("e-kim").update({"accountCode": account_code})
        async with user_documents_connector(db, notifier) as conn:
            await asyncio.to_thread(eventually, lambda: connected(conn, relay), 10)
            await access_doc(db, relay, lambda d: d["open"])
            linkedid = f"u.spelling.{abs(hash(account_code))}"
            assert await ring_through(relay, fcm, linkedid, {"tok-kim"}) == {"tok-kim"}
    finally:
        await relay.stop()


def test_a_relay_no_connector_has_recorded_rings_nobody(db, fcm, notifier):
    """Without the relay's relay_access record nobody has shown whose settings it accepts:
    fail closed (a connector records it before it reads the relay's first frame)."""
    docs = company(7301, 1)
    del docs["relay_access"]
    write(db, docs)
    line = deliver(notifier, replace(lifecycle_ringing("u.unrecorded"), relay="127.0.0.1:7301"))
    assert rung(fcm, "u.unrecorded") == set()
    assert line["skipped"] == {"relay_not_recorded": 1}
    write(db, {"relay_access": {"127.0.0.1:7301": relay_access(["kim", "lee"])}})
    deliver(notifier, replace(lifecycle_ringing("u.recorded"), relay="127.0.0.1:7301"))
    assert rung(fcm, "u.recorded") == {"tok-kim-android", "tok-kim-ios", "tok-lee"}
