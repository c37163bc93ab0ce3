"""Holds one WebSocket to an amiws relay: connect, read every frame as bytes, reconnect.

Frames are read with `decode=False`: amiws copies AMI bytes verbatim, so a text frame may be
invalid UTF-8 (a CP949 caller name) and a strict client would close with 1007 and lose every
event until it reconnects. We never send anything but control frames: amiws forwards whatever a
client sends to every PBX as an AMI action.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from functions.core.relays import RelaySpec
from functions.log import fields

log = logging.getLogger("connector.relay")

# Hard cap at the transport; frames above the ingest limit but below this are dropped by the
# ingest with a log line and the connection carries on.
TRANSPORT_MAX_BYTES = 16 * 1024 * 1024
PING_INTERVAL = 10.0  # with PING_TIMEOUT: a dead link is noticed within 20 s
PING_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0  # a dead link also times out the closing handshake: detection <= 22 s
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0  # a connection up this long resets the backoff


@dataclass
class ConnectionState:
    state: str = "starting"  # starting | connecting | connected | backoff | stopped
    since: float = 0.0
    attempts: int = 0
    connects: int = 0
    last_error: str = ""

    def set(self, state: str) -> None:
        self.state = state
        self.since = time.time()


# `on_frame` is called inline for every frame and returns what it made of it (call events);
# `on_results` is awaited only when that is not empty, so the hundreds of frames that change
# nothing cost no coroutine and no extra call.
FrameHandler = Callable[[bytes], Sequence[Any]]
ResultsHandler = Callable[[Sequence[Any]], Awaitable[None]]


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Exponential with full jitter, capped."""
    ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, attempt - 1))
    return rng.uniform(ceiling / 2, ceiling)


class RelayClient:
    def __init__(self, spec: RelaySpec, on_frame: FrameHandler, on_results: ResultsHandler) -> None:
        self.spec = spec
        self.on_frame = on_frame
        self.on_results = on_results
        self.status = ConnectionState()
        self._rng = random.Random()

    def _headers(self) -> dict[str, str]:
        if not self.spec.auth_id:
            return {}
        raw = f"{self.spec.auth_id}:{self.spec.auth_password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    async def run(self) -> None:
        """Connect and read until cancelled, reconnecting with backoff."""
        try:
            while True:
                self.status.attempts += 1
                self.status.set("connecting")
                started = time.monotonic()
                try:
                    await self._session()
                    self.status.last_error = "closed by relay"
                except (
                    OSError,
                    InvalidHandshake,
                    InvalidURI,
                    ConnectionClosed,
                    TimeoutError,
                ) as exc:
                    self.status.last_error = f"{type(exc).__name__}: {exc}"[:200]
                if time.monotonic() - started >= STABLE_AFTER:
                    self.status.attempts = 1
                delay = backoff_delay(self.status.attempts, self._rng)
                log.warning(
                    "relay disconnected",
                    extra=fields(
                        relay=self.spec.url,
                        error=self.status.last_error,
                        retry_in_s=round(delay, 2),
                        attempt=self.status.attempts,
                    ),
                )
                self.status.set("backoff")
                await asyncio.sleep(delay)
        finally:
            self.status.set("stopped")

    async def _session(self) -> None:
        async with connect(
            self.spec.url,
            additional_headers=self._headers(),
            max_size=TRANSPORT_MAX_BYTES,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
            open_timeout=10,
            close_timeout=CLOSE_TIMEOUT,
            compression=None,
            user_agent_header="makecall-push-connector",
        ) as ws:
            self.status.connects += 1
            self.status.set("connected")
            log.info("relay connected", extra=fields(relay=self.spec.url))
            on_frame, on_results = self.on_frame, self.on_results
            while True:
                payload = await ws.recv(decode=False)
                results = on_frame(payload if type(payload) is bytes else payload.encode())
                if results:
                    await on_results(results)
