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
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
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
    heartbeat_alive,
    holder_deadline,
    lease_id,
    marker_id,
    new_heartbeat,
    seconds,
)
from functions.core.lease_balance import (
    BalancePolicy,
    assign,
    choose_to_shed,
    plan_moves,
    take_now,
)
from functions.log import fields

log = logging.getLogger("connector.leases")

TAKEOVERS = "takeovers"
MARKER_TTL = timedelta(days=7)  # far beyond any transaction's life; for an optional TTL policy
TIME_FIELDS = ("expiresAt", "renewedAt", "startedAt", "acquiredAt", "releasedAt")
READ_BATCH = 300  # documents per batched read (get_all) when looking for relays to take
ACQUIRE_BATCH = 200  # relays per batch of acquire or release writes (a marker + an update each)

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
        record = new_heartbeat(self.session, self.clock(), self.policy, held=0)
        try:
            self._heartbeat_ref(self.session).create(_stored(record), timeout=self.rpc_timeout)
        except exceptions.AlreadyExists:
            return False
        self.heartbeat_expires = record["expiresAt"]
        log.info("connector heartbeat started", extra=fields(holder=self.session))
        return True

    def heartbeat(self, held: int | None = None) -> bool:
        """Extend our heartbeat, and with it every lease we hold; False when it is lost: stop
        using all of them at once. `held` (relays held) is published for balancing."""
        ref = self._heartbeat_ref(self.session)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> float | None:
            current = _loaded(ref.get(transaction=tx, timeout=self.rpc_timeout))
            decision = decide_heartbeat(current, self.session, self.clock(), self.policy, held)
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

    def live_instances(self) -> dict[str, dict[str, Any]]:
        """Every session whose heartbeat is alive by our clock (ours included), with its record:
        one query of a handful of documents, whatever the number of relays."""
        # On renewedAt, not expiresAt: the TTL policy's field is exempted from indexing
        # (infra/firestore.tf), so a query on it would fail in production (the emulator has no
        # indexes to miss). A live heartbeat was renewed within lease_seconds.
        recent = self.clock() - self.policy.lease_seconds - self.policy.max_skew
        query = self.client.collection(INSTANCES).where(
            filter=firestore.FieldFilter("renewedAt", ">", datetime.fromtimestamp(recent, UTC))
        )
        live: dict[str, dict[str, Any]] = {}
        for snap in query.stream(timeout=self.rpc_timeout):
            record = _loaded(snap)
            if record is not None and heartbeat_alive(record, snap.id, self.clock()):
                live[snap.id] = record
        return live

    def scan(self, endpoints: Collection[str]) -> dict[str, dict[str, Any] | None]:
        """The lease records of these relays (None: absent), in batched reads."""
        ordered = sorted(endpoints)
        leases: dict[str, dict[str, Any] | None] = {}
        for start in range(0, len(ordered), READ_BATCH):
            chunk = ordered[start : start + READ_BATCH]
            refs = {self._ref(e).path: e for e in chunk}
            found = {
                s.reference.path: s
                for s in self.client.get_all(
                    [self._ref(e) for e in chunk], timeout=self.rpc_timeout
                )
            }
            leases.update({e: _loaded(found.get(path)) for path, e in refs.items()})
        return leases

    def released_since(self, since: float) -> dict[str, dict[str, Any]]:
        """Leases released (handed off or let go of) after `since` and not taken yet, by relay:
        a query that returns only those few, so a taker need not re-read every lease to see a
        hand-off (a new holder's record drops `releasedAt`)."""
        query = self.client.collection(LEASES).where(
            filter=firestore.FieldFilter("releasedAt", ">", datetime.fromtimestamp(since, UTC))
        )
        found: dict[str, dict[str, Any]] = {}
        for snap in query.stream(timeout=self.rpc_timeout):
            record = _loaded(snap)
            if record is not None and isinstance(record.get("relay"), str):
                found[record["relay"]] = record
        return found

    def candidates(self, endpoints: Collection[str]) -> list[str]:
        """The endpoints among these worth a try_acquire now (absent, released, ours, or held
        by an instance whose heartbeat expired), found with batched reads: waiting for relays
        held by a live instance costs a few reads per round, not a transaction per relay."""
        leases = self.scan(endpoints)
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
        return self.acquire_many([endpoint]).get(endpoint)

    def acquire_many(self, endpoints: Collection[str]) -> dict[str, int]:
        """try_acquire for many relays in a few round trips: the leases and their holders'
        heartbeats in batched reads, then one batch of precondition writes per ACQUIRE_BATCH
        relays (atomic: a taker of a hand-off or of a dead instance's relays does not pay a
        write per relay). A batch that loses a race is split in two, each half read and decided
        again, so one contested relay costs a few more round trips, not the batch. Returns
        endpoint -> generation of the leases won."""
        ordered = sorted(set(endpoints))
        won: dict[str, int] = {}
        for start in range(0, len(ordered), ACQUIRE_BATCH):
            won.update(self._acquire_split(ordered[start : start + ACQUIRE_BATCH]))
        return won

    def _acquire_split(self, chunk: list[str]) -> dict[str, int]:
        try:
            return self._acquire_batch(chunk)
        except exceptions.GoogleAPICallError as exc:
            if not lost_race(exc):
                raise
            self.conflicts += 1
            if len(chunk) == 1:
                return {}
            half = len(chunk) // 2
            return {**self._acquire_split(chunk[:half]), **self._acquire_split(chunk[half:])}

    def _acquire_batch(self, chunk: list[str]) -> dict[str, int]:
        session = self.session
        refs = [self._ref(e) for e in chunk]
        snaps = {s.reference.path: s for s in self.client.get_all(refs, timeout=self.rpc_timeout)}
        current = {
            e: (snaps.get(r.path), _loaded(snaps.get(r.path)))
            for e, r in zip(chunk, refs, strict=True)
        }
        holders = sorted(
            {
                str(lease["holder"])
                for _, lease in current.values()
                if lease is not None
                and lease.get("released") is not True
                and isinstance(lease.get("holder"), str)
                and lease.get("holder") != session
            }
        )
        beats: dict[str, dict[str, Any] | None] = {}
        if holders:
            refs_b = [self._heartbeat_ref(h) for h in holders]
            for snap in self.client.get_all(refs_b, timeout=self.rpc_timeout):
                beats[snap.id] = _loaded(snap)
        now = self.clock()
        batch = self.client.batch()
        planned: dict[str, int] = {}
        for endpoint, ref in zip(chunk, refs, strict=True):
            snap, lease = current[endpoint]
            holder = lease.get("holder") if lease else None
            beat = beats.get(holder) if isinstance(holder, str) else None
            decision = decide_acquire(lease, beat, session, endpoint, now)
            if decision.action is not Action.ACQUIRE or decision.record is None:
                continue
            record = decision.record
            if lease is None:
                batch.create(ref, _stored(record))
            else:
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
                stale = {key: firestore.DELETE_FIELD for key in lease if key not in record}
                assert snap is not None
                batch.update(
                    ref,
                    {**_stored(record), **stale},
                    option=self.client.write_option(last_update_time=snap.update_time),
                )
            planned[endpoint] = int(record["generation"])
        if planned:
            batch.commit(timeout=self.rpc_timeout)
        for endpoint, generation in planned.items():
            log.debug(
                "relay lease acquired",
                extra=fields(relay=endpoint, generation=generation, holder=session),
            )
        return planned

    def release(self, endpoint: str, generation: int, handoff_to: str | None = None) -> None:
        """End our lease now so another instance (`handoff_to`, when balancing) takes the relay
        at its next try. Call it only after this instance stopped reading the relay."""
        self.release_many([(endpoint, generation, handoff_to)])

    def release_many(self, items: Collection[tuple[str, int, str | None]]) -> int:
        """release for many relays: their leases in batched reads, then one batch of writes
        each holding only if its lease is unchanged since read (a lease is written by nobody
        else before our heartbeat's expiry, so this does not wait on anyone). A batch that
        loses anyway is retried relay by relay. Returns how many were released."""
        ordered = sorted(items)
        released = 0
        for start in range(0, len(ordered), ACQUIRE_BATCH):
            chunk = ordered[start : start + ACQUIRE_BATCH]
            try:
                released += self._release_batch(chunk)
            except exceptions.GoogleAPICallError as exc:
                if not lost_race(exc):
                    raise
                for item in chunk if len(chunk) > 1 else []:
                    with contextlib.suppress(exceptions.GoogleAPICallError):
                        released += self._release_batch([item])
        return released

    def _release_batch(self, chunk: list[tuple[str, int, str | None]]) -> int:
        refs = [self._ref(endpoint) for endpoint, _, _ in chunk]
        snaps = {s.reference.path: s for s in self.client.get_all(refs, timeout=self.rpc_timeout)}
        batch = self.client.batch()
        count = 0
        for (_, generation, handoff_to), ref in zip(chunk, refs, strict=True):
            snap = snaps.get(ref.path)
            update = decide_release(
                _loaded(snap),
                self.session,
                generation,
                self.heartbeat_expires,
                self.clock(),
                self.policy,
                handoff_to,
            )
            if update is None or snap is None:
                continue
            batch.update(
                ref,
                _stored(update),
                option=self.client.write_option(last_update_time=snap.update_time),
            )
            count += 1
        if count:
            batch.commit(timeout=self.rpc_timeout)
        return count


_FAILED = object()  # a Firestore call that raised or is still running after op_timeout
_HEARTBEAT = "<heartbeat>"  # in-flight key of the heartbeat call
_SCAN = "<survey>"  # in-flight key of the look at the live instances and the leases to take
_ACQUIRE = "<acquire>"  # in-flight key of a batch of acquisitions
MOVE_GROUP = 50  # relays stopped and released together when handing off
FULL_SCAN_EVERY = 30.0  # seconds between re-reads of every wanted lease held by a live instance
_UNKNOWN = object()  # a relay whose lease we have not read yet
# the released-leases query of a survey, beside its live-instances query
_SURVEY_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lease-survey")


def _survey(
    leases: RelayLeases,
    missing: list[str],
    seen: dict[str, str | None],
    full: bool,
    released_since: float,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any] | None]]:
    """In a thread: the live instances, then the leases worth a look among the relays we want
    and do not hold. A lease last seen held by a live instance is not re-read (every
    FULL_SCAN_EVERY it is); hand-offs and releases come from one query of the few released,
    run alongside (the round's latency is the longer of the two, not their sum)."""
    released = _SURVEY_POOL.submit(leases.released_since, released_since)
    live = leases.live_instances()
    others = live.keys() - {leases.session}  # a lease of ours that we do not hold: re-read
    to_read = missing if full else [e for e in missing if seen.get(e, _UNKNOWN) not in others]
    records = leases.scan(to_read) if to_read else {}
    wanted = set(missing)
    for endpoint, record in released.result(timeout=leases.rpc_timeout).items():
        if endpoint in wanted:
            records[endpoint] = record
    return live, records


class LeaseKeeper:
    """Keeps this instance's leases in step with the relays it should read, and its share of
    them fair among the live instances (functions.core.lease_balance).

    Every `renew_every` (or at once after `poke()`): renews the heartbeat (starting a session
    first if there is none) with the number of relays held, reads the live instances, takes the
    free relays it is preferred for and those handed to it, hands relays to under-loaded
    instances when it holds more than its share, and releases those no longer desired.
    `on_gain(endpoint, generation)` means start reading the relay; `on_loss(endpoint)` means
    stop at once. Both are called on the event loop and must not block. A holder whose
    heartbeat is not renewed calls on_loss for every relay by its deadline (started +
    lease_seconds - max_skew), before any other instance can take them over, even when the
    Firestore call never returns; it then starts a new session.

    `calls_in_progress(endpoint)` (on the loop, must not block) says how many calls a held relay
    has in progress: relays with none are handed off first, busy ones only after waiting a ring
    window (`ring_window`). While a hand-off to it is expected, the keeper looks every
    `fast_every` instead of every `renew_every`, so a moving relay is unread only briefly.
    """

    def __init__(
        self,
        leases: RelayLeases,
        *,
        op_timeout: float | None = None,
        calls_in_progress: Callable[[str], int] | None = None,
        ring_window: float | None = None,
        balance: BalancePolicy | None = None,
    ) -> None:
        self.leases = leases
        self.policy = leases.policy
        self.op_timeout = op_timeout or self.policy.renew_every
        self.balance = balance or BalancePolicy.for_renewal(self.policy.renew_every)
        if ring_window is not None:
            self.balance = dataclasses.replace(self.balance, ring_window=ring_window)
        self.fast_every = max(0.05, self.policy.renew_every / 20)
        self._calls_in_progress = calls_in_progress or (lambda endpoint: 0)
        self._held: dict[str, int] = {}
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._deadline: asyncio.TimerHandle | None = None  # None: no live heartbeat
        self._renew_due = 0.0  # loop time
        self._end_heartbeat = False  # run() ended: stop() ends the session
        self._wake = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._on_loss: LossCallback = lambda endpoint: None
        self._releases = 0  # numbers the release calls (their in-flight keys)
        # balancing state, loop time
        self._seen: dict[str, str | None] = {}  # endpoint -> holder last read (None: free)
        self._free_since: dict[str, float] = {}  # free relays we are not preferred for
        self._deferred: dict[str, float] = {}  # busy relays held back from a hand-off
        self._calm_until = 0.0  # no hand-offs before (after a hand-off or a gain)
        self._next_full_scan = 0.0
        self._expecting = False  # a hand-off to us is planned: look often
        self.loads: dict[str, int] = {}  # the last view: live session -> relays held
        self.moved_out = 0  # relays handed to other instances

    @property
    def held_back(self) -> int:
        """Relays with calls in progress whose hand-off waits."""
        return len(self._deferred)

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
                period = self.fast_every if self._expecting else self.policy.renew_every
                delay = started + period - loop.time()
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
        unwanted = [(e, self._held[e], None) for e in self._held if e not in wanted]
        for endpoint, _, _ in unwanted:
            self._lose(endpoint, "relay no longer watched")
        if unwanted:
            calls.append(self._release(unwanted))
        if _HEARTBEAT not in self._inflight:
            if not self._alive():
                await self._start_heartbeat()
            elif loop.time() >= self._renew_due - self.policy.renew_every / 2:
                # half a period of slack: a round woken by poke() does not renew early
                calls.append(self._renew())
        if self._alive() and _SCAN not in self._inflight:
            calls.append(self._look(wanted, desired, on_gain))
        await asyncio.gather(*calls)

    async def _call(
        self, key: str, fn: Callable[..., Any], *args: Any, relays: Collection[str] = ()
    ) -> Any:
        """fn in a thread, bounded by op_timeout. A call that overruns is abandoned, not
        cancelled (threads cannot be): its key, and the relays it is about, are skipped until
        it ends."""
        call = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        keys = [key, *relays]
        for k in keys:
            self._inflight[k] = call
        call.add_done_callback(lambda c: self._call_ended(keys, c))
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

    def _call_ended(self, keys: list[str], call: asyncio.Future[Any]) -> None:
        for key in keys:
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
        ok = await self._call(_HEARTBEAT, self.leases.heartbeat, len(self._held))
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

    def _publish_load_soon(self) -> None:
        """Our load changed: renew at the next round, and run it now, so the others' plans see
        the new count within a round instead of a renewal period."""
        self._renew_due = 0.0
        self._wake.set()

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

    async def _look(
        self, wanted: set[str], desired: Callable[[], Collection[str]], on_gain: GainCallback
    ) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        missing = sorted(e for e in wanted if e not in self._held and e not in self._inflight)
        full = now >= self._next_full_scan
        since = self.leases.clock() - 2 * self.policy.lease_seconds - self.balance.grace
        found = await self._call(
            _SCAN, _survey, self.leases, missing, dict(self._seen), full, since
        )
        if found is _FAILED or not self._alive():
            return
        if full:
            self._next_full_scan = now + FULL_SCAN_EVERY
        live, records = found
        session = self.leases.session
        loads = {s: _int(record.get("held")) for s, record in live.items()}
        loads[session] = len(self._held)
        self.loads = loads
        take = self._to_take(records, live, session, loop.time())
        gained = await self._acquire(take, desired, on_gain) if take else 0
        if gained:
            self._calm_until = loop.time() + self.balance.cooldown
            self._publish_load_soon()
        loads[session] = len(self._held)
        await self._balance(len(wanted), loads, session)

    def _to_take(
        self,
        records: dict[str, dict[str, Any] | None],
        live: dict[str, dict[str, Any]],
        session: str,
        now: float,
    ) -> list[str]:
        wall = self.leases.clock()
        take: list[str] = []
        for endpoint, record in records.items():
            holder = record.get("holder") if record is not None else None
            free = record is None or record.get("released") is True or holder not in live
            self._seen[endpoint] = None if free else str(holder)
            if endpoint in self._held:
                continue
            if not free and holder != session:
                self._free_since.pop(endpoint, None)
                continue
            free_for = now - self._free_since.setdefault(endpoint, now)
            if take_now(record, live, session, endpoint, wall, free_for, self.balance):
                take.append(endpoint)
        return take

    async def _balance(self, desired: int, loads: dict[str, int], session: str) -> None:
        """Hand our excess to under-loaded instances (lease_balance.plan_moves): stop reading
        each relay, then release it naming its taker."""
        loop = asyncio.get_running_loop()
        moves = plan_moves(desired, loads, self.balance.tolerance)
        self._expecting = any(m.target == session for m in moves)
        mine = [m for m in moves if m.source == session]
        count = min(sum(m.count for m in mine), self.balance.max_moves)
        now = loop.time()
        if count <= 0 or now < self._calm_until:
            if count <= 0:
                self._deferred = {}
            return
        calls = {e: self._calls(e) for e in self._held}
        chosen, self._deferred = choose_to_shed(
            self._held, count, calls, self._deferred, now, self.balance.ring_window
        )
        targets = assign(chosen, mine, session)
        if not targets:
            return
        moving = list(targets.items())
        self.moved_out += len(targets)
        log.info(
            "relays handed off",
            extra=fields(
                holder=session,
                moved=len(targets),
                to=sorted(set(targets.values())),
                held=len(self._held) - len(targets),
                held_back_busy=self.held_back,
            ),
        )
        self._calm_until = now + self.balance.cooldown
        # A group at a time, each stopped just before its release is written: a relay is
        # unread for its own group's write and its taker's next look, not for all of them.
        for start in range(0, len(moving), MOVE_GROUP):
            group = [(e, t) for e, t in moving[start : start + MOVE_GROUP] if e in self._held]
            releases = []
            for endpoint, target in group:
                if endpoint not in self._held:
                    continue  # lost meanwhile (heartbeat lapse)
                if not calls.get(endpoint) and self._calls(endpoint):
                    continue  # a call started meanwhile: it stays, the next round re-plans
                releases.append((endpoint, self._held[endpoint], target))
                self._lose(endpoint, "balancing", target=target, calls=calls.get(endpoint, 0))
                self._seen[endpoint] = None
            if releases:
                await self._release(releases)
        self._publish_load_soon()

    def _calls(self, endpoint: str) -> int:
        try:
            return int(self._calls_in_progress(endpoint))
        except Exception:
            log.exception("calls_in_progress failed", extra=fields(relay=endpoint))
            return 1  # unknown: treat as busy, so it moves last

    async def _acquire(
        self, endpoints: list[str], desired: Callable[[], Collection[str]], on_gain: GainCallback
    ) -> int:
        """Acquire these relays in batches (RelayLeases.acquire_many); on_gain for each won."""
        todo = [e for e in endpoints if e not in self._inflight and e not in self._held]
        if not todo or _ACQUIRE in self._inflight:
            return 0
        session = self.leases.session
        won = await self._call(_ACQUIRE, self.leases.acquire_many, todo, relays=todo)
        if won is _FAILED or not won:
            return 0
        if not self._alive() or session != self.leases.session:
            return 0  # our heartbeat lapsed meanwhile: the next round sorts it out
        wanted = set(desired())
        gained = 0
        for endpoint, generation in sorted(won.items()):
            if endpoint in self._held or endpoint not in wanted:
                continue  # unwanted meanwhile: the next round releases it
            self._held[endpoint] = generation
            self._seen[endpoint] = session
            self._free_since.pop(endpoint, None)
            gained += 1
            log.info(
                "relay lease gained",
                extra=fields(relay=endpoint, generation=generation, holder=session),
            )
            try:
                on_gain(endpoint, generation)
            except Exception:
                log.exception("on_gain failed", extra=fields(relay=endpoint))
        return gained

    async def _release(self, items: list[tuple[str, int, str | None]]) -> None:
        """Release these (already stopped) relays in batches (RelayLeases.release_many)."""
        self._releases += 1
        relays = [endpoint for endpoint, _, _ in items]
        await self._call(
            f"<release {self._releases}>", self.leases.release_many, items, relays=relays
        )

    def _lose_all(self, reason: str) -> None:
        for endpoint in list(self._held):
            self._lose(endpoint, reason)

    def _lose(self, endpoint: str, reason: str, **extra: Any) -> None:
        generation = self._held.pop(endpoint)
        self._seen.pop(endpoint, None)  # read again before any decision about it
        log.info(
            "relay lease dropped",
            extra=fields(relay=endpoint, generation=generation, reason=reason, **extra),
        )
        try:
            self._on_loss(endpoint)
        except Exception:
            log.exception("on_loss failed", extra=fields(relay=endpoint))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
