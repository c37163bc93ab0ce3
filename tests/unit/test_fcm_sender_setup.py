"""The notifier's firebase-admin set-up: the FCM send path is aiohttp's, and firebase-admin's own
httpx client, which it would replace at once, is never built (its CA-bundle loads cost the first
ringing call ~70 ms: docs/benchmarks.md, cold start)."""

from __future__ import annotations

import itertools

import firebase_admin
from firebase_admin import _http_client, messaging

from functions.notifier.adapters.fcm_sender import init_firebase_app
from functions.notifier.adapters.fcm_transport import AiohttpFcmClient

_names = itertools.count()


def test_the_httpx_client_is_not_built_and_aiohttp_sends(monkeypatch):
    built: list[object] = []

    class Recorder:
        def __init__(self, **kwargs: object) -> None:
            built.append(kwargs)

    monkeypatch.setattr(_http_client, "HttpxAsyncClient", Recorder)
    app = init_firebase_app("demo-p", "http://127.0.0.1:9", name=f"setup-{next(_names)}")
    try:
        service = messaging._get_messaging_service(app)
        assert built == []
        assert isinstance(service._async_client, AiohttpFcmClient)
        assert service._fcm_url == "http://127.0.0.1:9/v1/projects/demo-p/messages:send"
        assert _http_client.HttpxAsyncClient is Recorder  # put back as it was
    finally:
        firebase_admin.delete_app(app)
