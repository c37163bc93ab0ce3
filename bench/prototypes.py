"""Prototypes of the changes the profiles point at, applied by monkeypatching inside a benchmark's
own process, so each proposal's gain is measured in the same run as the code it would replace.

NOT product code: the owners of functions/ decide whether and how to adopt them (see
docs/benchmarks.md, "What the numbers drove"). Each prototype keeps the original's behaviour; the
ingest one is checked for equal output on the benchmark's frames before it is timed.
"""

from __future__ import annotations

from typing import Any

_STR_ONLY = frozenset({str})


# ingest: functions/core/frames.py `_validate` ----------------------------------------------------


def install_fast_validate() -> None:
    """frames._validate without the per-field copy when every `data` value is a string (every
    frame amiws sends): one C-level pass (`{*map(type, values)}`) instead of a Python loop with an
    isinstance and a dict store per field; anything else falls back to the original."""
    from functions.core import frames

    original = frames._validate
    frame_cls = frames.Frame

    def fast_validate(obj: object, repaired: bool) -> Any:
        if type(obj) is dict:
            data = obj.get("data")
            frame_type = obj.get("type")
            server_id = obj.get("server_id", 1)
            if (
                type(data) is dict
                and type(frame_type) is int
                and type(server_id) is int
                and {*map(type, data.values())} <= _STR_ONLY
            ):
                name = obj.get("server_name")
                return frame_cls(
                    frame_type, server_id, name if type(name) is str else "", data, repaired, ()
                )
        return original(obj, repaired)

    fast_validate.original = original  # type: ignore[attr-defined]
    frames._validate = fast_validate  # type: ignore[assignment]


def uninstall_fast_validate() -> None:
    from functions.core import frames

    original = getattr(frames._validate, "original", None)
    if original is not None:
        frames._validate = original  # type: ignore[assignment]


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
