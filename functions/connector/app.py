"""The connector: one WebSocket per relay, each frame through its call tracker, events published.

Wiring lives in `build_connector`; `Connector` only supervises: it starts, restarts and stops
relay connections to match the desired set (PBX_RELAYS plus the relays in Firestore `users`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from functions.adapters.relay_access import write_access
from functions.connector.adapters.event_publishers import EventPublisher
from functions.connector.adapters.health_server import HealthServer
from functions.connector.adapters.relay_client import RelayClient
from functions.connector.adapters.relay_directory import (
    DesiredRelays,
    TenantRelayWatcher,
    UsersRelayWatcher,
    merge_relays,
)
from functions.connector.adapters.relay_leases import LeaseKeeper, RelayLeases, new_instance_id
from functions.connector.adapters.relay_status import (
    RelayStatusWriter,
    plan_status_writes,
    write_budget,
)
from functions.connector.adapters.rung_calls import rung_calls
from functions.connector.adapters.secrets import SecretManagerReader, SecretReader
from functions.connector.ingest import RelayIngest
from functions.core.call_event import CallEvent
from functions.core.call_tracker import RING_GRACE_SECONDS, CallTracker
from functions.core.relay_candidates import RelayAccess, RelayCandidates, relay_candidates
from functions.core.relays import RelaySpec, relay_from_url
from functions.log import fields
from functions.settings import Settings

log = logging.getLogger("connector")
EXPIRE_EVERY = 1.0  # seconds between sweeps for calls that never ended (ring timeouts, gaps)
WATCH_TICK_EVERY = 5  # sweeps between the relay watcher's ticks
SUMMARY_EVERY = 60.0  # seconds between "connector relays" lines while nothing changes
CARRY_OVER_TIMEOUT = 5.0  # reading the ledger for calls rung before this instance read a relay
STATUS_CHECK_EVERY = 2.0  # a relay's state change reaches relay_status within this
STATUS_REFRESH_EVERY = 30.0  # changed counters and last-event times: at most this often
SHUTDOWN_BUDGET = 8.0  # Cloud Run allows 10 s after SIGTERM


@dataclass
class RelayRuntime:
    spec: RelaySpec
    client: RelayClient
    ingest: RelayIngest
    task: asyncio.Task[None]
    candidates: RelayCandidates | None = None  # user-documents mode: the settings to try

    def fingerprint(self) -> tuple[object, ...]:
        """Changes whenever the relay's status report would (every frame counts; a state set
        moves `since`; a new runtime for the endpoint is a new client). Far cheaper than
        building the report, for the idle check."""
        status, stats = self.client.status, self.ingest.stats
        return (
            self.client,
            status.state,
            status.since,
            status.connects,
            status.last_error,
            stats.frames,
            self.ingest.tracker.active_calls,
            len(self.client.results),  # user-documents mode: what the relay said of whom
        )


class Connector:
    """With Firestore, each relay is read by one instance at a time: the holder of its lease
    (functions.connector.adapters.relay_leases). Without Firestore (PBX_RELAYS only) it reads
    them all."""

    def __init__(
        self,
        settings: Settings,
        publisher: EventPublisher,
        firestore_client: Any = None,
        *,
        leases: RelayLeases | None = None,
        secrets: SecretReader | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.firestore_client = firestore_client
        self.static = [relay_from_url(url) for url in settings.pbx_relays]
        self.relays: dict[str, RelayRuntime] = {}
        self.started_at = time.time()
        self.instance = leases.instance_id if leases else new_instance_id()
        self.status_writer = (
            RelayStatusWriter(firestore_client, self.instance) if firestore_client else None
        )
        if leases is None and firestore_client is not None:
            leases = RelayLeases(
                firestore_client,
                self.instance,
                settings.lease_seconds,
                settings.lease_renew_seconds,
                max_skew=settings.lease_skew_seconds,
            )
        self.keeper = (
            LeaseKeeper(
                leases,
                calls_in_progress=self._calls_in_progress,
                ring_window=settings.ring_window_seconds,
            )
            if leases is not None
            else None
        )
        self.desired: DesiredRelays = {}
        self._stopping = False
        self.health = HealthServer(self.health_report)
        self.health_port: int | None = None
        self._watcher: TenantRelayWatcher | UsersRelayWatcher | None = None
        self.secrets: SecretReader = secrets or SecretManagerReader()
        self._loop: asyncio.AbstractEventLoop | None = None
        # user-documents mode: per endpoint, the relay_access last recorded, and a write lock
        self._access: dict[str, RelayAccess] = {}
        self._access_locks: dict[str, asyncio.Lock] = {}
        self._refused_logged: dict[str, frozenset[str]] = {}  # one WARNING per change
        self._last_summary = (0, 0, 0)  # the last "connector relays" line's counts

    async def run(self, stop: asyncio.Event, *, host: str | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        host = self.settings.health_host if host is None else host
        self.health_port = await self.health.start(host, self.settings.port)
        log.info("connector started", extra=fields(health_port=self.health_port))
        self.apply(self._initial_relays())
        background = [asyncio.create_task(self._sweep_forever(), name="expire calls")]
        if self.keeper is not None:
            background.append(
                asyncio.create_task(
                    self.keeper.run(lambda: self.desired.keys(), self._on_gain, self._on_loss),
                    name="relay leases",
                )
            )
        if self.status_writer is not None:
            background.append(asyncio.create_task(self._status_forever(), name="relay status"))
        if self.firestore_client is not None:
            self._watcher = self._relay_watcher()
            self._watcher.start()
        try:
            await stop.wait()
        finally:
            for task in background:
                task.cancel()
            await self.shutdown()

    def _calls_in_progress(self, endpoint: str) -> int:
        """Calls the relay's tracker follows: the lease keeper hands idle relays off first (and
        a moved relay's rung calls are carried over from the ledger by the taker)."""
        runtime = self.relays.get(endpoint)
        return runtime.ingest.tracker.active_calls if runtime is not None else 0

    def _user_documents(self) -> bool:
        return self.settings.tenancy == "user_documents" and self.firestore_client is not None

    def _initial_relays(self) -> DesiredRelays:
        if self._user_documents():  # the same shape the users watcher will send
            return dict(relay_candidates(self.static, {}))
        return merge_relays(self.static, {})

    def _relay_watcher(self) -> TenantRelayWatcher | UsersRelayWatcher:
        """Who names the relays: the PBX directory (default), or the users' own documents."""
        if self.settings.tenancy == "directory":
            return TenantRelayWatcher(
                self.firestore_client,
                self.static,
                self._apply_threadsafe,
                region=self.settings.default_region,
                secrets=self.secrets,
            )
        return UsersRelayWatcher(self.firestore_client, self.static, self._apply_threadsafe)

    def _apply_threadsafe(self, desired: DesiredRelays) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.apply, desired)

    def apply(self, desired: DesiredRelays) -> None:
        """Match the relays read to the desired set; with leases, only the ones held."""
        self.desired = dict(desired)
        for endpoint in list(self.relays):
            runtime, wanted = self.relays[endpoint], desired.get(endpoint)
            if isinstance(wanted, RelayCandidates) and runtime.candidates is not None:
                # user-documents mode: other users' settings change what is tried, not the
                # connection that is up
                if wanted != runtime.candidates:
                    runtime.candidates = wanted
                    runtime.client.update_candidates(wanted)
                continue
            if wanted is None or wanted != runtime.spec:
                self._stop(endpoint)
        held = self.keeper.held if self.keeper is not None else desired
        for endpoint, spec in desired.items():
            if endpoint not in self.relays and endpoint in held:
                self.relays[endpoint] = self._start(spec)
        if self.keeper is not None:
            self.keeper.poke()

    def _on_gain(self, endpoint: str, generation: int) -> None:
        spec = self.desired.get(endpoint)
        if spec is not None and endpoint not in self.relays:
            log.info("relay lease gained", extra=fields(relay=spec.url, generation=generation))
            self.relays[endpoint] = self._start(spec)

    def _on_loss(self, endpoint: str) -> None:
        """Fencing: another instance may hold the relay now, stop reading it at once."""
        if endpoint in self.relays:
            if not self._stopping:
                log.warning("relay lease lost", extra=fields(relay=endpoint))
            self._stop(endpoint)

    def _stop(self, endpoint: str) -> None:
        runtime = self.relays.pop(endpoint, None)
        self._access.pop(endpoint, None)  # another instance may write it meanwhile
        if runtime is not None:
            runtime.task.cancel()
            log.info("relay released", extra=fields(relay=runtime.spec.url))

    def _start(self, wanted: RelaySpec | RelayCandidates) -> RelayRuntime:
        candidates = wanted if isinstance(wanted, RelayCandidates) else None
        spec = wanted.spec if isinstance(wanted, RelayCandidates) else wanted
        tracker = CallTracker(
            spec.endpoint,
            self.settings.trunk_context_prefixes,
            ring_window=self.settings.ring_window_seconds,
        )
        ingest = RelayIngest(spec.endpoint, tracker, self.settings.max_frame_bytes)

        client = RelayClient(
            spec,
            ingest.on_frame,
            self._publish_all,
            allowed_networks=self.settings.relay_allowed_networks,  # the address policy's
            candidates=candidates,
            on_access=self._access_recorder(spec.endpoint) if candidates else None,
            on_connected=self._connected(ingest),
        )
        task = asyncio.create_task(self._read(client, tracker), name=f"relay {spec.endpoint}")
        log.info("relay watched", extra=fields(relay=spec.url))
        return RelayRuntime(spec, client, ingest, task, candidates)

    async def _read(self, client: RelayClient, tracker: CallTracker) -> None:
        """Learn the relay's calls that rang before this instance read it, then read it."""
        if self.firestore_client is not None:
            await self._carry_over(client.spec, tracker)
        await client.run()

    async def _carry_over(self, spec: RelaySpec, tracker: CallTracker) -> None:
        """Calls rung from the relay while another instance (or an earlier reader here) read
        it are adopted so that they end. Best effort: the ring timeout remains."""
        try:
            rung = await asyncio.wait_for(
                asyncio.to_thread(
                    rung_calls,
                    self.firestore_client,
                    spec.endpoint,
                    time.time(),
                    # calls that may still ring; older ones rang out (the push's TTL)
                    self.settings.ring_window_seconds + RING_GRACE_SECONDS,
                ),
                CARRY_OVER_TIMEOUT,
            )
        except Exception as exc:  # Firestore down or slow: do not hold the relay back
            log.warning(
                "could not read the calls rung from a relay before taking it",
                extra=fields(relay=spec.url, error=f"{type(exc).__name__}: {exc}"[:200]),
            )
            return
        adopted = tracker.adopt(rung, time.time())
        if adopted:
            log.info("calls carried over", extra=fields(relay=spec.url, calls=adopted))

    def _access_recorder(self, endpoint: str) -> Any:
        """User-documents mode: what the relay said of whose settings, to relay_access (read by
        the notifier) and, for refusals, one WARNING line per change. User ids only."""

        async def record(access: RelayAccess) -> None:
            lock = self._access_locks.setdefault(endpoint, asyncio.Lock())
            async with lock:
                last = self._access.get(endpoint)
                if last == access:
                    return
                runtime = self.relays.get(endpoint)
                url = runtime.client.spec.url if runtime is not None else endpoint
                changed = self._refused_logged.get(endpoint, frozenset()) != access.refused
                self._refused_logged[endpoint] = access.refused
                if changed and access.refused:
                    log.warning(
                        "relay refused users' relay settings; they are not rung from it",
                        extra=fields(
                            relay=url,
                            refused_users=sorted(access.refused),
                            refused=len(access.refused),
                            accepted=len(access.users),
                            open=access.open,
                        ),
                    )
                await asyncio.to_thread(
                    write_access, self.firestore_client, endpoint, url, access, self.instance
                )
                self._access[endpoint] = access

        return record

    async def _publish_all(self, events: Sequence[CallEvent]) -> None:
        for event in events:
            await self.publisher.publish(event)

    async def _sweep_forever(self) -> None:
        sweeps = 0
        next_summary = 0.0
        while True:
            await asyncio.sleep(EXPIRE_EVERY)
            now = time.time()
            try:
                await self.sweep(now)
                sweeps += 1
                if self._watcher is not None and sweeps % WATCH_TICK_EVERY == 0:
                    self._watcher.tick()
                if self._log_summary(force=now >= next_summary):
                    next_summary = now + SUMMARY_EVERY
            except Exception:  # the next second tries again: ring timeouts must not stop
                log.exception("call sweep failed")

    def _connected(self, ingest: RelayIngest) -> Callable[[int], None]:
        def connected(connects: int) -> None:
            ingest.on_connected(connects)  # a reconnect is a gap for the calls in progress
            self._log_summary()  # the relays_connected chart moves at once

        return connected

    def _log_summary(self, *, force: bool = False) -> bool:
        """What this instance reads, for the `relays_connected` chart (infra/monitoring.tf):
        when it changes (a connection, checked every second), and every minute. Returns
        whether it logged."""
        states = [rt.client.status.state for rt in self.relays.values()]
        summary = (len(states), states.count("connected"), states.count("refused"))
        if not states or (summary == self._last_summary and not force):
            return False
        self._last_summary = summary
        relays, connected, refused = summary
        log.info(
            "connector relays",
            extra=fields(holder=self.instance, relays=relays, connected=connected, refused=refused),
        )
        return True

    async def sweep(self, now: float) -> None:
        """End calls whose end never came (ring timeout, gap grace, tracking limits): rung ones
        end as `unknown` so phones stop ringing."""
        for runtime in list(self.relays.values()):
            for dropped in runtime.ingest.tracker.expire(now):
                log.warning(
                    "call dropped without an end",
                    extra=fields(
                        relay=runtime.spec.endpoint,
                        server_id=dropped.server_id,
                        linkedid=dropped.linkedid,
                        state=dropped.state,
                        reason=dropped.reason,
                        age_s=round(dropped.age_seconds),
                    ),
                )
                if dropped.ended is not None:
                    await self.publisher.publish(dropped.ended)

    async def _status_forever(self) -> None:
        assert self.status_writer is not None
        written: dict[str, tuple[float, dict[str, Any]]] = {}  # endpoint -> (when, report)
        unchanged: dict[str, tuple[object, ...]] = {}  # endpoint -> fingerprint when written
        while True:
            await asyncio.sleep(STATUS_CHECK_EVERY)
            now = time.time()
            relays = list(self.relays.items())
            for gone in written.keys() - self.relays.keys():  # stopped: a comeback is new
                del written[gone]
                unchanged.pop(gone, None)
            # An idle relay costs a tuple comparison here, not a report (1,000 relays held)
            prints = {ep: rt.fingerprint() for ep, rt in relays}
            reports = {
                ep: self.relay_report(rt) for ep, rt in relays if unchanged.get(ep) != prints[ep]
            }
            budget = write_budget(len(relays), STATUS_CHECK_EVERY, STATUS_REFRESH_EVERY)
            due = plan_status_writes(reports, written, now, STATUS_REFRESH_EVERY, budget)
            for ep in await self.status_writer.write_many(due) if due else []:
                written[ep] = (now, due[ep])
                unchanged[ep] = prints[ep]

    @staticmethod
    def relay_report(rt: RelayRuntime) -> dict[str, Any]:
        access = rt.client.access()  # user-documents mode only
        return {
            "relay": rt.client.spec.url,
            "state": rt.client.status.state,
            "since": rt.client.status.since,
            "connects": rt.client.status.connects,
            "last_error": rt.client.status.last_error,
            # why the address policy refuses to connect (state "refused"), else None
            "refused_reason": rt.client.status.refused_reason or None,
            "active_calls": rt.ingest.tracker.active_calls,
            "stale_rings": rt.ingest.tracker.stale_rings,  # ringing frames too late to ring
            **rt.ingest.stats.as_dict(),
            **(
                {
                    "refused_users": len(access.refused),
                    "accepted_users": len(access.users),
                    "unproven_users": len(access.unproven),
                    "open": access.open,
                }
                if access is not None
                else {}
            ),
        }

    def health_report(self) -> tuple[int, dict[str, Any]]:
        relays = [
            self.relay_report(rt)
            for rt in sorted(self.relays.values(), key=lambda r: r.spec.endpoint)
        ]
        connected = sum(r["state"] == "connected" for r in relays)
        return 200, {
            "status": "ok",
            "instance": self.instance,
            "leases_held": sorted(self.keeper.held) if self.keeper is not None else None,
            "uptime_s": round(time.time() - self.started_at, 1),
            "relays_total": len(relays),
            "relays_connected": connected,
            "relays": relays,
        }

    async def shutdown(self) -> None:
        """Stop taking frames, flush what is queued, within Cloud Run's SIGTERM grace."""
        started = time.monotonic()
        self._stopping = True
        if self._watcher is not None:
            self._watcher.stop()
        if self.keeper is not None:
            await self.keeper.stop()  # stops reading, then hands the leases over at once
        tasks = [rt.task for rt in self.relays.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.relays.clear()
        try:
            await asyncio.wait_for(self.publisher.close(), SHUTDOWN_BUDGET)
        except TimeoutError:
            log.error("publisher did not flush in time; unsent events are lost")
        await self.health.close()
        log.info(
            "connector stopped",
            extra=fields(shutdown_ms=round((time.monotonic() - started) * 1000)),
        )


def build_publisher(settings: Settings) -> EventPublisher:
    from functions.connector.adapters.event_publishers import PubSubPublisher, PushPublisher

    if settings.call_events_push_url:
        return PushPublisher(settings.call_events_push_url, settings.project, settings.topic_id)
    return PubSubPublisher(settings.topic_path)


def build_firestore_client(settings: Settings) -> Any:
    from google.cloud import firestore

    return firestore.Client(project=settings.project)


def build_connector(settings: Settings) -> Connector:
    return Connector(settings, build_publisher(settings), build_firestore_client(settings))
