"""The fake FCM endpoint, driven by the real firebase-admin where it matters."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import firebase_admin
import google.auth.credentials
import httpx
import pytest
import requests.adapters
from firebase_admin import _http_client, credentials, exceptions, messaging
from firebase_admin._retry import HttpxRetry

from devtools.fake_fcm import FakeFcmServer, Fault

PROJECT = "demo-project"
REPO = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": "Bearer test-token"}

# firebase-admin 7.7 deprecates Message.token in favour of Message.fid; the app still
# registers FCM registration tokens, so the tests keep using token=.
pytestmark = pytest.mark.filterwarnings("ignore:Message.token is deprecated:DeprecationWarning")


class _StaticToken(google.auth.credentials.Credentials):
    """A bearer token that "refreshes" to itself: any 401 makes firebase-admin refresh,
    and AnonymousCredentials (no header at all) cannot."""

    def __init__(self) -> None:
        super().__init__()
        self.token = "fake-access-token"

    def refresh(self, request: Any) -> None:
        self.token = "fake-access-token"


class _FakeCredential(credentials.Base):
    def get_credential(self) -> google.auth.credentials.Credentials:
        return _StaticToken()


def _point_at(fake: FakeFcmServer, *, retries: bool = True) -> firebase_admin.App:
    app = firebase_admin.initialize_app(
        credential=_FakeCredential(), options={"projectId": PROJECT}, name=uuid.uuid4().hex
    )
    svc = messaging._get_messaging_service(app)
    svc._fcm_url = fake.send_url(PROJECT)  # private: firebase-admin has no public override
    if not retries:
        # How to switch firebase-admin's own retries off (both paths), for our policy.
        for prefix in ("http://", "https://", "https://fcm.googleapis.com"):
            svc._client.session.mount(
                prefix,
                requests.adapters.HTTPAdapter(
                    pool_connections=100, pool_maxsize=100, max_retries=0
                ),
            )
        svc._async_client = _http_client.HttpxAsyncClient(
            credential=svc._credential,
            timeout=svc._client.timeout,
            retry_config=HttpxRetry(max_retries=0),
        )
    return app


@pytest.fixture
def fake() -> Iterator[FakeFcmServer]:
    with FakeFcmServer() as server:
        yield server


@pytest.fixture
def point_at(fake: FakeFcmServer) -> Iterator[Callable[..., firebase_admin.App]]:
    apps: list[firebase_admin.App] = []

    def make(*, retries: bool = True) -> firebase_admin.App:
        apps.append(_point_at(fake, retries=retries))
        return apps[-1]

    yield make
    for app in apps:
        messaging._get_messaging_service(app)._client.close()  # delete_app leaves it open
        # RuntimeError: its httpx client is bound to a test's event loop, closed by now.
        with contextlib.suppress(RuntimeError):
            firebase_admin.delete_app(app)


@pytest.fixture
def app(point_at: Callable[..., firebase_admin.App]) -> firebase_admin.App:
    return point_at()


async def _send_each_async(
    messages: list[messaging.Message], app: firebase_admin.App
) -> messaging.BatchResponse:
    """send_each_async, then close the app's httpx client in this loop: it is bound to
    the loop that first used it, and delete_app cannot close it once that loop is gone."""
    try:
        return await messaging.send_each_async(messages, app=app)
    finally:
        await messaging._get_messaging_service(app)._async_client.aclose()


def _incoming_call(token: str) -> messaging.Message:
    key = "call-1700000000.42"
    return messaging.Message(
        token=token,
        notification=messaging.Notification(title="수신전화", body="홍길동"),
        data={"type": "incoming_call", "linkedid": "1700000000.42", "call_type": "external"},
        android=messaging.AndroidConfig(
            priority="high",
            ttl=datetime.timedelta(seconds=30),
            collapse_key=key,
            notification=messaging.AndroidNotification(channel_id="incoming_call_channel", tag=key),
        ),
        apns=messaging.APNSConfig(
            headers={"apns-priority": "10", "apns-collapse-id": key},
            payload=messaging.APNSPayload(aps=messaging.Aps(sound="default")),
        ),
    )


def _post(fake: FakeFcmServer, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        fake.send_url(PROJECT), json=body, headers=AUTH if headers is None else headers
    )


def test_send_is_answered_and_recorded_exactly(fake: FakeFcmServer, app: firebase_admin.App):
    before = time.time()
    name = messaging.send(_incoming_call("tok-abc"), app=app)

    assert re.fullmatch(rf"projects/{PROJECT}/messages/0:\d+%[0-9a-f]{{16}}", name)
    key = "call-1700000000.42"
    assert fake.sent_messages() == [
        {
            "token": "tok-abc",
            "notification": {"title": "수신전화", "body": "홍길동"},
            "data": {"type": "incoming_call", "linkedid": "1700000000.42", "call_type": "external"},
            "android": {
                "priority": "high",
                "ttl": "30s",
                "collapse_key": key,
                "notification": {"channel_id": "incoming_call_channel", "tag": key},
            },
            "apns": {
                "headers": {"apns-priority": "10", "apns-collapse-id": key},
                "payload": {"aps": {"sound": "default"}},
            },
        }
    ]
    [record] = fake.requests()
    assert before <= record["time"] <= time.time()
    assert record["method"] == "POST"
    assert record["path"] == f"/v1/projects/{PROJECT}/messages:send"
    assert record["project"] == PROJECT
    assert record["authorized"] is True
    assert record["headers"]["x-goog-api-format-version"] == "2"
    assert record["headers"]["x-firebase-client"].startswith("fire-admin-python/")
    assert record["headers"]["content-type"] == "application/json"
    assert record["body"] == {"message": fake.sent_messages()[0]}
    assert (record["target"], record["validate_only"]) == ("tok-abc", False)
    assert record["status"] == 200
    assert record["response"] == {"name": name}
    assert fake.wait_for(1, timeout=0.1) == fake.sent_messages()


def test_validate_only_is_answered_but_not_sent(fake: FakeFcmServer, app: firebase_admin.App):
    name = messaging.send(_incoming_call("tok-abc"), dry_run=True, app=app)
    assert name == f"projects/{PROJECT}/messages/fake_message_id"
    assert fake.sent_messages() == []
    assert fake.requests()[0]["validate_only"] is True


def test_dead_token_raises_unregistered(fake: FakeFcmServer, app: firebase_admin.App):
    with pytest.raises(messaging.UnregisteredError):
        messaging.send(messaging.Message(token="dead-123"), app=app)
    assert fake.requests()[0]["response"] == {
        "error": {
            "code": 404,
            "message": "Requested entity was not found.",
            "status": "NOT_FOUND",
            "details": [
                {
                    "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                    "errorCode": "UNREGISTERED",
                }
            ],
        }
    }
    assert fake.sent_messages() == []


def test_firebase_admin_retries_a_scripted_503_itself(fake: FakeFcmServer, app: firebase_admin.App):
    # firebase-admin retries 500/503 up to 4 times (5 attempts), sleeping 0, 1, 2, 4 s.
    fake.script("tok-r", [Fault(status=503, error_code="UNAVAILABLE")])
    messaging.send(messaging.Message(token="tok-r", data={"k": "v"}), app=app)
    statuses = [r["status"] for r in fake.requests()]
    assert statuses == [503, 200]
    assert fake.requests()[0]["response"]["error"]["details"][0]["errorCode"] == "UNAVAILABLE"
    assert len(fake.sent_messages()) == 1


def test_retry_after_is_honoured_by_send_but_not_by_send_each_async(
    fake: FakeFcmServer, point_at: Callable[..., firebase_admin.App]
):
    fault = Fault(status=503, error_code="UNAVAILABLE", retry_after=1)

    fake.script("tok-r", [fault])
    messaging.send(messaging.Message(token="tok-r"), app=point_at())
    first, second = fake.requests()
    assert 0.9 <= second["time"] - first["time"] < 2.5  # urllib3 sleeps Retry-After

    fake.clear()
    fake.script("tok-r", [fault])
    batch = asyncio.run(_send_each_async([messaging.Message(token="tok-r")], point_at()))
    assert batch.success_count == 1
    first, second = fake.requests()
    assert second["time"] - first["time"] < 0.9  # HttpxRetry ignores it; first retry at once


def test_retries_can_be_switched_off(
    fake: FakeFcmServer, point_at: Callable[..., firebase_admin.App]
):
    app = point_at(retries=False)
    fake.script("tok-r", [Fault(503), Fault(503)])
    with pytest.raises(exceptions.UnavailableError):
        messaging.send(messaging.Message(token="tok-r"), app=app)
    assert len(fake.requests()) == 1

    batch = asyncio.run(_send_each_async([messaging.Message(token="tok-r")], app))
    assert isinstance(batch.responses[0].exception, exceptions.UnavailableError)
    assert len(fake.requests()) == 2
    messaging.send(messaging.Message(token="tok-r"), app=app)  # script used up: success
    assert [r["status"] for r in fake.requests()] == [503, 503, 200]


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        ({"token": "t", "data": {"n": 1}}, "message.data[n].value"),
        ({"token": "t", "data": {"ok": "x", "flag": True}}, "TYPE_STRING"),
        ({"token": "t", "topic": "news"}, "Exactly one of"),
        ({"data": {"a": "b"}}, "Exactly one of"),
        ({"token": "t", "android": {"ttl": "60"}}, "Illegal duration"),
        ({"token": "t", "android": {"ttl": "1.5m"}}, "Illegal duration"),
        ({"token": "t", "android": {"priority": "urgent"}}, "priority"),
        ({"token": "t", "data": {"from": "x"}}, "Invalid data payload key"),
        ({"token": "t", "data": {"google.x": "y"}}, "Invalid data payload key"),
        ({"token": "t", "extra": 1}, 'Unknown name "extra"'),
        ({"token": "t", "data": {"blob": "x" * 4100}}, "Message is too big"),
        ({"token": "bad-token"}, "not a valid FCM registration token"),
    ],
)
def test_invalid_messages_are_rejected_like_fcm(fake: FakeFcmServer, message: Any, fragment: str):
    # Sent raw: firebase-admin validates some of this client-side and never sends it.
    response = _post(fake, {"message": message})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["details"] == [
        {
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": "INVALID_ARGUMENT",
        }
    ]
    assert fragment in error["message"]
    assert fake.sent_messages() == []


@pytest.mark.parametrize("ttl", ["0s", "60s", "59.5s", "2419200s", "1.000000001s"])
def test_valid_ttls_pass(fake: FakeFcmServer, ttl: str):
    assert _post(fake, {"message": {"token": "t", "android": {"ttl": ttl}}}).status_code == 200


def test_missing_bearer_token_is_unauthenticated(fake: FakeFcmServer):
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        response = _post(fake, {"message": {"token": "t"}}, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    assert [r["authorized"] for r in fake.requests()] == [False, False, False]


async def test_send_each_async_fans_out_to_50_tokens(fake: FakeFcmServer, app: firebase_admin.App):
    fake.set_delay(0.05)
    tokens = [f"tok-{i:02d}" for i in range(49)] + ["dead-1"]
    started = time.perf_counter()
    batch = await _send_each_async(
        [messaging.Message(token=t, data={"type": "incoming_call"}) for t in tokens], app
    )
    elapsed = time.perf_counter() - started

    assert batch.success_count == 49
    assert isinstance(batch.responses[-1].exception, messaging.UnregisteredError)
    assert sorted(m["token"] for m in fake.sent_messages()) == tokens[:49]
    assert elapsed < 2.0  # concurrent: 50 x 50 ms one after another would be 2.5 s


async def test_many_concurrent_connections_share_the_delay(fake: FakeFcmServer):
    # Raw asyncio streams: httpx's own connection pool costs more CPU than the server.
    fake.set_delay(0.1)
    host, port = fake.url.removeprefix("http://").split(":")
    body = b'{"message": {"token": "t"}}'
    request = (
        f"POST /v1/projects/{PROJECT}/messages:send HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer x\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await writer.wait_closed()
        return head.split(b"\r\n", 1)[0]

    started = time.perf_counter()
    lines = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(300))), 10)
    assert set(lines) == {b"HTTP/1.1 200 OK"}
    assert time.perf_counter() - started < 1.5  # one after another: 30 s


def test_control_api_over_http(fake: FakeFcmServer):
    with httpx.Client(base_url=fake.url) as client:
        assert client.get("/__fake/health").json() == {"ok": True}
        faults = [{"status": 503, "error_code": "UNAVAILABLE", "retry_after": 1}]
        assert client.post("/__fake/script", json={"token": "t1", "faults": faults}).is_success
        assert client.post("/__fake/delay", json={"seconds": 0.05}).is_success

        started = time.perf_counter()
        failed = client.post(
            f"/v1/projects/{PROJECT}/messages:send", json={"message": {"token": "t1"}}, headers=AUTH
        )
        assert time.perf_counter() - started >= 0.05
        assert failed.status_code == 503
        assert failed.headers["retry-after"] == "1"
        assert failed.json()["error"]["status"] == "UNAVAILABLE"
        ok = client.post(
            f"/v1/projects/{PROJECT}/messages:send", json={"message": {"token": "t1"}}, headers=AUTH
        )
        assert ok.status_code == 200

        records = client.get("/__fake/messages").json()
        assert [(r["target"], r["status"]) for r in records] == [("t1", 503), ("t1", 200)]
        assert client.delete("/__fake/messages").is_success
        assert client.get("/__fake/messages").json() == []
        assert client.post("/__fake/script", json={"faults": []}).status_code == 400
        assert client.get("/__fake/nothing").status_code == 404


def test_wait_for_times_out(fake: FakeFcmServer):
    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        fake.wait_for(1, timeout=0.05)
    assert time.perf_counter() - started < 1


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output from the CLI in time"
    return proc.stdout.readline()


def test_cli_prints_ready_line_and_pushes_and_stops_on_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.fake_fcm", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready = json.loads(_read_line(proc, 10))
        assert ready["url"].startswith("http://127.0.0.1:")
        message = {
            "token": "abcdefghijklmnopqrstuvwxyz",
            "notification": {"title": "수신전화", "body": "홍길동"},
            "data": {"type": "incoming_call", "linkedid": "1700000000.42"},
        }
        response = httpx.post(
            f"{ready['url']}/v1/projects/{PROJECT}/messages:send",
            json={"message": message},
            headers=AUTH,
        )
        assert response.status_code == 200
        line = _read_line(proc, 5)
        assert "200" in line and "abcdefgh" in line and "수신전화" in line
        assert "type=incoming_call" in line and "linkedid=1700000000.42" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
