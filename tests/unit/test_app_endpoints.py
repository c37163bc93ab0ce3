"""The app endpoints' rules on plain data: requests, who may stop or ring which call, the ledger's
new transitions, the callable protocol, and the service with in-memory parts (the ledger runs the
real core transitions). Over HTTP and Firestore: tests/integration/test_app_endpoints.py."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import firebase_admin
import pytest

from functions.app_endpoints import callable_protocol as cp
from functions.app_endpoints.id_tokens import IdTokenVerifier, InvalidIdToken
from functions.app_endpoints.service import AppCallService
from functions.core import app_calls, ledger
from functions.core.app_calls import CancelRequest, Refused, RingRequest
from functions.core.call_event import CallEvent, Kind
from functions.core.ledger import DeviceRef
from functions.core.recipients import Selection, Skip
from functions.notifier.adapters.fcm_sender import init_firebase_app
from functions.notifier.service import Notifier
from tests.integration.test_app_endpoints import id_token
from tests.unit.test_notifier_service import Sender

NOW = 1_000_000.0
CALL = CallEvent(
    kind=Kind.RINGING,
    relay="pbx:7099",
    server_id=1,
    linkedid="1762843210.1787",
    caller_number="16682471",
    caller_name="얼쑤팩토리",
    dialled_number="07045144801",
    channel="PJSIP/DKCT-00000460",
    occurred_at=NOW,
    detected_at=NOW,
)
KIM_A, KIM_B = DeviceRef("tok-kim-a", "kim_a", "kim"), DeviceRef("tok-kim-b", "kim_b", "kim")
LEE = DeviceRef("tok-lee", "lee_a", "lee")
BASE = {"callKey": CALL.call_key, "linkedid": CALL.linkedid}


def rung(*devices: DeviceRef) -> dict:
    record, _, _ = ledger.claim_ring(None, list(devices), NOW, BASE)
    record, _ = ledger.finish_ring(record, list(devices), [], NOW + 1, BASE)
    return record


# -- requests ------------------------------------------------------------------------------------


def test_the_apps_cancel_body_is_parsed_and_anything_else_refused():
    body = {"linkedid": "1.2", "userId": "kim", "action": "rejected"}
    assert app_calls.parse_cancel(body) == CancelRequest("1.2", "kim", "rejected")
    assert app_calls.parse_cancel({"linkedid": "1.2", "userId": "kim"}).action == "answered"
    bad_bodies = [
        None,
        [],
        {"linkedid": "1.2"},
        {"linkedid": "", "userId": "kim"},
        {"linkedid": "1.2", "userId": "kim", "action": "everyone"},
        {"linkedid": "x" * 300, "userId": "kim"},
    ]
    for bad in bad_bodies:
        with pytest.raises(Refused) as refused:
            app_calls.parse_cancel(bad)
        assert refused.value.code == "invalid-argument"


def test_the_apps_ring_body_is_parsed_and_missing_fields_named():
    body = {
        "callerNumber": "16682471",
        "callerName": "얼쑤팩토리",
        "receiverNumber": "07045144801",
        "linkedid": "1762843210.1787",
        "channel": "PJSIP/DKCT-00000460",
        "callType": "external",
    }
    request = app_calls.parse_ring(body)
    assert request == RingRequest(
        "16682471", "07045144801", "1762843210.1787", "얼쑤팩토리", "PJSIP/DKCT-00000460"
    )
    assert app_calls.missing_ring_fields({"callerNumber": "1"}) == ["receiverNumber", "linkedid"]
    assert app_calls.missing_ring_fields("nope") == list(app_calls.RING_REQUIRED)
    with pytest.raises(Refused):
        app_calls.parse_ring({**body, "linkedid": 5})


# -- who may cancel what -------------------------------------------------------------------------


def test_only_the_signed_in_user_may_cancel_their_call():
    request = CancelRequest(CALL.linkedid, "kim", "answered")
    with pytest.raises(Refused) as no_token:
        app_calls.check_caller(None, request)
    with pytest.raises(Refused) as other:
        app_calls.check_caller("lee", request)
    assert (no_token.value.code, other.value.code) == ("unauthenticated", "permission-denied")
    app_calls.check_caller("kim", request)


def test_the_call_of_a_user_is_the_one_their_devices_rang_for():
    mine = (CALL, rung(KIM_A))
    same_id_elsewhere = (replace(CALL, relay="other:7099", detected_at=NOW + 5), rung(LEE))
    assert app_calls.call_of_user([same_id_elsewhere, mine], "kim") == mine
    with pytest.raises(Refused) as not_rung:
        app_calls.call_of_user([same_id_elsewhere], "kim")
    with pytest.raises(Refused) as unknown:
        app_calls.call_of_user([], "kim")
    assert not_rung.value.code == unknown.value.code == "not-found"
    assert (not_rung.value.reason, unknown.value.reason) == ("user_not_rung", "unknown_call")


def test_cancel_for_user_claims_only_that_users_devices_once():
    record = rung(KIM_A, KIM_B, LEE)
    record, cancels = ledger.cancel_for_user(record, "kim", "answered", NOW + 2)
    assert cancels == [KIM_A, KIM_B] and record["userCancels"]["kim"]["action"] == "answered"
    assert ledger.cancel_for_user(record, "kim", "answered", NOW + 3) == (None, [])
    # the call's end cancels the others only
    _, closing, _ = ledger.close_call(record, {"overAction": "answered_elsewhere"}, NOW + 4, BASE)
    assert closing == [LEE]
    assert app_calls.others_still_ringing(record, "kim")
    assert not app_calls.others_still_ringing(rung(KIM_A), "kim")


def test_the_confirming_device_is_known_from_the_instance_token():
    assert app_calls.device_of_caller([KIM_A, KIM_B], "tok-kim-b") == KIM_B
    assert app_calls.device_of_caller([KIM_A], "tok-somebody") is None
    assert app_calls.device_of_caller([KIM_A], None) is None


def test_history_marks_the_users_documents_and_the_shared_one_only_when_nobody_else_rings():
    shared = {"userId": "kim", "cancelled": False}
    own = {"userId": "lee", "cancelled": False}
    linkedid = CALL.linkedid
    assert not app_calls.history_marks_cancelled(
        linkedid, shared, linkedid, "kim", shared_closes=False
    )
    assert app_calls.history_marks_cancelled(linkedid, shared, linkedid, "kim", shared_closes=True)
    assert app_calls.history_marks_cancelled(
        f"{linkedid}_lee", own, linkedid, "lee", shared_closes=False
    )
    assert not app_calls.history_marks_cancelled(  # someone else's
        f"{linkedid}_lee", own, linkedid, "kim", shared_closes=True
    )
    assert not app_calls.history_marks_cancelled(  # already cancelled
        linkedid, {**shared, "cancelled": True}, linkedid, "kim", shared_closes=True
    )


# -- which call a ring request names -------------------------------------------------------------


def test_a_ring_request_must_match_the_call_the_pbx_reported():
    request = RingRequest("16682471", "070-4514-4801", CALL.linkedid)
    record = rung(KIM_A)
    assert app_calls.call_to_ring([(CALL, record)], request, "KR") == CALL
    cases = {
        "unknown_call": ([], request),
        "call_does_not_match": ([(CALL, record)], replace(request, receiver_number="0212345678")),
        "call_over": ([(CALL, {**record, "over": True})], request),
    }
    for reason, (calls, req) in cases.items():
        with pytest.raises(Refused) as refused:
            app_calls.call_to_ring(calls, req, "KR")
        assert (refused.value.code, refused.value.reason) == ("not-found", reason)
    forged_caller = replace(request, caller_number="01099998888")
    with pytest.raises(Refused):
        app_calls.call_to_ring([(CALL, record)], forged_caller, "KR")


def test_remember_ringing_keeps_the_first_ringing_event_only():
    new = ledger.remember_ringing(None, {"linkedid": "x"}, BASE)
    assert new is not None and new["ring"] == {"linkedid": "x"} and not new["over"]
    assert ledger.remember_ringing(new, {"linkedid": "y"}, BASE) is None


# -- the callable protocol -------------------------------------------------------------------------


def test_callable_requests_and_replies():
    headers = {"Authorization": "Bearer abc", "Firebase-Instance-ID-Token": "fcm-1"}
    call = cp.decode_callable("POST", headers, "application/json; charset=utf-8", b'{"data":{}}')
    assert (call.data, call.id_token, call.instance_token) == ({}, "abc", "fcm-1")
    assert cp.bearer({}) is None and cp.bearer({"Authorization": "Basic x"}) == ""
    for method, ctype, body in [
        ("GET", "application/json", b'{"data":1}'),
        ("POST", "text/plain", b'{"data":1}'),
        ("POST", "application/json", b"{nope"),
        ("POST", "application/json", b'{"linkedid":"x"}'),
    ]:
        with pytest.raises(cp.BadCall):
            cp.decode_callable(method, {}, ctype, body)
    assert cp.result({"ok": 1}).body == {"result": {"ok": 1}}
    denied = cp.error("permission-denied", "no")
    assert denied.status == 403
    assert denied.body == {"error": {"status": "PERMISSION_DENIED", "message": "no"}}
    assert cp.error("unauthenticated", "x").status == 401 and cp.error("weird", "x").status == 500
    assert cp.preflight().status == 204 and cp.preflight().content() == b""


# -- the service, with in-memory parts ------------------------------------------------------------


class Calls:
    """The ledger's records in a dict, with the real core transitions."""

    def __init__(self, calls: list[tuple[CallEvent, dict]] | None = None) -> None:
        self.calls = calls or []
        self.lookups = 0

    def calls_named(self, linkedid):
        self.lookups += 1
        return [(e, r) for e, r in self.calls if e.linkedid == linkedid]

    def cancel_for_user(self, event, user_id, action, now):
        for i, (e, r) in enumerate(self.calls):
            if e.call_key == event.call_key:
                new, cancels = ledger.cancel_for_user(r, user_id, action, now)
                if new is not None:
                    self.calls[i] = (e, new)
                return cancels
        return []


class History:
    def __init__(self) -> None:
        self.marked: list[tuple[str, str, str, bool]] = []

    def record_user_cancel(self, linkedid, user_id, action, *, shared_closes):
        self.marked.append((linkedid, user_id, action, shared_closes))
        return 1


def bare_notifier(sender: Sender, *, directory=None, ledger=None, clock=lambda: NOW) -> Notifier:
    """A notifier with only the parts a test uses (the others are never reached)."""
    return Notifier(directory, sender, None, ledger, ring_window=60, clock=clock)  # type: ignore[arg-type]


def service(calls: Calls, clock: list[float] | None = None) -> tuple[AppCallService, Sender]:
    clock = clock if clock is not None else [NOW]
    sender = Sender()

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    notifier = bare_notifier(sender, clock=lambda: clock[0])
    svc = AppCallService(calls, History(), notifier, "KR", clock=lambda: clock[0], sleep=sleep)
    return svc, sender


def test_service_cancel_sends_to_the_users_other_rung_devices_once():
    calls = Calls([(CALL, rung(KIM_A, KIM_B, LEE))])
    svc, sender = service(calls)
    request = CancelRequest(CALL.linkedid, "kim", "answered")
    result = svc.cancel("kim", request, instance_token="tok-kim-a")
    assert sender.sent == [("cancel", "tok-kim-b", sender.sent[0][2])]
    assert result["sentCount"] == 1 and result["totalTokens"] == 1
    assert svc.history.marked == [(CALL.linkedid, "kim", "answered", False)]  # lee still rings
    assert svc.cancel("kim", request, instance_token="tok-kim-a")["sentCount"] == 0
    assert len(sender.sent) == 1


def test_service_ring_waits_for_the_call_a_bounded_time():
    clock = [NOW]
    calls = Calls()
    svc, sender = service(calls, clock)
    with pytest.raises(Refused) as refused:
        svc.ring(RingRequest("16682471", "07045144801", CALL.linkedid))
    assert refused.value.reason == "unknown_call"
    assert clock[0] - NOW >= svc.known_call_wait and calls.lookups > 5 and sender.sent == []


def test_service_ring_refuses_a_call_that_is_over_without_waiting():
    clock = [NOW]
    calls = Calls([(CALL, {**rung(KIM_A), "over": True})])
    svc, _ = service(calls, clock)
    with pytest.raises(Refused):
        svc.ring(RingRequest("16682471", "07045144801", CALL.linkedid))
    assert calls.lookups == 1 and clock[0] == NOW


# -- the notifier keeps a call only users of the app's own relay connection claim ----------------


class Memory:
    def __init__(self) -> None:
        self.remembered: list[CallEvent] = []

    def remember_ringing(self, event):
        self.remembered.append(event)


@pytest.mark.parametrize(("reason", "kept"), [("dcmiws_enabled", True), ("suspended", False)])
def test_notifier_remembers_a_call_nobody_was_pushed_for_only_for_dcmiws_users(reason, kept):
    class Directory:
        def recipients_for(self, event):
            return Selection(skipped=[Skip("oh", reason)])

    memory = Memory()
    notifier = bare_notifier(Sender(), directory=Directory(), ledger=memory)
    notifier.handle(CALL)
    assert memory.remembered == ([CALL] if kept else [])


def test_deliver_cancels_reports_per_device():
    notifier = bare_notifier(Sender())
    report = notifier.deliver_cancels(CALL, [KIM_A, LEE], "rejected")
    assert report.outcomes == {"cancel_sent": 2} and report.recipients == 2


# -- ID tokens ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def verifier() -> Iterator[IdTokenVerifier]:
    app = init_firebase_app("demo-unit", "http://127.0.0.1:9", name="unit-id-tokens")
    yield IdTokenVerifier(app)
    firebase_admin.delete_app(app)


def test_unsigned_tokens_pass_only_with_the_auth_emulator(verifier, monkeypatch):
    token = id_token("kim", project="demo-unit")
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099")
    assert verifier.uid(token) == "kim"
    for bad in ("", "not-a-jwt", id_token("kim", project="another-project")):
        with pytest.raises(InvalidIdToken):
            verifier.uid(bad)
    # in production an unsigned token is refused before any key is fetched (no network here)
    monkeypatch.delenv("FIREBASE_AUTH_EMULATOR_HOST")
    with pytest.raises(InvalidIdToken):
        verifier.uid(token)
