"""Sends pushes through firebase-admin (FCM HTTP v1) and classifies each answer.

FCM v1 has no batch endpoint: one request per device, all sent concurrently by
`messaging.send_each_async` over one reused aiohttp connection pool (fcm_transport.py). When
FCM_ENDPOINT is set (local runs and tests) the requests go to that base URL instead of
https://fcm.googleapis.com.

What an error means for the token (after matrix-org/sygnal's rules):
- UNREGISTERED, or INVALID_ARGUMENT that names the registration token: the token is dead; delete it.
- UNAVAILABLE, INTERNAL, timeouts, connection errors: transient; retry while the call still rings.
- QUOTA_EXCEEDED, SENDER_ID_MISMATCH, THIRD_PARTY_AUTH_ERROR, auth/permission errors and any other
  INVALID_ARGUMENT: our configuration or our message is wrong; report, do not retry or delete.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta

import firebase_admin
import google.auth.credentials
from firebase_admin import _http_client, credentials, exceptions, messaging

from functions.core.push import Push
from functions.notifier.adapters.background_loop import BackgroundLoop
from functions.notifier.adapters.fcm_transport import AiohttpFcmClient

BATCH_LIMIT = 500  # firebase-admin's cap per send_each call


class Outcome(enum.StrEnum):
    SENT = "sent"
    DEAD_TOKEN = "dead_token"
    TRANSIENT = "transient"
    REJECTED = "rejected"  # configuration, quota or message problem: report, don't retry


@dataclass(frozen=True, slots=True)
class SendResult:
    push: Push
    outcome: Outcome
    message_id: str = ""
    error_code: str = ""
    detail: str = ""
    retry_after: float | None = None


class _LocalCredential(credentials.Base):
    """For a local FCM endpoint: a fixed bearer token, no Google sign-in (nothing to sign in to)."""

    def get_credential(self) -> google.auth.credentials.Credentials:
        return _StaticToken()


class _StaticToken(google.auth.credentials.Credentials):
    def __init__(self) -> None:
        super().__init__()
        self.token = "local-fcm-token"
        self.expiry = None

    def refresh(self, request: object) -> None:  # nothing to refresh
        self.token = "local-fcm-token"

    @property
    def valid(self) -> bool:
        return True


class _NotBuilt:
    """Stands in for firebase-admin's HttpxAsyncClient while its messaging service is built."""

    def __init__(self, **_: object) -> None:
        pass


def _messaging_service(app: firebase_admin.App) -> messaging._MessagingService:
    """firebase-admin's messaging service for the app, built without its httpx client (an
    AsyncClient with two retry transports: two loads of the CA bundle and the first import of
    httpcore, ~70 ms of the notifier's first event), which _send_through_aiohttp replaces at
    once. Measured by `make bench` (cold start): 1.33x -> 1.18x of a bare import."""
    real = _http_client.HttpxAsyncClient
    _http_client.HttpxAsyncClient = _NotBuilt  # type: ignore[misc, assignment]
    try:
        return messaging._get_messaging_service(app)
    finally:
        _http_client.HttpxAsyncClient = real  # type: ignore[misc]


def _send_through_aiohttp(app: firebase_admin.App) -> None:
    """Put AiohttpFcmClient on firebase-admin's FCM send path (fcm_transport.py says why). It
    has no retries of its own either: firebase-admin's would retry 500/503 for up to 7 s,
    ignoring Retry-After on the async path, spending the ring window blind; the notifier
    retries transient failures itself while the call still rings."""
    service = _messaging_service(app)
    service._async_client = AiohttpFcmClient(app.credential.get_credential())


def init_firebase_app(
    project: str, fcm_endpoint: str | None, name: str = "notifier"
) -> firebase_admin.App:
    if fcm_endpoint:
        app = firebase_admin.initialize_app(_LocalCredential(), {"projectId": project}, name=name)
        service = _messaging_service(app)
        # firebase-admin has no public option for the endpoint; this attribute is its send URL.
        service._fcm_url = f"{fcm_endpoint}/v1/projects/{project}/messages:send"
    else:
        app = firebase_admin.initialize_app(options={"projectId": project}, name=name)
    _send_through_aiohttp(app)
    return app


def to_message(push: Push) -> messaging.Message:
    visible = push.title is not None
    return messaging.Message(
        token=push.token,
        data=push.data,
        notification=messaging.Notification(title=push.title, body=push.body) if visible else None,
        android=messaging.AndroidConfig(
            priority="high",
            ttl=timedelta(seconds=push.ttl_seconds),
            collapse_key=push.collapse_key,
            notification=messaging.AndroidNotification(
                channel_id=push.channel_id, tag=push.tag, sound="default"
            )
            if visible
            else None,
        ),
        apns=messaging.APNSConfig(
            headers=push.apns_headers,
            payload=messaging.APNSPayload(
                aps=messaging.Aps(content_available=True)
                if push.apns_background
                else messaging.Aps(sound="default")
            ),
        ),
    )


def _retry_after(error: exceptions.FirebaseError) -> float | None:
    response = getattr(error, "http_response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify(push: Push, error: exceptions.FirebaseError) -> SendResult:
    code = getattr(error, "code", "") or ""
    fcm_code = type(error).__name__
    detail = str(error)[:200]
    if isinstance(error, messaging.UnregisteredError):
        return SendResult(push, Outcome.DEAD_TOKEN, error_code="UNREGISTERED", detail=detail)
    if isinstance(error, exceptions.InvalidArgumentError):
        if "registration token" in detail.lower():
            return SendResult(
                push, Outcome.DEAD_TOKEN, error_code="INVALID_ARGUMENT", detail=detail
            )
        return SendResult(push, Outcome.REJECTED, error_code="INVALID_ARGUMENT", detail=detail)
    if isinstance(
        error,
        messaging.QuotaExceededError
        | messaging.SenderIdMismatchError
        | messaging.ThirdPartyAuthError,
    ):
        return SendResult(push, Outcome.REJECTED, error_code=fcm_code, detail=detail)
    if isinstance(
        error,
        exceptions.UnavailableError
        | exceptions.InternalError
        | exceptions.DeadlineExceededError
        | exceptions.UnknownError,
    ):
        return SendResult(
            push, Outcome.TRANSIENT, error_code=code, detail=detail, retry_after=_retry_after(error)
        )
    return SendResult(push, Outcome.REJECTED, error_code=code or fcm_code, detail=detail)


class FcmSender:
    def __init__(self, app: firebase_admin.App, loop: BackgroundLoop, timeout: float = 10.0):
        self.app = app
        self.loop = loop
        self.timeout = timeout

    def warm(self) -> None:
        """Fetch the access token and build the TLS context before the first call needs them."""
        client = messaging._get_messaging_service(self.app)._async_client
        if isinstance(client, AiohttpFcmClient):
            self.loop.run(client.warm(), timeout=self.timeout)

    def close(self) -> None:
        client = messaging._get_messaging_service(self.app)._async_client
        self.loop.run(client.aclose(), timeout=self.timeout)

    def send(self, pushes: list[Push]) -> list[SendResult]:
        if not pushes:
            return []
        return self.loop.run(self._send(pushes), timeout=self.timeout * 3)

    async def _send(self, pushes: list[Push]) -> list[SendResult]:
        results: list[SendResult] = []
        for start in range(0, len(pushes), BATCH_LIMIT):
            chunk = pushes[start : start + BATCH_LIMIT]
            batch = await messaging.send_each_async([to_message(p) for p in chunk], app=self.app)
            for push, response in zip(chunk, batch.responses, strict=True):
                if response.success:
                    results.append(SendResult(push, Outcome.SENT, message_id=response.message_id))
                else:
                    results.append(classify(push, response.exception))
        return results
