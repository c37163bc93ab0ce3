"""The app's own endpoints on the real parts: main.py's cancelIncomingCallNotification and
sendIncomingCallNotification under functions-framework (over HTTP, as Cloud Functions runs
them), the notifier beside them in directory mode, Google's Firestore emulator, firebase-admin
sending to the local FCM endpoint, and ID tokens as firebase-admin accepts them when
FIREBASE_AUTH_EMULATOR_HOST is set (unsigned, `alg: none`; nothing listens there: verifying
such a token needs no network).

The request bodies are the app's own (ringneck/makecall: incoming_call_screen.dart calls the
callable with {linkedid, userId, action}; dcmiws_service.dart posts callerNumber, callerName,
receiverNumber, linkedid, channel, callType with its X-Firebase-API-Key header)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest

from functions.core.call_event import CallEvent, Kind
from tests.integration.conftest import PROJECT
from tests.integration.scenario import EXPECTED_TOKENS, company, device, relay_access, write
from tests.integration.test_lifecycle_notifier import deliver, pushes_of
from tests.support import NotifierProcess, eventually, ringing_event

RELAY_PORT = 7001
NUMBER = "07045144801"
DCMIWS_ONLY_NUMBER = "0255501234"  # only oh (who listens to the relay in the app) claims it
PUBLIC_API_KEY = "AIzaSyCB4mI5Kj61f6E532vg46GnmnnCfsI9XIM"  # the app's, public by design
TENANT_CACHE_SECONDS = 0.3
EVERY_DEVICE = ["tok-kim-a", "tok-kim-b", "tok-lee", "tok-oh-a", "tok-oh-b"]  # park's: no claim


@pytest.fixture(scope="module")
def functions_env(emulator, fcm) -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "FIRESTORE_EMULATOR_HOST": emulator.host,
        # firebase-admin only checks that it is set: emulator tokens are verified offline
        "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099",
        "FCM_ENDPOINT": fcm.url,
        "RING_WINDOW_SECONDS": "60",
        "RECIPIENT_CACHE_SECONDS": "0",
        "TENANT_CACHE_SECONDS": str(TENANT_CACHE_SECONDS),
        "TENANCY": "",  # directory, the default
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture(scope="module")
def functions_up(functions_env, tmp_path_factory) -> Iterator[dict[str, NotifierProcess]]:
    logs = tmp_path_factory.mktemp("app-endpoints")
    procs = {
        "notifier": NotifierProcess(functions_env, logs / "notifier.log"),
        "cancel": NotifierProcess(
            functions_env,
            logs / "cancel.log",
            target="cancelIncomingCallNotification",
            signature="http",
        ),
        "send": NotifierProcess(
            functions_env,
            logs / "send.log",
            target="sendIncomingCallNotification",
            signature="http",
        ),
    }
    for proc in procs.values():
        proc.start()
    yield procs
    for proc in procs.values():
        proc.stop()


@pytest.fixture
def functions(functions_up, db) -> dict[str, NotifierProcess]:
    """The three functions over a clean emulator holding Acme: kim (two phones) and lee ring
    for the company number; oh listens to the relay in the app (DCMIWS mode) and is the only
    one claiming a second number; park is a member who claims neither."""
    ext = lambda uid, code, n: {"userId": uid, "extension": n, "accountCode": code}  # noqa: E731
    write(
        db,
        {
            "pbx_tenants": {
                "acme": {
                    "name": "Acme",
                    "pbx": [{"relay": f"ws://127.0.0.1:{RELAY_PORT}", "serverId": 1}],
                    "numbers": ["070-4514-4801", "02-555-01234"],
                    "members": ["kim", "lee", "oh", "park"],
                }
            },
            "users": {
                uid: {"companyName": "데모상사", "isActive": True} for uid in ("kim", "lee", "park")
            }
            | {"oh": {"companyName": "데모상사", "isActive": True, "dcmiwsEnabled": True}},
            "my_extensions": {
                "e-kim": ext("kim", "070-4514-4801", "1010"),
                "e-lee": ext("lee", "070-4514-4801", "1011"),
                # sorts first: the endpoint rings [oh, kim, lee], the notifier [kim, lee]
                "e-0-oh": ext("oh", "070-4514-4801", "1012"),
                "e-0-oh2": ext("oh", "02-555-01234", "1012"),
                "e-park": ext("park", "02-9999-0000", "1013"),
            },
            "fcm_tokens": {
                "kim_a_Android": device("kim", "tok-kim-a"),
                "kim_b_iOS": device("kim", "tok-kim-b", platform="ios"),
                "lee_a_Android": device("lee", "tok-lee"),
                "oh_a_Android": device("oh", "tok-oh-a"),
                "oh_b_Android": device("oh", "tok-oh-b"),
                "park_a_Android": device("park", "tok-park"),
            },
        },
    )
    time.sleep(TENANT_CACHE_SECONDS + 0.1)  # past the functions' copy of the directory
    return functions_up


def ringing(linkedid: str, dialled: str = NUMBER) -> CallEvent:
    return ringing_event(linkedid, RELAY_PORT, dialled_number=dialled)


def id_token(uid: str, project: str = PROJECT) -> str:
    """An Auth emulator ID token: unsigned (`alg: none`), as firebase-admin accepts it in
    emulator mode."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    now = int(time.time())
    claims = {
        "iss": f"https://securetoken.google.com/{project}",
        "aud": project,
        "sub": uid,
        "user_id": uid,
        "auth_time": now,
        "iat": now,
        "exp": now + 3600,
        "firebase": {"sign_in_provider": "password", "identities": {}},
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def cancel(
    fn: NotifierProcess,
    data: Any,
    *,
    token: str | None = None,
    instance: str | None = None,
) -> httpx.Response:
    """The callable as the Firebase SDK calls it."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if instance is not None:
        headers["Firebase-Instance-ID-Token"] = instance
    return httpx.post(fn.url, json={"data": data}, headers=headers, timeout=30)


def app_body(linkedid: str, **changes: str) -> dict[str, str]:
    """dcmiws_service.dart's body for a Newchannel of the call."""
    return {
        "callerNumber": "01026132471",
        "callerName": "김철수",
        "receiverNumber": NUMBER,
        "linkedid": linkedid,
        "channel": "PJSIP/DKCT-000001b1",
        "callType": "external",
        **changes,
    }


def send(fn: NotifierProcess, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(
        fn.url,
        content=json.dumps(body),
        headers={
            "Content-Type": "application/json",
            "X-Firebase-API-Key": PUBLIC_API_KEY,
            **headers,
        },
        timeout=30,
    )


def tokens(fcm, linkedid: str, kind: str) -> list[str]:
    return sorted(m["token"] for m in pushes_of(fcm, linkedid, kind))


def history(db, doc_id: str) -> dict[str, Any]:
    snap = db.collection("call_history").document(doc_id).get()
    return snap.to_dict() or {}


# -- cancelIncomingCallNotification --------------------------------------------------------------


def test_confirm_on_one_device_cancels_only_that_users_other_devices(functions, fcm, db):
    call = ringing("app.confirm")
    deliver(functions["notifier"], call)
    assert tokens(fcm, call.linkedid, "incoming_call") == ["tok-kim-a", "tok-kim-b", "tok-lee"]

    # kim taps accept on the Android phone: the app's exact callable body
    body = {"linkedid": call.linkedid, "userId": "kim", "action": "answered"}
    reply = cancel(functions["cancel"], body, token=id_token("kim"), instance="tok-kim-a")
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["Access-Control-Allow-Origin"] == "*"  # the app's web build
    result = reply.json()["result"]
    assert result["success"] is True and result["sentCount"] == 1 and result["action"] == "answered"

    cancels = eventually(lambda: pushes_of(fcm, call.linkedid, "incoming_call_cancelled"))
    time.sleep(0.3)  # nothing else follows
    cancels = pushes_of(fcm, call.linkedid, "incoming_call_cancelled")
    assert [m["token"] for m in cancels] == ["tok-kim-b"]  # not the phone that confirmed, not lee
    assert cancels[0]["data"]["action"] == "answered"
    # lee still rings: the call's shared history document (watched by every rung user's incoming
    # screen) stays open; lee's own is untouched
    assert history(db, call.linkedid).get("cancelled") is False
    assert history(db, f"{call.linkedid}_lee").get("cancelled") is False

    # a retry of the same request (the app's 10 s timeout, a flaky network) sends nothing more
    again = cancel(functions["cancel"], body, token=id_token("kim"), instance="tok-kim-a")
    assert again.status_code == 200 and again.json()["result"]["sentCount"] == 0

    # lee rejects on their only phone: lee's history document is marked
    reply = cancel(
        functions["cancel"],
        {"linkedid": call.linkedid, "userId": "lee", "action": "rejected"},
        token=id_token("lee"),
        instance="tok-lee",
    )
    assert reply.status_code == 200 and reply.json()["result"]["sentCount"] == 0
    lee_doc = history(db, f"{call.linkedid}_lee")
    assert lee_doc["cancelled"] is True and lee_doc["cancelledBy"] == "rejected"
    assert "cancelledAt" in lee_doc

    # the desk phone answers later: no device is sent a second cancel
    deliver(functions["notifier"], replace(call, kind=Kind.ANSWERED, answered_by="1010"))
    assert tokens(fcm, call.linkedid, "incoming_call_cancelled") == ["tok-kim-b"]


def test_confirm_of_the_only_rung_user_closes_the_shared_history_document(functions, fcm, db):
    db.collection("my_extensions").document("e-lee").delete()  # kim alone owns the number
    call = ringing("app.alone")
    deliver(functions["notifier"], call)
    assert tokens(fcm, call.linkedid, "incoming_call") == ["tok-kim-a", "tok-kim-b"]

    reply = cancel(
        functions["cancel"],
        {"linkedid": call.linkedid, "userId": "kim", "action": "rejected"},
        token=id_token("kim"),
    )
    assert reply.status_code == 200, reply.text
    result = reply.json()["result"]
    # without Firebase-Instance-ID-Token the calling device is not known: both get the cancel
    assert result["sentCount"] == 2 and result["firestoreUpdated"] is True
    shared = history(db, call.linkedid)
    assert shared["cancelled"] is True and shared["cancelledBy"] == "rejected"


@pytest.mark.parametrize(
    ("who", "data", "status", "code"),
    [
        ("none", {"userId": "kim", "action": "answered"}, 401, "UNAUTHENTICATED"),
        ("malformed", {"userId": "kim", "action": "answered"}, 401, "UNAUTHENTICATED"),
        ("other-project", {"userId": "kim", "action": "answered"}, 401, "UNAUTHENTICATED"),
        ("lee", {"userId": "kim", "action": "answered"}, 403, "PERMISSION_DENIED"),
        ("park", {"userId": "park", "action": "answered"}, 404, "NOT_FOUND"),
        ("kim", {"linkedid": "never.rang", "userId": "kim"}, 404, "NOT_FOUND"),
        ("kim", {"userId": "kim", "action": "hang_up_everyone"}, 400, "INVALID_ARGUMENT"),
    ],
)
def test_refused_cancels_send_nothing_and_change_no_history(
    functions, fcm, db, who, data, status, code
):
    call = ringing(f"app.refused.{who}.{status}")
    deliver(functions["notifier"], call)
    token = {
        "none": None,
        "malformed": "not-a-jwt",
        "other-project": id_token("kim", project="someone-elses-project"),
    }.get(who, id_token(who))
    reply = cancel(functions["cancel"], {"linkedid": call.linkedid, **data}, token=token)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["status"] == code
    time.sleep(0.3)
    assert pushes_of(fcm, call.linkedid, "incoming_call_cancelled") == []
    assert history(db, call.linkedid)["cancelled"] is False
    assert history(db, f"{call.linkedid}_lee")["cancelled"] is False


def test_a_request_that_is_not_a_callable_is_refused(functions):
    url = functions["cancel"].url
    assert httpx.get(url, timeout=10).status_code == 400
    no_data = httpx.post(url, json={"linkedid": "x"}, timeout=10)
    assert no_data.status_code == 400 and no_data.json()["error"]["status"] == "INVALID_ARGUMENT"
    preflight = httpx.options(url, timeout=10)
    assert preflight.status_code == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]


# -- sendIncomingCallNotification -------------------------------------------------------------


def test_dcmiws_request_rings_each_device_once_after_the_connectors_ring(functions, fcm, db):
    call = ringing("app.dcmiws.after")
    deliver(functions["notifier"], call)  # kim and lee ring; oh listens in the app: skipped
    assert tokens(fcm, call.linkedid, "incoming_call") == ["tok-kim-a", "tok-kim-b", "tok-lee"]

    reply = send(functions["send"], app_body(call.linkedid))  # oh's phone saw the Newchannel
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "success": True,
        "linkedid": call.linkedid,
        "sentCount": 2,
        "failureCount": 0,
        "alreadyRung": 3,
    }
    incoming = pushes_of(fcm, call.linkedid, "incoming_call")
    assert sorted(m["token"] for m in incoming) == EVERY_DEVICE
    oh = next(m for m in incoming if m["token"] == "tok-oh-a")
    assert oh["data"]["user_id"] == "oh" and oh["data"]["my_extension"] == "1012"
    # oh's history joins the call's: the shared document stays kim's, nobody gets a second one
    docs = {s.id: s.to_dict()["userId"] for s in db.collection("call_history").stream()}
    assert docs == {
        call.linkedid: "kim",
        f"{call.linkedid}_lee": "lee",
        f"{call.linkedid}_oh": "oh",
    }

    # the app sends one per matching Newchannel, and retries: nothing rings twice
    assert send(functions["send"], app_body(call.linkedid)).json()["sentCount"] == 0
    deliver(functions["notifier"], call)  # Pub/Sub redelivers the connector's ring
    assert len(pushes_of(fcm, call.linkedid, "incoming_call")) == 5

    # and the call's end stops all five, oh's phones too
    deliver(functions["notifier"], replace(call, kind=Kind.ANSWERED, answered_by="1010"))
    assert len(tokens(fcm, call.linkedid, "incoming_call_cancelled")) == 5


def test_dcmiws_request_ahead_of_the_connector_waits_for_the_call(functions, fcm):
    call = ringing("app.dcmiws.ahead")
    replies: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: replies.append(send(functions["send"], app_body(call.linkedid)))
    )
    thread.start()
    time.sleep(0.5)  # the app saw the Newchannel first
    deliver(functions["notifier"], call)
    thread.join(30)
    assert replies and replies[0].status_code == 200, replies and replies[0].text
    assert tokens(fcm, call.linkedid, "incoming_call") == EVERY_DEVICE


def test_a_call_only_dcmiws_users_claim_is_remembered_and_rung_from_the_app(functions, fcm):
    call = ringing("app.dcmiws.only", dialled=DCMIWS_ONLY_NUMBER)
    report = deliver(functions["notifier"], call)
    assert report["recipients"] == 0 and report["skipped"] == {"dcmiws_enabled": 1}
    assert pushes_of(fcm, call.linkedid, "incoming_call") == []

    reply = send(functions["send"], app_body(call.linkedid, receiverNumber=DCMIWS_ONLY_NUMBER))
    assert reply.status_code == 200, reply.text
    assert reply.json()["sentCount"] == 2
    assert tokens(fcm, call.linkedid, "incoming_call") == ["tok-oh-a", "tok-oh-b"]


def test_forged_requests_are_refused_and_ring_nobody(functions, fcm):
    started = time.monotonic()
    never = send(functions["send"], app_body("never.rang"))
    assert never.status_code == 404, never.text
    assert never.json() == {"error": "Call not found", "linkedid": "never.rang"}
    assert time.monotonic() - started < 10  # waited for the connector, bounded

    call = ringing("app.forged")
    deliver(functions["notifier"], call)
    before = len(fcm.sent_messages())
    other_number = send(functions["send"], app_body(call.linkedid, receiverNumber="0212345678"))
    assert other_number.status_code == 404
    other_caller = send(functions["send"], app_body(call.linkedid, callerNumber="01099998888"))
    assert other_caller.status_code == 404
    assert len(fcm.sent_messages()) == before

    # a name the request makes up is not what the phones show: the PBX's caller id is
    reply = send(functions["send"], app_body(call.linkedid, callerName="은행 보안팀"))
    assert reply.status_code == 200
    oh = next(m for m in fcm.sent_messages() if m["token"] == "tok-oh-a")
    assert oh["data"]["caller_name"] == "김철수" and oh["notification"]["body"] == "김철수"

    # a call that is over rings nobody any more
    ended = ringing("app.forged.over")
    deliver(functions["notifier"], ended)
    deliver(functions["notifier"], replace(ended, kind=Kind.ENDED, outcome="caller_abandoned"))
    late = send(functions["send"], app_body(ended.linkedid))
    assert late.status_code == 404
    assert tokens(fcm, ended.linkedid, "incoming_call") == ["tok-kim-a", "tok-kim-b", "tok-lee"]


def test_a_request_with_an_id_token_rings_only_that_users_devices(functions, fcm):
    call = ringing("app.dcmiws.token")
    deliver(functions["notifier"], call)
    bad = send(functions["send"], app_body(call.linkedid), Authorization="Bearer junk")
    assert bad.status_code == 401 and bad.json()["error"] == "Unauthorized"
    park = send(
        functions["send"], app_body(call.linkedid), Authorization=f"Bearer {id_token('park')}"
    )
    assert park.status_code == 404 and park.json()["error"] == "Extension not found"
    oh = send(functions["send"], app_body(call.linkedid), Authorization=f"Bearer {id_token('oh')}")
    assert oh.status_code == 200 and oh.json()["userId"] == "oh" and oh.json()["sentCount"] == 2


def test_the_apps_error_replies(functions):
    url = functions["send"].url
    assert httpx.get(url, timeout=10).json() == {"error": "Method Not Allowed"}
    missing = send(functions["send"], {"callerNumber": "01026132471"})
    assert missing.status_code == 400
    assert missing.json() == {
        "error": "Missing required parameters",
        "required": ["callerNumber", "receiverNumber", "linkedid"],
    }


def test_logs_say_why_and_mask_numbers(functions, fcm):
    send(functions["send"], app_body("never.logged"))

    def refused() -> dict | None:
        for line in functions["send"].log_lines():
            if '"ring refused"' in line and "never.logged" in line:
                return json.loads(line)
        return None

    entry = eventually(refused)
    assert entry["reason"] == "unknown_call" and entry["severity"] == "WARNING"
    assert entry["receiver"].endswith("4801") and NUMBER not in json.dumps(entry)
    assert not any("01026132471" in line for line in functions["send"].log_lines())


# -- user-documents mode ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def user_documents_send(functions_env, tmp_path_factory) -> Iterator[NotifierProcess]:
    env = {**functions_env, "TENANCY": "user_documents"}
    log = tmp_path_factory.mktemp("app-endpoints-ud") / "send.log"
    proc = NotifierProcess(
        env, log, target="sendIncomingCallNotification", signature="http"
    ).start()
    yield proc
    proc.stop()


def test_user_documents_mode_rings_only_users_the_relay_accepted(
    user_documents_send, notifier, db, fcm
):
    """TENANCY=user_documents (conftest's notifier): oh names the relay and listens in the app;
    han claims the number on another relay; once the relay refuses oh's settings, nobody."""
    write(db, company(RELAY_PORT, RELAY_PORT + 1))
    call = ringing("app.ud")
    deliver(notifier, call)
    assert tokens(fcm, call.linkedid, "incoming_call") == sorted(EXPECTED_TOKENS)

    reply = send(user_documents_send, app_body(call.linkedid))
    assert reply.status_code == 200, reply.text
    assert reply.json()["sentCount"] == 1 and reply.json()["alreadyRung"] == len(EXPECTED_TOKENS)
    assert tokens(fcm, call.linkedid, "incoming_call") == sorted({*EXPECTED_TOKENS, "tok-oh"})

    refused = ringing("app.ud.refused")
    closed = {**relay_access([]), "open": False, "refused": ["oh"]}
    write(db, {"relay_access": {f"127.0.0.1:{RELAY_PORT}": closed}})
    deliver(notifier, refused)
    assert send(user_documents_send, app_body(refused.linkedid)).status_code == 404
    assert pushes_of(fcm, refused.linkedid, "incoming_call") == []
