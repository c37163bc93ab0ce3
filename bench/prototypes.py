"""Prototypes of the changes the profiles point at, applied by monkeypatching inside a benchmark's
own process, so each proposal's gain is measured in the same run as the code it would replace.

NOT product code: the owners of functions/ decide whether and how to adopt them (see
docs/benchmarks.md, "What the numbers drove"). A prototype is retired once the product adopts it
(the ingest `_validate` one was: its figures stay in the proposal's text).
"""

from __future__ import annotations

from typing import Any

# fan-out: firebase-admin's own httpx client, for comparison with fcm_transport.py ----------------


def fcm_client_with_limits(app: Any, **transport: Any) -> None:
    """Put back a firebase-admin httpx client (its retries off) in place of AiohttpFcmClient,
    with transport options (httpx `limits`, `http1`/`http2`) passed to the underlying
    `httpx.AsyncHTTPTransport`: what the notifier sent through before fcm_transport.py."""
    import httpx
    from firebase_admin import _http_client, messaging
    from firebase_admin._retry import HttpxRetry, HttpxRetryTransport

    service = messaging._get_messaging_service(app)
    client = _http_client.HttpxAsyncClient(
        credential=service._credential,
        timeout=app.options.get("httpTimeout", _http_client.DEFAULT_TIMEOUT_SECONDS),
        retry_config=HttpxRetry(max_retries=0),
    )
    retry = HttpxRetryTransport(retry=HttpxRetry(max_retries=0))
    retry._wrapped_transport = httpx.AsyncHTTPTransport(retries=0, **transport)
    mounts = {"http://": retry, "https://": retry}
    inner = client._async_client
    client._async_client = httpx.AsyncClient(
        http2=transport.get("http2", True),
        timeout=inner.timeout,
        headers=inner.headers,
        auth=inner._auth,
        mounts=mounts,
    )
    service._async_client = client


# cold start: firebase-admin's messaging service without the httpx client fcm_sender replaces ----


def messaging_service_without_httpx_client() -> None:
    """Build firebase-admin's `_MessagingService` without its `HttpxAsyncClient` (an httpx
    AsyncClient with two retry transports: two `ssl.create_default_context()` loads of the CA
    bundle and the first import of httpcore), which fcm_sender.py's `_send_through_aiohttp`
    replaces with AiohttpFcmClient right after: what the notifier's first event would save if
    init_firebase_app did not build it. Applied in the notifier process
    (bench/coldstart_proto.py)."""
    from firebase_admin import _http_client, messaging

    original = messaging._MessagingService.__init__

    class _NotBuilt:
        def __init__(self, **_: Any) -> None:
            pass

    def init(self: Any, app: Any) -> None:
        real = _http_client.HttpxAsyncClient
        _http_client.HttpxAsyncClient = _NotBuilt  # type: ignore[misc, assignment]
        try:
            original(self, app)
        finally:
            _http_client.HttpxAsyncClient = real  # type: ignore[misc]

    messaging._MessagingService.__init__ = init  # type: ignore[method-assign]
