"""Firestore leases on relays (`relay_leases/{lease_id}`), so each relay is read by exactly one
connector instance, kept alive by one heartbeat per instance (`connector_instances/{session}`);
the decisions are functions.core.lease's. See docs/leases.md.

Idle cost does not grow with the relays held: a round renews one heartbeat document. Leases are
written only when a holder changes or lets go, each time with a precondition (created when
absent, updated only if unchanged since it was read), so two instances can never both win one
generation. A takeover also leaves a record `relay_leases/{id}/takeovers/{epoch}-{generation}`.
`LeaseKeeper` drives it from asyncio: Firestore calls run in threads, and a holder stops on its
own deadline timer even when Firestore hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from google.api_core import exceptions
from google.cloud import firestore

from functions.adapters.firestore_races import lost_race
from functions.core.lease import (
    INSTANCES,
    LEASES,
    Action,
    LeasePolicy,
    decide_acquire,
    decide_heartbeat,
    decide_release,
    holder_deadline,
    lease_id,
    marker_id,
    new_heartbeat,
    seconds,
)
from functions.log import fields

log = logging.getLogger("connector.leases")

TAKEOVERS = "takeovers"
MARKER_TTL = timedelta(days=7)  # far beyond any transaction's life; for an optional TTL policy
TIME_FIELDS = ("expiresAt", "renewedAt", "startedAt", "acquiredAt", "releasedAt")
READ_BATCH = 300  # documents per batched read (get_all) when looking for relays to take

GainCallback = Callable[[str, int], None]
LossCallback = Callable[[str], None]


def new_instance_id() -> str:
    """Unique per process; the Cloud Run revision and host name only help a human reading the
    lease documents."""
    parts = [os.environ.get("K_REVISION", ""), socket.gethostname(), str(os.getpid())]
    return "-".join([p for p in parts if p] + [uuid4().hex[:6]])


def _stored(record: dict[str, Any]) -> dict[str, Any]:
    """Core times (epoch seconds) as Firestore timestamps, readable in the console and usable
    by a TTL policy."""
    return {
        key: datetime.fromtimestamp(value, UTC) if key in TIME_FIELDS else value
        for key, value in record.items()
    }


def _loaded(snap: Any) -> dict[str, Any] | None:
    if snap is None or not snap.exists:
        return None
    record = snap.to_dict() or {}
    return {k: seconds(v) if k in TIME_FIELDS else v for k, v in record.items()}


class RelayLeases:
    def __init__(
        self,
        client: firestore.Client,
        instance_id: str,
        lease_seconds: float = 20.0,
        renew_every: float = 5.0,
        *,
        max_skew: float = 5.0,
        rpc_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.instance_id = instance_id
        self.session = instance_id  # the holder named in leases; changes after a lapse
        self._sessions = 0
        self.heartbeat_expires = 0.0  # the expiry our last heartbeat write set (our clock)
        self.policy = LeasePolicy(lease_seconds, renew_every, max_skew)
        self.rpc_timeout = rpc_timeout  # per read, so a stuck call ends (LeaseKeeper won't wait)
        self.clock = clock
        self.conflicts = 0  # writes that lost to another instance's (precondition failed)

    def _ref(self, endpoint: str) -> firestore.DocumentReference:
        return self.client.collection(LEASES).document(lease_id(endpoint))

    def _heartbeat_ref(self, session: str) -> firestore.DocumentReference:
        return self.client.collection(INSTANCES).document(session)

    def read(self, endpoint: str) -> dict[str, Any] | None:
        """The lease record, times as epoch seconds (for health pages and tests)."""
        return _loaded(self._ref(endpoint).get(timeout=self.rpc_timeout))

    def read_heartbeat(self, session: str | None = None) -> dict[str, Any] | None:
        return _loaded(self._heartbeat_ref(session or self.session).get(timeout=self.rpc_timeout))

    # -- heartbeat ------------------------------------------------------------------------------

    def new_session(self) -> str:
        """After our heartbeat lapsed: leases of the old session are taken back like anyone
        else's, as new generations, never resumed."""
        self._sessions += 1
        self.session = f"{self.instance_id}.{self._sessions}"
        self.heartbeat_expires = 0.0
        return self.session

    def start_heartbeat(self) -> bool:
        """Create this session's heartbeat. False when a record of that name exists already."""
        record = new_heartbeat(self.session, self.clock(), self.policy)
        try:
            self._heartbeat_ref(self.session).create(_stored(record), timeout=self.rpc_timeout)
        except exceptions.AlreadyExists:
            return False
        self.heartbeat_expires = record["expiresAt"]
        log.info("connector heartbeat started", extra=fields(holder=self.session))
        return True

    def heartbeat(self) -> bool:
        """Extend our heartbeat, and with it every lease we hold; False when it is lost: stop
        using all of them at once."""
        ref = self._heartbeat_ref(self.session)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> float | None:
            current = _loaded(ref.get(transaction=tx, timeout=self.rpc_timeout))
            decision = decide_heartbeat(current, self.session, self.clock(), self.policy)
            if decision.action is not Action.RENEW or decision.record is None:
                return None
            tx.update(ref, _stored(decision.record))
            return float(decision.record["expiresAt"])

        expires = run(self.client.transaction())
        if expires is None:
            return False
        self.heartbeat_expires = expires
        return True

    def end_heartbeat(self) -> None:
        """Clean shutdown, after we stopped reading: every lease of this session is free for
        the others' next try."""
        ref = self._heartbeat_ref(self.session)
        with contextlib.suppress(exceptions.NotFound):
            ref.update(
                _stored({"expiresAt": 0.0, "endedAt": self.clock()}) | {"ended": True},
                timeout=self.rpc_timeout,
            )
        self.heartbeat_expires = 0.0

    # -- leases ---------------------------------------------------------------------------------

    def candidates(self, endpoints: Collection[str]) -> list[str]:
        """The endpoints among these worth a try_acquire now (absent, released, ours, or held
        by an instance whose heartbeat expired), found with batched reads: waiting for relays
        held by a live instance costs a few reads per round, not a transaction per relay."""
        endpoints = sorted(endpoints)
        leases: dict[str, dict[str, Any] | None] = {}
        for start in range(0, len(endpoints), READ_BATCH):
            chunk = endpoints[start : start + READ_BATCH]
            refs = {self._ref(e).path: e for e in chunk}
            found = {
                s.reference.path: s
                for s in self.client.get_all(
                    [self._ref(e) for e in chunk], timeout=self.rpc_timeout
                )
            }
            leases.update({e: _loaded(found.get(path)) for path, e in refs.items()})
        holders = sorted(
            {
                str(lease["holder"])
                for lease in leases.values()
                if lease is not None and lease.get("holder") and lease.get("holder") != self.session
            }
        )
        beats: dict[str, dict[str, Any] | None] = {}
        for start in range(0, len(holders), READ_BATCH):
            refs = [self._heartbeat_ref(h) for h in holders[start : start + READ_BATCH]]
            for snap in self.client.get_all(refs, timeout=self.rpc_timeout):
                beats[snap.id] = _loaded(snap)
        now = self.clock()
        return [
            endpoint
            for endpoint, lease in leases.items()
            if decide_acquire(
                lease,
                beats.get(str(lease.get("holder"))) if lease else None,
                self.session,
                endpoint,
                now,
            ).action
            is Action.ACQUIRE
        ]

    def try_acquire(self, endpoint: str) -> int | None:
        """Take the relay's lease if it is absent, released, ours or its holder is gone: its
        generation, else None. Our own heartbeat must be alive (LeaseKeeper sees to it).

        No transaction: the write carries its own precondition (create = absent; update = the
        lease unchanged since we read it), atomic on Firestore. Instances racing for a relay
        then never wait on each other's transaction locks (the Firestore emulator resolves such
        a deadlock only after a 2 s lock timeout): the loser's write fails and it reads again
        on its next round. The holder's heartbeat may be read outside the write: an expired
        heartbeat is never renewed (decide_heartbeat stops max_skew before expiry)."""
        ref = self._ref(endpoint)
        session = self.session
        snap = ref.get(timeout=self.rpc_timeout)
        current = _loaded(snap)
        holder = current.get("holder") if current else None
        beat = None
        if isinstance(holder, str) and holder and holder != session:
            beat = _loaded(self._heartbeat_ref(holder).get(timeout=self.rpc_timeout))
        now = self.clock()
        decision = decide_acquire(current, beat, session, endpoint, now)
        if decision.action is not Action.ACQUIRE or decision.record is None:
            return None
        record = decision.record
        try:
            if current is None:
                ref.create(_stored(record), timeout=self.rpc_timeout)
            else:
                batch = self.client.batch()
                if decision.takeover:
                    # the takeover's record for people and tools (docs/leases.md)
                    marker = ref.collection(TAKEOVERS).document(marker_id(record))
                    batch.create(
                        marker,
                        {
                            "relay": endpoint,
                            "holder": session,
                            "generation": record["generation"],
                            "at": datetime.fromtimestamp(now, UTC),
                            "expiresAt": datetime.fromtimestamp(now, UTC) + MARKER_TTL,
                        },
                    )
                # a new holder's record replaces the old one's fields
                stale = {key: firestore.DELETE_FIELD for key in current if key not in record}
                batch.update(
                    ref,
                    {**_stored(record), **stale},
                    option=self.client.write_option(last_update_time=snap.update_time),
                )
                batch.commit(timeout=self.rpc_timeout)
        except exceptions.GoogleAPICallError as exc:
            if not lost_race(exc):
                raise
            self.conflicts += 1
            return None
        log.debug(
            "relay lease acquired",
            extra=fields(relay=endpoint, generation=decision.generation, holder=session),
        )
        return decision.generation

    def release(self, endpoint: str, generation: int) -> None:
        """End our lease now so another instance takes the relay at its next try. Call it only
        after this instance stopped reading the relay."""
        ref = self._ref(endpoint)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> None:
            current = _loaded(ref.get(transaction=tx, timeout=self.rpc_timeout))
            update = decide_release(
                current,
                self.session,
                generation,
                self.heartbeat_expires,
                self.clock(),
                self.policy,
            )
            if update is not None:
                tx.update(ref, _stored(update))

        try:
            run(self.client.transaction())
        except exceptions.GoogleAPICallError as exc:
            if not lost_race(exc):
                raise


_FAILED = object()  # a Firestore call that raised or is still running after op_timeout
_HEARTBEAT = "<heartbeat>"  # in-flight key of the heartbeat call
_SCAN = "<candidates>"  # in-flight key of the batched look for relays to take


class LeaseKeeper:
    """Keeps this instance's leases in step with the relays it should read.

    Every `renew_every` (or at once after `poke()`): renews the heartbeat (starting a session
    first if there is none), looks for desired relays it can take and acquires them, and
    releases those no longer desired. `on_gain(endpoint, generation)` means start reading the
    relay; `on_loss(endpoint)` means stop at once. Both are called on the event loop and must
    not block. A holder whose heartbeat is not renewed calls on_loss for every relay by its
    deadline (started + lease_seconds - max_skew), before any other instance can take them
    over, even when the Firestore call never returns; it then starts a new session.
    """

    def __init__(self, leases: RelayLeases, *, op_timeout: float | None = None) -> None:
        self.leases = leases
        self.policy = leases.policy
        self.op_timeout = op_timeout or self.policy.renew_every
        self._held: dict[str, int] = {}
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._deadline: asyncio.TimerHandle | None = None  # None: no live heartbeat
        self._renew_due = 0.0  # loop time
        self._end_heartbeat = False  # run() ended: stop() ends the session
        self._wake = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._on_loss: LossCallback = lambda endpoint: None

    @property
    def held(self) -> dict[str, int]:
        """endpoint -> generation of the leases this instance holds now."""
        return dict(self._held)

    def poke(self) -> None:
        """Run the next round now (the desired set changed)."""
        self._wake.set()

    async def run(
        self,
        desired: Callable[[], Collection[str]],
        on_gain: GainCallback,
        on_loss: LossCallback,
    ) -> None:
        """Until cancelled. On the way out on_loss is called for every held relay; the heartbeat
        is not ended (a crash looks the same): `stop()` ends it."""
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._on_loss = on_loss
        try:
            while True:
                self._wake.clear()
                started = loop.time()
                try:
                    await self._round(desired, on_gain)
                except Exception:
                    log.exception("lease round failed")
                delay = started + self.policy.renew_every - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
        finally:
            self._end_heartbeat = self._deadline is not None
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._lose_all("keeper stopped")

    async def stop(self, *, release: bool = True, timeout: float = 3.0) -> None:
        """Clean shutdown: stop the loop (on_loss for each held relay), then end the heartbeat
        so other instances take the relays at their next try instead of after expiry."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        end, self._end_heartbeat = self._end_heartbeat, False
        if not release or not end:
            return
        await asyncio.sleep(0)  # let the relay tasks cancelled by on_loss unwind first
        try:
            await asyncio.wait_for(asyncio.to_thread(self.leases.end_heartbeat), timeout)
        except Exception as exc:
            log.warning(
                "relay leases not released",
                extra=fields(holder=self.leases.session, error=f"{type(exc).__name__}: {exc}"),
            )

    def _alive(self) -> bool:
        return self._deadline is not None

    async def _round(self, desired: Callable[[], Collection[str]], on_gain: GainCallback) -> None:
        loop = asyncio.get_running_loop()
        wanted = set(desired())
        calls = []
        for endpoint in [e for e in self._held if e not in wanted]:
            generation = self._held[endpoint]
            self._lose(endpoint, "relay no longer watched")
            calls.append(self._release(endpoint, generation))
        if _HEARTBEAT not in self._inflight:
            if not self._alive():
                await self._start_heartbeat()
            elif loop.time() >= self._renew_due - self.policy.renew_every / 2:
                # half a period of slack: a round woken by poke() does not renew early
                calls.append(self._renew())
        missing = [e for e in wanted if e not in self._held and e not in self._inflight]
        if missing and self._alive() and _SCAN not in self._inflight:
            calls.append(self._take(missing, desired, on_gain))
        await asyncio.gather(*calls)

    async def _call(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        """fn in a thread, bounded by op_timeout. A call that overruns is abandoned, not
        cancelled (threads cannot be): its key is skipped until it ends."""
        call = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self._inflight[key] = call
        call.add_done_callback(lambda c: self._call_ended(key, c))
        done, _ = await asyncio.wait({call}, timeout=self.op_timeout)
        if not done:
            log.warning("lease call still running", extra=fields(relay=key, op=fn.__name__))
            return _FAILED
        exc = call.exception()
        if exc is not None:
            log.warning(
                "lease call failed",
                extra=fields(relay=key, op=fn.__name__, error=f"{type(exc).__name__}: {exc}"),
            )
            return _FAILED
        return call.result()

    def _call_ended(self, key: str, call: asyncio.Future[Any]) -> None:
        if self._inflight.get(key) is call:
            del self._inflight[key]
        if not call.cancelled():
            call.exception()  # retrieved: an abandoned call's error is not reported twice

    # -- heartbeat ------------------------------------------------------------------------------

    async def _start_heartbeat(self) -> None:
        started = asyncio.get_running_loop().time()
        ok = await self._call(_HEARTBEAT, self.leases.start_heartbeat)
        if ok is True:
            self._beat(started)
        elif ok is False:
            self.leases.new_session()  # the name is taken (a create that timed out but landed)

    async def _renew(self) -> None:
        started = asyncio.get_running_loop().time()
        session = self.leases.session
        ok = await self._call(_HEARTBEAT, self.leases.heartbeat)
        if session != self.leases.session or not self._alive():
            return  # the session ended meanwhile (deadline passed)
        if ok is True:
            self._beat(started)
        elif ok is False:
            self._lapse("heartbeat lost")
        # _FAILED: retried next round; the deadline timer stops us if none succeeds in time

    def _beat(self, started: float) -> None:
        loop = asyncio.get_running_loop()
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = loop.call_at(holder_deadline(started, self.policy), self._expire)
        self._renew_due = started + self.policy.renew_every

    def _expire(self) -> None:
        self._deadline = None
        self._lapse("heartbeat not renewed in time")

    def _lapse(self, reason: str) -> None:
        """Our heartbeat is gone or may be seen as expired: stop every relay, and carry on as a
        new session that takes them back, if nobody else did, as new generations."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        old = self.leases.session
        self._lose_all(reason)
        log.warning(
            "connector heartbeat lapsed",
            extra=fields(holder=old, reason=reason, new_holder=self.leases.new_session()),
        )

    # -- leases ---------------------------------------------------------------------------------

    async def _take(
        self, missing: list[str], desired: Callable[[], Collection[str]], on_gain: GainCallback
    ) -> None:
        found = await self._call(_SCAN, self.leases.candidates, missing)
        if found is _FAILED:
            return
        await asyncio.gather(*(self._acquire(e, desired, on_gain) for e in found))

    async def _acquire(
        self, endpoint: str, desired: Callable[[], Collection[str]], on_gain: GainCallback
    ) -> None:
        if endpoint in self._inflight:
            return
        session = self.leases.session
        generation = await self._call(endpoint, self.leases.try_acquire, endpoint)
        if generation is _FAILED or generation is None or endpoint in self._held:
            return
        if not self._alive() or session != self.leases.session or endpoint not in desired():
            return  # our heartbeat lapsed meanwhile, or unwanted: the next round sorts it out
        self._held[endpoint] = generation
        log.info(
            "relay lease gained",
            extra=fields(relay=endpoint, generation=generation, holder=session),
        )
        try:
            on_gain(endpoint, generation)
        except Exception:
            log.exception("on_gain failed", extra=fields(relay=endpoint))

    async def _release(self, endpoint: str, generation: int) -> None:
        await self._call(endpoint, self.leases.release, endpoint, generation)

    def _lose_all(self, reason: str) -> None:
        for endpoint in list(self._held):
            self._lose(endpoint, reason)

    def _lose(self, endpoint: str, reason: str) -> None:
        generation = self._held.pop(endpoint)
        log.info(
            "relay lease dropped",
            extra=fields(relay=endpoint, generation=generation, reason=reason),
        )
        try:
            self._on_loss(endpoint)
        except Exception:
            log.exception("on_loss failed", extra=fields(relay=endpoint))
