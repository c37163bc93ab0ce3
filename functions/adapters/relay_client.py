"""Holds one WebSocket to an amiws relay: connect, read every frame as bytes, reconnect.

Frames are read with `decode=False`: amiws copies AMI bytes verbatim, so a text frame may be
invalid UTF-8 (a CP949 caller name) and a strict client would close with 1007 and lose every
event until it reconnects. We never send anything but control frames: amiws forwards whatever a
client sends to every PBX as an AMI action.

Before each connection and each reconnect the relay's host is resolved and every address checked
against the address policy (functions.core.address_policy, RELAY_ALLOWED_NETWORKS); the
connection then goes to a checked address, never to the name again. A refused relay is
`refused` in its status (reason in `last_error`), logged once per change of reason, and
re-checked slowly: REFUSED_FIRST seconds, doubling up to REFUSED_MAX (jittered down by up to
20%), so a users document naming localhost costs one lookup every few minutes, not a storm.
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

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI, SecurityError

from functions.adapters.relay_address import (
    REFUSED_STATE,
    Checked,
    Resolver,
    check_relay_address,
    connect_kwargs,
    refusal_error,
    system_resolver,
)
from functions.core.address_policy import IPNetwork, Refusal
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
REFUSED_FIRST = 30.0  # a refused relay is re-resolved and re-checked after this,
REFUSED_MAX = 300.0  # doubling each time up to this


@dataclass
class ConnectionState:
    state: str = "starting"  # starting | connecting | connected | backoff | refused | stopped
    since: float = 0.0
    attempts: int = 0
    connects: int = 0
    last_error: str = ""
    refused_reason: str = ""  # the address policy's reason while refused
    refusals: int = 0  # checks refused in a row

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


def refused_delay(refusals: int, rng: random.Random) -> float:
    """Slow and capped: a refused relay is a configuration problem, not a network blip."""
    ceiling = min(REFUSED_MAX, REFUSED_FIRST * 2 ** max(0, refusals - 1))
    return rng.uniform(0.8 * ceiling, ceiling)


class RelayClient:
    def __init__(
        self,
        spec: RelaySpec,
        on_frame: FrameHandler,
        on_results: ResultsHandler,
        *,
        allowed_networks: Sequence[IPNetwork] = (),
        resolver: Resolver | None = None,
    ) -> None:
        self.spec = spec
        self.on_frame = on_frame
        self.on_results = on_results
        self.allowed_networks = tuple(allowed_networks)
        self.resolver = resolver or system_resolver
        self.status = ConnectionState()
        self._rng = random.Random()

    def _headers(self) -> dict[str, str]:
        if not self.spec.auth_id:
            return {}
        raw = f"{self.spec.auth_id}:{self.spec.auth_password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    async def run(self) -> None:
        """Check the address, connect and read until cancelled; reconnect with backoff, re-check
        a refused relay slowly."""
        try:
            while True:
                checked = await check_relay_address(
                    self.spec.host, self.spec.port, self.allowed_networks, self.resolver
                )
                if isinstance(checked, Refusal):
                    await asyncio.sleep(self._refused(checked))
                    continue
                self._allowed()
                self.status.attempts += 1
                self.status.set("connecting")
                started = time.monotonic()
                try:
                    await self._session(checked)
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

    def _refused(self, refused: Refusal) -> float:
        """Record a refusal; one log line when the reason changes. Returns the retry delay."""
        status = self.status
        status.refusals += 1
        delay = refused_delay(status.refusals, self._rng)
        error = refusal_error(refused)
        if refused.reason != status.refused_reason:
            log.warning(
                "relay refused",
                extra=fields(
                    relay=self.spec.url,  # never carries credentials
                    reason=refused.reason,
                    detail=refused.detail,  # the refused address, or the lookup's error
                    retry_in_s=round(delay, 1),
                ),
            )
            status.refused_reason = refused.reason
            status.last_error = error
            status.set(REFUSED_STATE)
        elif status.last_error != error:  # same reason, another address: status only
            status.last_error = error
        return delay

    def _allowed(self) -> None:
        if self.status.refused_reason:
            log.info(
                "relay address allowed",
                extra=fields(relay=self.spec.url, was=self.status.refused_reason),
            )
        self.status.refused_reason = ""
        self.status.refusals = 0

    async def _open(self, checked: Checked) -> ClientConnection:
        """Connect to the checked addresses in turn, the URI (so the Host header and TLS'
        server_hostname) keeping the relay's name. No proxy: a proxy would resolve the name
        again. A redirect to another origin fails (websockets refuses it with an explicit
        host), so a relay cannot send the connector elsewhere either."""
        last: Exception | None = None
        for address in checked.addresses:
            tls = {"server_hostname": self.spec.host} if self.spec.tls else {}
            try:
                return await connect(
                    self.spec.url,
                    **connect_kwargs(address),
                    **tls,
                    port=self.spec.port,
                    proxy=None,
                    additional_headers=self._headers(),
                    max_size=TRANSPORT_MAX_BYTES,
                    ping_interval=PING_INTERVAL,
                    ping_timeout=PING_TIMEOUT,
                    open_timeout=10,
                    close_timeout=CLOSE_TIMEOUT,
                    compression=None,
                    user_agent_header="makecall-push-connector",
                )
            except (OSError, TimeoutError) as exc:  # this address is down: try the next
                last = exc
            except ValueError as exc:  # websockets' word for a cross-origin redirect here
                raise SecurityError(f"not followed: {exc}"[:200]) from exc
        assert last is not None  # a Checked is never empty
        raise last

    async def _session(self, checked: Checked) -> None:
        async with await self._open(checked) as ws:
            self.status.connects += 1
            self.status.set("connected")
            log.info("relay connected", extra=fields(relay=self.spec.url))
            on_frame, on_results = self.on_frame, self.on_results
            while True:
                payload = await ws.recv(decode=False)
                results = on_frame(payload if type(payload) is bytes else payload.encode())
                if results:
                    await on_results(results)
