"""Firestore leases on relays (`relay_leases/{lease_id}`), so each relay is read by exactly one
connector instance; the decisions are functions.core.lease's. See docs/leases.md.

`RelayLeases` runs one decision per Firestore transaction (sync client). Every change of holder
also creates a write-once marker `relay_leases/{id}/takeovers/{epoch}-{generation}`: an `exists`
precondition is atomic on Firestore and on the local emulator alike (which does not isolate
transactions), so two instances can never both win one generation. `LeaseKeeper` drives it from
asyncio: Firestore calls run in threads, and a holder stops on its own deadline timer even when
Firestore hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from google.api_core import exceptions
from google.cloud import firestore

from functions.adapters.firestore_races import lost_race
from functions.core.lease import (
    LEASES,
    Action,
    LeasePolicy,
    decide_acquire,
    decide_release,
    decide_renew,
    holder_deadline,
    lease_id,
    marker_id,
    seconds,
)
from functions.log import fields

log = logging.getLogger("connector.leases")

TAKEOVERS = "takeovers"
RENEW_BATCH = 200  # leases renewed per transaction (Firestore allows 500 writes per commit)
MARKER_TTL = timedelta(days=7)  # far beyond any transaction's life; for an optional TTL policy
TIME_FIELDS = ("expiresAt", "renewedAt", "releasedAt")

GainCallback = Callable[[str, int], None]
LossCallback = Callable[[str], None]


def new_instance_id() -> str:
    """Unique per process; the Cloud Run revision and host name only help a human reading the
    lease documents."""
    parts = [os.environ.get("K_REVISION", ""), socket.gethostname(), str(os.getpid())]
    return "-".join([p for p in parts if p] + [uuid4().hex[:6]])


def _stored(record: dict[str, Any]) -> dict[str, Any]:
    """Core times (epoch seconds) as Firestore timestamps, readable in the console."""
    return {
        key: datetime.fromtimestamp(value, UTC) if key in TIME_FIELDS else value
        for key, value in record.items()
    }


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
        self.policy = LeasePolicy(lease_seconds, renew_every, max_skew)
        self.rpc_timeout = rpc_timeout  # per read, so a stuck call ends (LeaseKeeper won't wait)
        self.clock = clock
        self.conflicts = 0  # writes that lost to another instance's (precondition failed)

    def _ref(self, endpoint: str) -> firestore.DocumentReference:
        return self.client.collection(LEASES).document(lease_id(endpoint))

    def read(self, endpoint: str) -> dict[str, Any] | None:
        """The lease record, times as epoch seconds (for health pages and tests)."""
        snap = self._ref(endpoint).get(timeout=self.rpc_timeout)
        if not snap.exists:
            return None
        record = snap.to_dict() or {}
        return {k: seconds(v) if k in TIME_FIELDS else v for k, v in record.items()}

    def try_acquire(self, endpoint: str) -> int | None:
        """Take the relay's lease if it is absent, expired or ours: its generation, else None."""
        ref = self._ref(endpoint)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> int | None:
            snap = ref.get(transaction=tx, timeout=self.rpc_timeout)
            current = snap.to_dict() if snap.exists else None
            now = self.clock()
            decision = decide_acquire(current, self.instance_id, endpoint, now, self.policy)
            if decision.action is not Action.ACQUIRE or decision.record is None:
                return None
            record = decision.record
            if current is None:
                tx.create(ref, _stored(record))
            elif decision.takeover:
                # first in the commit: when it fails, nothing else is written
                marker = ref.collection(TAKEOVERS).document(marker_id(record))
                tx.create(
                    marker,
                    {
                        "relay": endpoint,
                        "holder": self.instance_id,
                        "generation": record["generation"],
                        "at": datetime.fromtimestamp(now, UTC),
                        "expiresAt": datetime.fromtimestamp(now, UTC) + MARKER_TTL,
                    },
                )
                tx.set(ref, _stored(record))
            else:
                tx.update(ref, _stored(record))
            return decision.generation

        try:
            generation = run(self.client.transaction())
        except exceptions.GoogleAPICallError as exc:
            if not lost_race(exc):
                raise
            self.conflicts += 1
            return None
        if generation is not None:
            log.debug(
                "relay lease acquired",
                extra=fields(relay=endpoint, generation=generation, holder=self.instance_id),
            )
        return generation

    def renew(self, endpoint: str, generation: int) -> bool:
        """Extend our lease; False when it is lost (another holder or generation, or too close to
        expiry): the caller must stop reading the relay at once."""
        ref = self._ref(endpoint)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> bool:
            snap = ref.get(transaction=tx, timeout=self.rpc_timeout)
            current = snap.to_dict() if snap.exists else None
            decision = decide_renew(
                current, self.instance_id, generation, self.clock(), self.policy
            )
            if decision.action is not Action.RENEW or decision.record is None:
                return False
            record = decision.record
            tx.update(ref, _stored({k: record[k] for k in ("expiresAt", "renewedAt")}))
            return True

        try:
            return run(self.client.transaction())
        except exceptions.GoogleAPICallError as exc:
            if not lost_race(exc):
                raise
            self.conflicts += 1
            return False

    def renew_many(self, held: dict[str, int]) -> dict[str, bool | None]:
        """renew() for many leases in one transaction per RENEW_BATCH: an instance holding a
        thousand relays pays a few commits per round instead of a thousand. None: unknown (the
        batch lost a race or failed); retried next round, the deadline timers stay armed."""
        results: dict[str, bool | None] = {}
        items = sorted(held.items())
        for start in range(0, len(items), RENEW_BATCH):
            chunk = dict(items[start : start + RENEW_BATCH])
            try:
                results.update(self._renew_chunk(chunk))
            except exceptions.GoogleAPICallError as exc:
                if not lost_race(exc):
                    raise
                self.conflicts += 1
                results.update(dict.fromkeys(chunk))
        return results

    def _renew_chunk(self, chunk: dict[str, int]) -> dict[str, bool | None]:
        refs = {endpoint: self._ref(endpoint) for endpoint in chunk}

        @firestore.transactional
        def run(tx: firestore.Transaction) -> dict[str, bool | None]:
            snaps = {
                s.reference.path: s
                for s in tx.get_all(list(refs.values()), timeout=self.rpc_timeout)
            }
            now = self.clock()
            out: dict[str, bool | None] = {}
            for endpoint, ref in refs.items():
                snap = snaps.get(ref.path)
                current = snap.to_dict() if snap is not None and snap.exists else None
                decision = decide_renew(
                    current, self.instance_id, chunk[endpoint], now, self.policy
                )
                if decision.action is not Action.RENEW or decision.record is None:
                    out[endpoint] = False
                    continue
                record = decision.record
                tx.update(ref, _stored({k: record[k] for k in ("expiresAt", "renewedAt")}))
                out[endpoint] = True
            return out

        return run(self.client.transaction())

    def release(self, endpoint: str, generation: int) -> None:
        """End our lease now so another instance takes the relay at its next try. Call it only
        after this instance stopped reading the relay."""
        ref = self._ref(endpoint)

        @firestore.transactional
        def run(tx: firestore.Transaction) -> None:
            snap = ref.get(transaction=tx, timeout=self.rpc_timeout)
            current = snap.to_dict() if snap.exists else None
            update = decide_release(
                current, self.instance_id, generation, self.clock(), self.policy
            )
            if update is not None:
                tx.update(ref, _stored(update))

        try:
            run(self.client.transaction())
        except exceptions.GoogleAPICallError as exc:
            if not lost_race(exc):
                raise


@dataclass
class _Held:
    generation: int
    renew_due: float  # loop time
    deadline: asyncio.TimerHandle  # stops us if no renewal succeeds in time


_FAILED = object()  # a Firestore call that raised or is still running after op_timeout
_RENEWALS = "<renewals>"  # in-flight key of the batched renewal call


class LeaseKeeper:
    """Keeps this instance's leases in step with the relays it should read.

    Every `renew_every` (or at once after `poke()`): tries to acquire each desired relay it does
    not hold, renews each one it holds, drops and releases those no longer desired. `on_gain`
    (endpoint, generation) means start reading the relay; `on_loss(endpoint)` means stop at once.
    Both are called on the event loop and must not block. A holder that cannot renew calls
    on_loss by its deadline (started + lease_seconds - max_skew), before any other instance can
    take the relay over, even when the Firestore call never returns.
    """

    def __init__(self, leases: RelayLeases, *, op_timeout: float | None = None) -> None:
        self.leases = leases
        self.policy = leases.policy
        self.op_timeout = op_timeout or self.policy.renew_every
        self._held: dict[str, _Held] = {}
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._to_release: dict[str, int] = {}  # held when the keeper stopped
        self._wake = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._on_loss: LossCallback = lambda endpoint: None

    @property
    def held(self) -> dict[str, int]:
        """endpoint -> generation of the leases this instance holds now."""
        return {endpoint: h.generation for endpoint, h in self._held.items()}

    def poke(self) -> None:
        """Run the next round now (the desired set changed)."""
        self._wake.set()

    async def run(
        self,
        desired: Callable[[], Collection[str]],
        on_gain: GainCallback,
        on_loss: LossCallback,
    ) -> None:
        """Until cancelled. On the way out on_loss is called for every held relay; their leases
        are not released (a crash looks the same): `stop()` releases them."""
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
            for endpoint in list(self._held):
                self._to_release[endpoint] = self._held[endpoint].generation
                self._lose(endpoint, "keeper stopped")

    async def stop(self, *, release: bool = True, timeout: float = 3.0) -> None:
        """Clean shutdown: stop the loop (on_loss for each held relay), then release the leases
        so other instances take over at their next try instead of after expiry."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        held, self._to_release = self._to_release, {}
        if not release or not held:
            return
        await asyncio.sleep(0)  # let the relay tasks cancelled by on_loss unwind first
        calls = [
            asyncio.ensure_future(asyncio.to_thread(self.leases.release, endpoint, generation))
            for endpoint, generation in held.items()
        ]
        done, pending = await asyncio.wait(calls, timeout=timeout)
        failed = len(pending) + sum(1 for c in done if c.exception() is not None)
        if failed:
            log.warning("relay leases not released", extra=fields(count=failed))

    async def _round(self, desired: Callable[[], Collection[str]], on_gain: GainCallback) -> None:
        wanted = set(desired())
        now = asyncio.get_running_loop().time()
        calls = []
        for endpoint in [e for e in self._held if e not in wanted]:
            generation = self._held[endpoint].generation
            self._lose(endpoint, "relay no longer watched")
            calls.append(self._release(endpoint, generation))
        due: dict[str, int] = {}
        for endpoint in wanted:
            if endpoint in self._inflight:
                continue  # the previous call is still running: no pile-up of threads
            held = self._held.get(endpoint)
            if held is None:
                calls.append(self._acquire(endpoint, desired, on_gain))
            elif now >= held.renew_due - self.policy.renew_every / 2:
                # half a period of slack: a round woken by poke() does not renew early
                due[endpoint] = held.generation
        if due and _RENEWALS not in self._inflight:
            calls.append(self._renew_all(due))
        await asyncio.gather(*calls)

    async def _call(self, endpoint: str, fn: Callable[..., Any], *args: Any) -> Any:
        """fn in a thread, bounded by op_timeout. A call that overruns is abandoned, not
        cancelled (threads cannot be): its endpoint is skipped until it ends."""
        call = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self._inflight[endpoint] = call
        call.add_done_callback(lambda c: self._call_ended(endpoint, c))
        done, _ = await asyncio.wait({call}, timeout=self.op_timeout)
        if not done:
            log.warning("lease call still running", extra=fields(relay=endpoint, op=fn.__name__))
            return _FAILED
        exc = call.exception()
        if exc is not None:
            log.warning(
                "lease call failed",
                extra=fields(relay=endpoint, op=fn.__name__, error=f"{type(exc).__name__}: {exc}"),
            )
            return _FAILED
        return call.result()

    def _call_ended(self, endpoint: str, call: asyncio.Future[Any]) -> None:
        if self._inflight.get(endpoint) is call:
            del self._inflight[endpoint]
        if not call.cancelled():
            call.exception()  # retrieved: an abandoned call's error is not reported twice

    async def _acquire(
        self, endpoint: str, desired: Callable[[], Collection[str]], on_gain: GainCallback
    ) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        generation = await self._call(endpoint, self.leases.try_acquire, endpoint)
        if generation is _FAILED or generation is None or endpoint in self._held:
            return
        deadline = holder_deadline(started, self.policy)
        if loop.time() >= deadline or endpoint not in desired():
            return  # too late to use, or unwanted meanwhile: the next round sorts it out
        self._held[endpoint] = _Held(
            generation,
            started + self.policy.renew_every,
            loop.call_at(deadline, self._expire, endpoint, generation),
        )
        log.info(
            "relay lease gained",
            extra=fields(relay=endpoint, generation=generation, holder=self.leases.instance_id),
        )
        try:
            on_gain(endpoint, generation)
        except Exception:
            log.exception("on_gain failed", extra=fields(relay=endpoint))

    async def _renew_all(self, due: dict[str, int]) -> None:
        started = asyncio.get_running_loop().time()
        results = await self._call(_RENEWALS, self.leases.renew_many, due)
        for endpoint, generation in due.items():
            ok = _FAILED if results is _FAILED else results.get(endpoint)
            self._renewed(endpoint, generation, started, _FAILED if ok is None else ok)

    def _renewed(self, endpoint: str, generation: int, started: float, ok: Any) -> None:
        loop = asyncio.get_running_loop()
        held = self._held.get(endpoint)
        if held is None or held.generation != generation:
            return  # dropped meanwhile (deadline passed or no longer desired)
        if ok is True:
            held.deadline.cancel()
            held.deadline = loop.call_at(
                holder_deadline(started, self.policy), self._expire, endpoint, generation
            )
            held.renew_due = started + self.policy.renew_every
        elif ok is False:
            self._lose(endpoint, "lease lost")
        # _FAILED: retried next round; the deadline timer stops us if none succeeds in time

    async def _release(self, endpoint: str, generation: int) -> None:
        await self._call(endpoint, self.leases.release, endpoint, generation)

    def _expire(self, endpoint: str, generation: int) -> None:
        held = self._held.get(endpoint)
        if held is not None and held.generation == generation:
            self._lose(endpoint, "lease not renewed in time")

    def _lose(self, endpoint: str, reason: str) -> None:
        held = self._held.pop(endpoint)
        held.deadline.cancel()
        log.info(
            "relay lease dropped",
            extra=fields(relay=endpoint, generation=held.generation, reason=reason),
        )
        try:
            self._on_loss(endpoint)
        except Exception:
            log.exception("on_loss failed", extra=fields(relay=endpoint))
