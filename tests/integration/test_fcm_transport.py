"""firebase-admin's FCM sends through AiohttpFcmClient
(functions/notifier/adapters/fcm_transport.py),
against the local FCM HTTP v1 endpoint: a large fan-out arrives whole and intact, the access
token is refreshed once however many requests wait for it, and every failure of the HTTP layer
comes back as the outcome the notifier acts on."""

from __future__ import annotations

import socket
import time

import google.auth.credentials
import pytest

from devtools.fake_fcm import FakeFcmServer, Fault
from functions.core.call_event import CallEvent, Kind
from functions.core.push import Push, incoming_push
from functions.core.recipients import Device, Recipient
from functions.notifier.adapters.background_loop import BackgroundLoop
from functions.notifier.adapters.fcm_sender import FcmSender, Outcome, init_firebase_app


class CountingToken(google.auth.credentials.Credentials):
    """A credential that starts expired and counts its refreshes; each gives a new token."""

    def __init__(self) -> None:
        super().__init__()
        self.refreshes = 0
        self.token = None

    def refresh(self, request: object) -> None:
        time.sleep(0.05)  # as long as a metadata-server round trip, so waiters pile up
        self.refreshes += 1
        self.token = f"token-{self.refreshes}"

    @property
    def valid(self) -> bool:
        return self.token is not None


class CountingCredential:
    def __init__(self) -> None:
        self.google = CountingToken()

    def get_credential(self) -> CountingToken:
        return self.google


def pushes(count: int, prefix: str = "fan") -> list[Push]:
    now = time.time()
    event = CallEvent(
        Kind.RINGING, "127.0.0.1:7099", 1, f"{prefix}.{now}", "01026132471", "김철수",
        "07045144801", "PJSIP/DKCT-000001b1", now, now,
    )  # fmt: skip
    recipient = Recipient("u1", "1010", "데모상사", "대표번호", "070-4514-4801")
    return [
        incoming_push(
            event, recipient, Device(f"d{i}", f"{prefix}-tok-{i}"), now=now, ring_window=60
        )
        for i in range(count)
    ]


@pytest.fixture
def fake():
    with FakeFcmServer() as server:
        yield server


_names = iter(range(10_000))
_open: list[FcmSender] = []


@pytest.fixture(autouse=True)
def close_senders():
    yield
    while _open:
        _open.pop().close()


def sender_for(url: str, credential: CountingCredential | None = None, timeout: float = 10.0):
    app = init_firebase_app("demo-transport", url, name=f"transport-{next(_names)}")
    if credential is not None:
        from firebase_admin import messaging

        from functions.notifier.adapters.fcm_transport import AiohttpFcmClient

        messaging._get_messaging_service(app)._async_client = AiohttpFcmClient(
            credential.get_credential(), timeout=timeout
        )
    sender = FcmSender(app, BackgroundLoop("fcm-test"), timeout=timeout)
    _open.append(sender)
    return sender


def test_a_500_device_fan_out_arrives_whole_and_intact(fake):
    sender = sender_for(fake.url)
    sent = pushes(500)
    results = sender.send(sent)
    assert [r.outcome for r in results] == [Outcome.SENT] * 500
    assert [r.push.token for r in results] == [p.token for p in sent]  # answers stay in order
    assert len({r.message_id for r in results}) == 500
    messages = fake.sent_messages()
    assert sorted(m["token"] for m in messages) == sorted(p.token for p in sent)
    first = next(m for m in messages if m["token"] == sent[0].token)
    assert first["data"] == sent[0].data  # Korean text and every data field, byte for byte
    assert first["android"]["priority"] == "high" and first["android"]["ttl"].endswith("s")
    assert all(r["authorized"] for r in fake.requests())


def test_an_expired_token_is_refreshed_once_for_all_waiting_requests(fake):
    credential = CountingCredential()
    sender = sender_for(fake.url, credential)
    results = sender.send(pushes(50))
    assert [r.outcome for r in results] == [Outcome.SENT] * 50
    assert credential.google.refreshes == 1
    assert {r["bearer"] for r in fake.requests()} == {"token-1"}


def test_a_401_refreshes_the_token_and_sends_again_once(fake):
    credential = CountingCredential()
    sender = sender_for(fake.url, credential)
    sender.warm()  # token-1, before any call
    assert credential.google.refreshes == 1
    one = pushes(1, "auth")
    fake.script(one[0].token, [Fault(status=401, error_code=None, message="invalid credentials")])
    [result] = sender.send(one)
    assert result.outcome is Outcome.SENT
    assert [(r["status"], r["bearer"]) for r in fake.requests()] == [
        (401, "token-1"),
        (200, "token-2"),
    ]


def test_a_401_that_stays_is_reported_after_one_refresh(fake):
    credential = CountingCredential()
    sender = sender_for(fake.url, credential)
    one = pushes(1, "auth2")
    fake.script(one[0].token, [Fault(status=401, error_code=None)] * 5)
    [result] = sender.send(one)
    assert result.outcome is Outcome.REJECTED
    assert len(fake.requests()) == 2 and credential.google.refreshes == 2


def test_fcm_error_answers_map_to_the_notifiers_outcomes(fake):
    batch = pushes(3, "errors")
    fake.script(batch[0].token, [Fault(status=404, error_code="UNREGISTERED")])
    fake.script(batch[1].token, [Fault(status=503, error_code="UNAVAILABLE", retry_after=2)])
    results = sender_for(fake.url).send(batch)
    assert [r.outcome for r in results] == [Outcome.DEAD_TOKEN, Outcome.TRANSIENT, Outcome.SENT]
    assert results[1].retry_after == 2.0
    assert results[0].error_code == "UNREGISTERED"


def test_no_answer_in_time_is_transient_and_does_not_hold_up_the_others(fake):
    batch = pushes(3, "slow")
    fake.script(batch[0].token, [Fault(status=200, error_code=None, delay=2.0)])
    started = time.monotonic()
    results = sender_for(fake.url, CountingCredential(), timeout=0.5).send(batch)
    assert time.monotonic() - started < 1.5
    assert [r.outcome for r in results] == [Outcome.TRANSIENT, Outcome.SENT, Outcome.SENT]
    assert "Timed out" in results[0].detail


def test_an_endpoint_that_refuses_connections_is_transient():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the send: nothing listens there
    results = sender_for(f"http://127.0.0.1:{port}").send(pushes(2, "refused"))
    assert [r.outcome for r in results] == [Outcome.TRANSIENT, Outcome.TRANSIENT]
    assert "connection" in results[0].detail.lower()
