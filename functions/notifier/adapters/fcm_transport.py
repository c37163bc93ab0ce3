"""The HTTP client under firebase-admin's FCM service: aiohttp instead of httpx.

firebase-admin builds, validates and encodes the messages, sends them concurrently
(`messaging.send_each_async`) and maps FCM's error answers to its typed exceptions; it does the
HTTP through one object, `_MessagingService._async_client`, whose only use on the send path is
`await request("post", url=..., headers=..., json=...)`: an httpx.Response back, an httpx
error raised. This class keeps that contract and does the HTTP with aiohttp.

Why (docs/benchmarks.md, fan-out): httpx's client layers (request building, auth flow, cookie
extraction) and httpcore's pool bookkeeping, which is O(pool x waiting) per request under a
burst, cost ~2 ms of CPU per push: 500 devices took 1.1 s against an endpoint answering in
50 ms. aiohttp's C parser and connection pool send the same 500 in ~0.2-0.3 s.

The trade: aiohttp speaks HTTP/1.1, one request per connection at a time, where firebase-admin's
httpx client would multiplex over one HTTP/2 connection. The pool holds up to
MAX_CONNECTIONS keep-alive connections, so a 500-device fan-out never waits for a free one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
import certifi
import google.auth.credentials
import google.auth.transport.requests
import httpx
import orjson

MAX_CONNECTIONS = 500  # = firebase-admin's 500 messages per send_each: a fan-out never queues
KEEPALIVE_SECONDS = 30.0  # idle connections kept for the next call (aiohttp's default is 15 s)
_THIRD_PARTY_AUTH = b"THIRD_PARTY_AUTH_ERROR"


class AiohttpFcmClient:
    """Stands in for firebase-admin's `HttpxAsyncClient` on the FCM send path."""

    def __init__(
        self,
        credential: google.auth.credentials.Credentials,
        timeout: float = 10.0,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._credential = credential
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._refresh_lock: asyncio.Lock | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        # Created on first use, inside the loop that will run every request (BackgroundLoop).
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=KEEPALIVE_SECONDS,
                ssl=ssl.create_default_context(cafile=certifi.where()),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
            )
        return self._session

    async def _token(self, *, force: bool = False) -> str:
        """The OAuth access token, refreshed in a thread (google-auth refreshes synchronously)
        by one request at a time while the others wait for it."""
        if not force and self._credential.valid and self._credential.token:
            return str(self._credential.token)
        if self._refresh_lock is None:
            self._refresh_lock = asyncio.Lock()
        stale = self._credential.token
        async with self._refresh_lock:
            if self._credential.token == stale or not self._credential.valid:
                request = google.auth.transport.requests.Request()
                await asyncio.to_thread(self._credential.refresh, request)
        return str(self._credential.token)

    async def warm(self) -> None:
        """Token and TLS context before the first call needs them."""
        self._session_now()
        await self._token()

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers: dict[str, str] = dict(kwargs.get("headers") or {})
        body = kwargs.get("json")
        status, answer_headers, content = await self._send(method, url, headers, body, False)
        if status == 401 and _THIRD_PARTY_AUTH not in content:
            # Our access token expired or was revoked: refresh it once and try again. A 401 that
            # names THIRD_PARTY_AUTH_ERROR is about the APNs/Web Push credentials in the Firebase
            # project; a new token changes nothing, so it is answered as it is.
            status, answer_headers, content = await self._send(method, url, headers, body, True)
        response = httpx.Response(status, headers=answer_headers, content=content)
        if status >= 400:
            response.request = httpx.Request(method, url)
            raise httpx.HTTPStatusError(
                f"FCM answered {status}", request=response.request, response=response
            )
        return response

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str], body: Any, refresh: bool
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        token = await self._token(force=refresh)
        try:
            async with self._session_now().request(
                method,
                url,
                data=orjson.dumps(body) if body is not None else None,
                headers={
                    **headers,
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json; charset=UTF-8",
                },
            ) as answer:
                return answer.status, list(answer.raw_headers), await answer.read()
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"no answer from FCM within {self._timeout.total} s") from exc
        except aiohttp.ClientError as exc:
            # Connection refused or reset, server gone mid-answer: firebase-admin maps a
            # ConnectError to UnavailableError, which the notifier retries while it rings.
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
