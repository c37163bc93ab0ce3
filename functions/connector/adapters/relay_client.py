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

User-documents mode (`candidates`, functions.core.relay_candidates): the relay may be named in
several ways (credentials, scheme, path). A connection attempt tries them in order, the settings
last accepted first: an HTTP answer to the upgrade (401/403: refused) moves on to the next at
once, a transport failure skips the other settings of its scheme; the attempt counts once for
the backoff however many settings it tried. Once connected, every other setting whose answer
is not known is probed once per change of the set (and once per new connection): a handshake
closed at once, control frames only. What is known is handed to `on_access` after each batch of
probes (awaited, bounded, before the first frame is read, so that relay_access is written
before the connection's first call).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
    SecurityError,
)

from functions.connector.adapters.relay_address import (
    REFUSED_STATE,
    Checked,
    Resolver,
    check_relay_address,
    connect_kwargs,
    refusal_error,
    system_resolver,
)
from functions.core.address_policy import IPNetwork, Refusal
from functions.core.relay_candidates import (
    REFUSED_STATUSES,
    CandidateKey,
    RelayAccess,
    RelayCandidates,
    access_of,
    attempt_order,
    probe_targets,
)
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
PROBE_TIMEOUT = 5.0  # a probe's handshake
PROBE_GAP = 0.05  # between two probes: a few at a time, never a burst
ACCESS_REPORT_TIMEOUT = 3.0  # the first frame waits at most this for probes, and for the write


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
AccessHandler = Callable[[RelayAccess], Awaitable[None]]


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Exponential with full jitter, capped."""
    ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, attempt - 1))
    return rng.uniform(ceiling / 2, ceiling)


def _rejected(exc: BaseException) -> bool:
    """The relay refused these credentials (HTTP 401/403 on the upgrade)."""
    return isinstance(exc, InvalidStatus) and exc.response.status_code in REFUSED_STATUSES


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
        candidates: RelayCandidates | None = None,
        on_access: AccessHandler | None = None,
        on_connected: Callable[[int], None] | None = None,
    ) -> None:
        self.spec = spec  # the settings in use (or last tried)
        self.on_frame = on_frame
        self.on_results = on_results
        self.on_connected = on_connected  # called with the connection count on each connect
        self.allowed_networks = tuple(allowed_networks)
        self.resolver = resolver or system_resolver
        self.status = ConnectionState()
        self._rng = random.Random()
        # user-documents mode: the candidate settings and what the relay said of each
        self.candidates = candidates
        self.on_access = on_access
        self.results: dict[CandidateKey, bool] = {}
        self.in_use: CandidateKey | None = None
        self._attempted: set[CandidateKey] = set()  # probed since the last change, no answer
        self._checked: Checked | None = None  # while connected: the address in use
        self._probing: asyncio.Task[None] | None = None
        self._reporting: asyncio.Task[None] | None = None
        self.probes = 0
        self._refused_since: float | None = None  # first refusal of the current run of them

    @staticmethod
    def _headers(spec: RelaySpec) -> dict[str, str]:
        if not spec.auth_id:
            return {}
        raw = f"{spec.auth_id}:{spec.auth_password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def access(self) -> RelayAccess | None:
        if self.candidates is None:
            return None
        return access_of(self.candidates, self.results)

    def update_candidates(self, candidates: RelayCandidates) -> None:
        """The users' documents changed: keep the connection (the settings in use stay first on
        the next reconnect while someone still names them), forget answers for settings nobody
        names any more, probe the new ones once."""
        self.candidates = candidates
        keys = {c.key for c in candidates.candidates}
        self.results = {k: v for k, v in self.results.items() if k in keys}
        self._attempted.clear()
        if self.in_use not in keys:
            self.in_use = None
        self._reporting = asyncio.create_task(self._report())  # who joined or left a setting
        self._start_probes()

    async def _report(self) -> None:
        access = self.access()
        if access is None or self.on_access is None:
            return
        try:
            await asyncio.wait_for(self.on_access(access), ACCESS_REPORT_TIMEOUT)
        except Exception as exc:  # the connection carries on; the next change reports again
            log.warning(
                "relay access not reported",
                extra=fields(relay=self.spec.url, error=f"{type(exc).__name__}: {exc}"[:200]),
            )

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
                finally:
                    self._stop_probes()
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
            self._stop_probes()
            self.status.set("stopped")

    def _refused(self, refused: Refusal) -> float:
        """Record a refusal. One line per check (30 s to 5 min apart) with how long the relay
        has been refused, for the relay-down alert past 5 minutes: a WARNING when the reason
        changes, INFO while it stays. Returns the retry delay."""
        status = self.status
        status.refusals += 1
        delay = refused_delay(status.refusals, self._rng)
        error = refusal_error(refused)
        now = time.time()
        if status.refusals == 1 or self._refused_since is None:
            self._refused_since = now
        log.log(
            logging.WARNING if refused.reason != status.refused_reason else logging.INFO,
            "relay refused",
            extra=fields(
                relay=self.spec.url,  # never carries credentials
                reason=refused.reason,
                detail=refused.detail,  # the refused address, or the lookup's error
                retry_in_s=round(delay, 1),
                refused_for_s=round(now - self._refused_since),
            ),
        )
        if refused.reason != status.refused_reason:
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
        self._refused_since = None

    async def _open(
        self, checked: Checked, spec: RelaySpec | None = None, *, probe: bool = False
    ) -> ClientConnection:
        """Connect to the checked addresses in turn, the URI (so the Host header and TLS'
        server_hostname) keeping the relay's name. No proxy: a proxy would resolve the name
        again. A redirect to another origin fails (websockets refuses it with an explicit
        host), so a relay cannot send the connector elsewhere either."""
        spec = spec or self.spec
        last: Exception | None = None
        for address in checked.addresses:
            tls = {"server_hostname": spec.host} if spec.tls else {}
            try:
                return await connect(
                    spec.url,
                    **connect_kwargs(address),
                    **tls,
                    port=spec.port,
                    proxy=None,
                    additional_headers=self._headers(spec),
                    max_size=TRANSPORT_MAX_BYTES,
                    ping_interval=None if probe else PING_INTERVAL,
                    ping_timeout=PING_TIMEOUT,
                    open_timeout=PROBE_TIMEOUT if probe else 10,
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

    async def _open_candidate(self, checked: Checked) -> ClientConnection:
        """User-documents mode: the candidates in order until the relay accepts one. An HTTP
        answer (401/403: refused; or another) moves on to the next at once; a transport failure
        (connection refused or reset, TLS, timeout) skips the other settings with the same
        scheme, so an unreachable relay costs at most one try per scheme (ws, wss). Raises the
        first failure when no setting was accepted."""
        assert self.candidates is not None
        order = attempt_order(self.candidates.candidates, self.results, self.in_use)
        first: tuple[Exception, RelaySpec] | None = None
        unreachable: set[bool] = set()  # schemes (tls or not) whose transport failed
        refusals = 0
        for cand in order:
            if cand.spec.tls in unreachable:
                continue
            self.spec = cand.spec
            try:
                ws = await self._open(checked, cand.spec)
            except InvalidHandshake as exc:
                first = first or (exc, cand.spec)
                if _rejected(exc):
                    if cand.key == self.in_use:  # what it accepted it now refuses: it changed
                        self.results.clear()
                        self.in_use = None
                    self._attempted.clear()
                    self.results[cand.key] = False
                    refusals += 1
                continue
            except (OSError, TimeoutError) as exc:
                first = first or (exc, cand.spec)
                unreachable.add(cand.spec.tls)
                continue
            self.results[cand.key] = True
            self.in_use = cand.key
            return ws  # reported once the others are probed (_session)
        if refusals:
            await self._report()  # no setting accepted: who was refused, is recorded
        assert first is not None  # a relay always has a candidate
        self.spec = first[1]
        raise first[0]

    def _start_probes(self) -> None:
        if self._checked is None or self.candidates is None:
            return  # not connected: the next connection attempt learns
        if self._probing is None or self._probing.done():
            self._probing = asyncio.create_task(
                self._probe_all(self._checked), name=f"probe {self.spec.endpoint}"
            )

    def _stop_probes(self) -> None:
        self._checked = None
        if self._probing is not None:
            self._probing.cancel()
            self._probing = None

    async def _probe_all(self, checked: Checked) -> None:
        """Each setting not known yet, once: open the upgrade, close at once."""
        while self.candidates is not None:
            targets = probe_targets(
                self.candidates.candidates, self.results, self.in_use, self._attempted
            )
            if not targets:
                await self._report()  # once per batch: no half-known state in between
                return
            cand = targets[0]
            self.probes += 1
            try:
                ws = await self._open(checked, cand.spec, probe=True)
            except InvalidHandshake as exc:
                if _rejected(exc):
                    self.results[cand.key] = False
                else:
                    self._attempted.add(cand.key)
            except Exception:  # down, timed out, ...: not an answer; not again until a change
                self._attempted.add(cand.key)
            else:
                self.results[cand.key] = True
                with contextlib.suppress(Exception):
                    await ws.close()  # a close frame: nothing reaches the PBX
            await asyncio.sleep(PROBE_GAP)

    async def _session(self, checked: Checked) -> None:
        if self.candidates is None:
            opened = await self._open(checked)
        else:
            opened = await self._open_candidate(checked)
        async with opened as ws:
            self.status.connects += 1
            self.status.set("connected")
            log.info("relay connected", extra=fields(relay=self.spec.url))
            if self.on_connected is not None:
                self.on_connected(self.status.connects)
            if self.candidates is not None:
                # The other settings are probed (bounded) before the first frame is read, so
                # that relay_access is whole before the connection's first call.
                self._attempted.clear()
                self._checked = checked
                self._start_probes()
                if self._probing is not None:
                    await asyncio.wait({self._probing}, timeout=ACCESS_REPORT_TIMEOUT)
                await self._report()
            on_frame, on_results = self.on_frame, self.on_results
            while True:
                payload = await ws.recv(decode=False)
                results = on_frame(payload if type(payload) is bytes else payload.encode())
                if results:
                    await on_results(results)
