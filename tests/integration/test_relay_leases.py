"""Relay leases against the real Firestore emulator: races between instances, heartbeat expiry,
fencing, release, and LeaseKeeper pairs through a crash and a cut-off holder. Short timings
(TTL 1.2 s) keep the whole file within a few seconds."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import firestore

from functions.connector.adapters.relay_leases import TAKEOVERS, LeaseKeeper, RelayLeases
from functions.core.lease import LEASES, lease_id
from tests.support import FirestoreEmulator

PROJECT = "demo-makecall-test"
EP = "pbx.example.com:7099"
TIMING: dict[str, float] = {"lease_seconds": 1.2, "renew_every": 0.2, "max_skew": 0.3}
SLACK = 0.35  # scheduling and emulator round trips on a busy test machine


@pytest.fixture
def clean(emulator: FirestoreEmulator) -> None:
    emulator.reset()


def instance(name: str, cls: type[RelayLeases] = RelayLeases, **timing: float) -> RelayLeases:
    """One connector instance: its own client, as separate processes would have."""
    return cls(firestore.Client(project=PROJECT), name, **{**TIMING, **timing})


def lease_doc(endpoint: str = EP) -> firestore.DocumentReference:
    return firestore.Client(project=PROJECT).collection(LEASES).document(lease_id(endpoint))


# -- RelayLeases ------------------------------------------------------------------------------


def beating(name: str, cls: type[RelayLeases] = RelayLeases) -> RelayLeases:
    leases = instance(name, cls)
    assert leases.start_heartbeat()
    return leases


def keep_alive(leases: RelayLeases) -> None:
    """Renew, or start a new session when the heartbeat lapsed (as LeaseKeeper does)."""
    if not leases.heartbeat():
        leases.new_session()
        assert leases.start_heartbeat()


def test_concurrent_acquires_elect_exactly_one_holder(clean: None) -> None:
    racers = [beating(f"i{n}") for n in range(4)]
    rounds = 24
    with ThreadPoolExecutor(len(racers)) as pool:
        for r in range(rounds):
            endpoint = f"pbx{r}.example.com:7099"
            generation = 1
            if r % 2:  # odd rounds race to take over a dead instance's lease, even ones a new one
                lease_doc(endpoint).set(
                    {"relay": endpoint, "holder": "dead", "generation": 5, "epoch": "e",
                     "released": False}
                )  # fmt: skip
                generation = 6
            start = threading.Barrier(len(racers))

            def race(leases: RelayLeases, endpoint: str = endpoint, start=start) -> int | None:
                start.wait(timeout=5)
                return leases.try_acquire(endpoint)

            results = list(pool.map(race, racers))
            winners = [(lz.session, g) for lz, g in zip(racers, results, strict=True) if g]
            assert winners == [(winners[0][0], generation)], f"round {r}: {results}"
            stored = lease_doc(endpoint).get().to_dict()
            assert (stored["holder"], stored["generation"]) == winners[0]
    # the races were real: some losers read the same state as the winner and lost only at commit
    assert sum(lz.conflicts for lz in racers) > 0


def test_loser_takes_over_only_after_the_heartbeat_expired_and_the_old_holder_is_fenced(
    clean: None,
) -> None:
    a, b = beating("a"), beating("b")
    assert a.try_acquire(EP) == 1
    assert b.try_acquire(EP) is None and b.candidates([EP]) == []
    renewed_from = time.time()
    assert a.heartbeat()
    assert b.try_acquire(EP) is None

    deadline = time.monotonic() + 3
    while (generation := b.try_acquire(EP)) is None and time.monotonic() < deadline:
        keep_alive(b)
        time.sleep(0.05)
    taken_at = time.time()
    assert generation == 2
    assert taken_at >= renewed_from + TIMING["lease_seconds"]  # not before a's heartbeat ran out
    assert taken_at - renewed_from < TIMING["lease_seconds"] + 1.0

    assert a.heartbeat() is False  # fenced: a must stop reading
    a.release(EP, 1)  # a stale release leaves b's lease alone
    record = b.read(EP)
    assert record is not None
    assert (record["holder"], record["generation"], record["released"]) == ("b", 2, False)
    keep_alive(b)
    a.new_session()
    assert a.start_heartbeat()
    assert a.try_acquire(EP) is None  # a's new session waits like anyone else


def test_release_lets_another_instance_take_over_at_once(clean: None) -> None:
    a, b = beating("a"), beating("b")
    assert a.try_acquire(EP) == 1
    assert b.try_acquire(EP) is None
    a.release(EP, 1)
    assert b.candidates([EP]) == [EP]
    assert b.try_acquire(EP) == 2  # no waiting for the TTL
    assert a.try_acquire(EP) is None
    markers = lease_doc().collection(TAKEOVERS).get()
    assert [(m.get("holder"), m.get("generation")) for m in markers] == [("b", 2)]


def test_a_heartbeat_keeps_every_lease_alive_without_writing_them(clean: None) -> None:
    a = beating("a")
    relays = [f"pbx{i}.example:7099" for i in range(40)]
    for start in range(0, 40, 8):  # 40 transactions can outlast a 1.2 s lease on a busy machine
        assert a.heartbeat()
        assert [a.try_acquire(ep) for ep in relays[start : start + 8]] == [1] * 8
    written = {ep: lease_doc(ep).get().update_time for ep in relays}
    assert a.heartbeat()
    beat_before = a.read_heartbeat()
    for _ in range(5):  # 1.5 s: longer than one lease
        time.sleep(0.3)
        assert a.heartbeat()
    assert time.time() > beat_before["expiresAt"]  # the leases outlived their first heartbeat
    assert {ep: lease_doc(ep).get().update_time for ep in relays} == written  # no lease writes
    b = beating("b")
    assert b.candidates(relays) == []  # all still a's


def test_candidates_finds_free_and_orphaned_relays_in_batched_reads(clean: None) -> None:
    a, b = beating("a"), beating("b")
    mine = [f"pbx{i}.example:7099" for i in range(6)]
    for ep in mine[:4]:
        assert a.try_acquire(ep) == 1
    a.release(mine[0], 1)
    assert sorted(b.candidates(mine)) == sorted([mine[0], mine[4], mine[5]])
    a.end_heartbeat()  # clean shutdown: one write frees every lease of the session
    assert a.read_heartbeat()["expiresAt"] == 0.0
    assert sorted(b.candidates(mine)) == sorted(mine)
    assert [b.try_acquire(ep) for ep in mine[1:4]] == [2, 2, 2]
    assert b.candidates(mine) == sorted(mine)  # its own leases count as ones to (re)take
    assert a.try_acquire(mine[1]) is None


# -- LeaseKeeper ------------------------------------------------------------------------------


class Timeline:
    """Gains and losses of every keeper, on one monotonic clock."""

    def __init__(self) -> None:
        self.events: list[tuple[float, float, str, str, int | None]] = []

    def callbacks(self, name: str) -> tuple[Callable[[str, int], None], Callable[[str], None]]:
        def gain(endpoint: str, generation: int) -> None:
            self.events.append((time.monotonic(), time.time(), name, "gain", generation))

        def loss(endpoint: str) -> None:
            self.events.append((time.monotonic(), time.time(), name, "loss", None))

        return gain, loss

    def first(self, name: str, kind: str) -> tuple[float, float]:
        for mono, wall, who, what, _ in self.events:
            if (who, what) == (name, kind):
                return mono, wall
        raise AssertionError(f"no {kind} for {name}: {self.events}")

    def assert_one_holder_at_a_time(self) -> None:
        holding: set[str] = set()
        for _, _, who, what, _ in self.events:
            if what == "gain":
                assert not holding, f"{who} gained while {holding} held: {self.events}"
                holding.add(who)
            else:
                holding.discard(who)


async def until(check: Callable[[], Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def start(keeper: LeaseKeeper, timeline: Timeline, name: str, desired=None) -> asyncio.Task:
    gain, loss = timeline.callbacks(name)
    return asyncio.create_task(keeper.run(desired or (lambda: {EP}), gain, loss))


async def test_one_keeper_holds_and_a_crashed_holder_is_taken_over_in_time(clean: None) -> None:
    la, lb = instance("a"), instance("b")
    ka, kb = LeaseKeeper(la), LeaseKeeper(lb)
    timeline = Timeline()
    tasks = {"a": await start(ka, timeline, "a"), "b": await start(kb, timeline, "b")}
    keepers = {"a": ka, "b": kb}
    await until(lambda: ka.held or kb.held, 2)
    holder = "a" if ka.held else "b"
    other = "b" if holder == "a" else "a"
    await asyncio.sleep(1.5)  # longer than the TTL: the holder keeps it by renewing
    assert keepers[holder].held == {EP: 1} and keepers[other].held == {}

    tasks[holder].cancel()  # crash: no release
    await asyncio.gather(tasks[holder], return_exceptions=True)
    crashed = time.monotonic()
    crashed_leases = la if holder == "a" else lb
    record = crashed_leases.read(EP)
    assert record is not None and record["holder"] == crashed_leases.session == holder
    heartbeat = crashed_leases.read_heartbeat()
    assert heartbeat is not None

    bound = keepers[other].policy.takeover_bound
    await until(lambda: keepers[other].held, bound + 1)
    gained_mono, gained_wall = timeline.first(other, "gain")
    assert gained_mono - crashed <= bound
    assert gained_wall >= heartbeat["expiresAt"]  # only once the crashed holder's beat ran out
    assert keepers[other].held == {EP: 2}
    timeline.assert_one_holder_at_a_time()
    await keepers[other].stop()


class CutOff(RelayLeases):
    """An instance that loses Firestore: calls fail at once, or hang until healed."""

    mode: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.healed = threading.Event()

    def _gate(self) -> None:
        if self.mode == "hang":
            self.healed.wait(timeout=10)
        if self.mode is not None:
            raise exceptions.ServiceUnavailable("cut off")

    def try_acquire(self, endpoint: str) -> int | None:
        self._gate()
        return super().try_acquire(endpoint)

    def candidates(self, endpoints: Any) -> list[str]:
        self._gate()
        return super().candidates(endpoints)

    def start_heartbeat(self) -> bool:
        self._gate()
        return super().start_heartbeat()

    def heartbeat(self) -> bool:
        self._gate()
        return super().heartbeat()


@pytest.mark.parametrize("mode", ["error", "hang"])
async def test_cut_off_holder_stops_before_another_takes_over(clean: None, mode: str) -> None:
    la, lb = instance("a", CutOff), instance("b")
    assert isinstance(la, CutOff)
    ka, kb = LeaseKeeper(la), LeaseKeeper(lb)
    timeline = Timeline()
    ta = await start(ka, timeline, "a")
    await until(lambda: ka.held, 2)
    tb = await start(kb, timeline, "b")
    await asyncio.sleep(0.5)
    assert ka.held == {EP: 1} and kb.held == {}

    la.mode = mode
    cut = time.monotonic()
    policy = la.policy
    await until(lambda: kb.held, policy.takeover_bound + 1)
    lost, _ = timeline.first("a", "loss")
    gained, _ = timeline.first("b", "gain")
    assert lost < gained  # never both reading
    assert lost - cut <= policy.lease_seconds - policy.max_skew + SLACK
    assert gained - cut <= policy.takeover_bound + SLACK

    la.mode = None  # back online: b holds the relay now, a keeps waiting
    la.healed.set()
    await asyncio.sleep(0.6)
    assert ka.held == {} and kb.held == {EP: 2}
    timeline.assert_one_holder_at_a_time()
    ta.cancel()
    await asyncio.gather(ta, return_exceptions=True)
    await kb.stop()
    del tb


async def test_dropping_or_stopping_a_holder_hands_over_without_waiting_for_expiry(
    clean: None,
) -> None:
    ka, kb = LeaseKeeper(instance("a")), LeaseKeeper(instance("b"))
    timeline = Timeline()
    wanted_by_a = {EP}
    await start(ka, timeline, "a", lambda: wanted_by_a)
    await until(lambda: ka.held, 2)
    await start(kb, timeline, "b")
    await asyncio.sleep(0.3)

    wanted_by_a.clear()  # a's users moved away: a lets go of the relay at once
    ka.poke()
    dropped = time.monotonic()
    await until(lambda: kb.held, 1)
    assert time.monotonic() - dropped < kb.policy.renew_every + SLACK  # not the 1.2 s TTL
    assert ka.held == {} and kb.held == {EP: 2}

    wanted_by_a.add(EP)
    await kb.stop()  # clean shutdown (SIGTERM): on_loss, then release
    stopped = time.monotonic()
    await until(lambda: ka.held, 1)
    assert time.monotonic() - stopped < ka.policy.renew_every + SLACK
    assert ka.held == {EP: 3}
    timeline.assert_one_holder_at_a_time()
    assert [(who, what) for _, _, who, what, _ in timeline.events] == [
        ("a", "gain"), ("a", "loss"), ("b", "gain"), ("b", "loss"), ("a", "gain"),
    ]  # fmt: skip
    session = ka.leases.session
    await ka.stop()
    record = lease_doc().get().to_dict()
    assert (record["holder"], record["generation"], record["released"]) == ("a", 3, False)
    heartbeat = ka.leases.read_heartbeat(session)
    assert heartbeat is not None and heartbeat["expiresAt"] == 0.0 and heartbeat["ended"] is True


# -- balancing --------------------------------------------------------------------------------


async def test_a_joiner_gets_its_share_by_hand_offs_idle_relays_first(clean: None) -> None:
    relays = {f"pbx{i}.example:7099" for i in range(6)}
    busy = set(sorted(relays)[:4])  # four of the six have calls in progress
    events: list[tuple[float, str, str, str]] = []  # (monotonic, who, what, relay)

    def callbacks(name: str) -> tuple[Callable[[str, int], None], Callable[[str], None]]:
        def gain(endpoint: str, generation: int) -> None:
            events.append((time.monotonic(), name, "gain", endpoint))

        def loss(endpoint: str) -> None:
            events.append((time.monotonic(), name, "loss", endpoint))

        return gain, loss

    ring_window = 1.5
    ka = LeaseKeeper(
        instance("a"),
        calls_in_progress=lambda e: int(e in busy),
        ring_window=ring_window,
    )
    kb = LeaseKeeper(instance("b"), ring_window=ring_window)
    ta = asyncio.create_task(ka.run(lambda: relays, *callbacks("a")))
    await until(lambda: len(ka.held) == 6, 3)  # alone: a takes everything
    tb = asyncio.create_task(kb.run(lambda: relays, *callbacks("b")))
    joined = time.monotonic()
    await until(lambda: len(kb.held) == 2, 3)  # the two idle ones move first
    assert set(kb.held) == relays - busy
    await asyncio.sleep(ring_window / 2)
    assert len(kb.held) == 2  # the busy ones wait for their calls ...
    await until(lambda: len(kb.held) == 3, ring_window + 2)  # ... or a ring window
    moved_busy = [t for t, who, what, e in events if who == "b" and what == "gain" and e in busy]
    assert moved_busy and moved_busy[0] - joined >= ring_window
    await asyncio.sleep(1.0)
    assert len(ka.held) == 3 and len(kb.held) == 3  # settled: nothing else moves
    assert ka.moved_out == 3 and kb.moved_out == 0

    # never two readers of a relay, and each hand-off left it unread only briefly
    readers: dict[str, str] = {}
    gaps = []
    for endpoint in kb.held:  # each move: stopped, then taken
        kinds = [(who, what) for _, who, what, e in events if e == endpoint]
        assert kinds[-2:] == [("a", "loss"), ("b", "gain")], kinds
    for t, who, what, endpoint in events:
        if what == "gain":
            assert endpoint not in readers, f"{who} gained {endpoint} held by {readers}"
            readers[endpoint] = who
            lost = [lt for lt, w, wh, e in events if e == endpoint and wh == "loss" and lt <= t]
            if lost:
                gaps.append(t - lost[-1])
        else:
            assert readers.pop(endpoint) == who
    assert len(gaps) == 3 and max(gaps) < kb.fast_every + SLACK  # not a renew period per move
    ta.cancel()
    await asyncio.gather(ta, return_exceptions=True)
    await kb.stop()
    del tb


class RacedOnce(RelayLeases):
    """Between reading a batch and committing it, a rival takes one of its relays (once)."""

    rival: RelayLeases
    contested = ""

    def _acquire_batch(self, chunk: list[str]) -> dict[str, int]:
        if self.contested not in chunk or getattr(self, "raced", False):
            return super()._acquire_batch(chunk)
        self.raced = True
        make_batch = self.client.batch

        def batch() -> Any:
            writes = make_batch()
            commit = writes.commit

            def racing_commit(*args: Any, **kwargs: Any) -> Any:
                assert self.rival.try_acquire(self.contested) == 1
                return commit(*args, **kwargs)

            writes.commit = racing_commit  # type: ignore[method-assign]
            return writes

        self.client.batch = batch  # type: ignore[method-assign]
        try:
            return super()._acquire_batch(chunk)
        finally:
            self.client.batch = make_batch  # type: ignore[method-assign]


def test_a_batch_that_loses_one_race_still_wins_the_others(clean: None) -> None:
    relays = [f"pbx{i}.example:7099" for i in range(10)]
    a = instance("a", RacedOnce)
    assert isinstance(a, RacedOnce)
    assert a.start_heartbeat()
    a.rival, a.contested = beating("b"), relays[3]
    won = a.acquire_many(relays)
    assert sorted(won) == sorted(set(relays) - {relays[3]}) and set(won.values()) == {1}
    assert a.conflicts >= 1  # the whole batch failed at commit, then its halves were retried
    assert lease_doc(relays[3]).get().to_dict()["holder"] == "b"
    assert {lease_doc(e).get().to_dict()["holder"] for e in won} == {"a"}
    # and a release batch only touches what is still ours
    a.release_many([(e, 1, "b") for e in relays])
    assert lease_doc(relays[3]).get().to_dict()["released"] is False
    assert all(lease_doc(e).get().to_dict()["handoffTo"] == "b" for e in won)
