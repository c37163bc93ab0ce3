"""Prototypes of the changes the profiles point at, applied by monkeypatching inside a benchmark's
own process, so each proposal's gain is measured in the same run as the code it would replace.

NOT product code: the owners of functions/ decide whether and how to adopt them (see
docs/benchmarks.md, "What the numbers drove"). A prototype is retired once the product adopts it
(the ingest `_validate` one was, and the cold-start one, firebase-admin's messaging service built
without its httpx client, adopted as fcm_sender.py `_messaging_service` in 2958842: their figures
stay in the proposals' text).
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
