"""The balancing rules of functions.core.lease_balance: each rule on plain records, then whole
clusters of simulated instances on a simulated clock (start, a death, a join, busy relays),
built only from the pure decisions the LeaseKeeper runs."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from functions.core.lease import (
    Action,
    LeasePolicy,
    decide_acquire,
    decide_heartbeat,
    decide_release,
    heartbeat_alive,
    new_heartbeat,
)
from functions.core.lease_balance import (
    BalancePolicy,
    Move,
    assign,
    balanced,
    choose_to_shed,
    plan_moves,
    preferred_holder,
    quotas,
    take_now,
)

P = LeasePolicy()  # 20 s TTL, renew every 5 s, 5 s skew: takeover within 30 s
B = BalancePolicy.for_renewal(P.renew_every)
NOW = 1_000_000.0
RELAY = "pbx.example.com:7099"


def beat(holder: str, expires: float = NOW + 10, held: int = 0) -> dict[str, Any]:
    return {"holder": holder, "expiresAt": expires, "held": held}


def lease(holder: str = "b", generation: int = 3, **extra: Any) -> dict[str, Any]:
    return {"relay": RELAY, "holder": holder, "generation": generation, "epoch": "e", **extra}


# -- shares and plans ---------------------------------------------------------------------------


def test_quotas_are_floor_or_ceiling_and_add_up() -> None:
    q = quotas(10, {"c": 0, "a": 0, "b": 0})
    assert q == {"a": 4, "b": 3, "c": 3} and sum(q.values()) == 10
    # the ceiling goes to the most loaded: nothing moves where an uneven split must be
    assert quotas(10, {"a": 3, "b": 4, "c": 3}) == {"a": 3, "b": 4, "c": 3}
    assert quotas(1500, dict.fromkeys("xyzw", 0)) == dict.fromkeys("wxyz", 375)
    assert quotas(5, {}) == {}


def test_no_moves_while_every_load_is_within_the_slack() -> None:
    assert plan_moves(1500, {"a": 520, "b": 490, "c": 490}, 0.05) == []  # slack 25
    assert balanced(1500, {"a": 520, "b": 490, "c": 490}, 0.05)
    assert plan_moves(10, {"a": 4, "b": 3, "c": 3}, 0.05) == []  # as even as 10 / 3 gets
    assert plan_moves(10, {"a": 3, "b": 3, "c": 4}, 0.05) == []
    assert plan_moves(6, {"a": 4, "b": 2}, 0.05) == [Move("a", "b", 1)]  # 3 and 3 it can be
    assert plan_moves(7, {"a": 7}, 0.05) == []  # alone


def test_a_joiner_gets_an_even_slice_from_every_loaded_instance() -> None:
    moves = plan_moves(1500, {"a": 500, "b": 500, "c": 500, "d": 0}, 0.05)
    assert moves == [Move("a", "d", 125), Move("b", "d", 125), Move("c", "d", 125)]


def test_moves_bring_every_load_to_its_quota() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(2, 6)
        desired = rng.randint(1, 3000)
        cuts = sorted(rng.randint(0, desired) for _ in range(n - 1))
        loads = {
            f"s{i}": hi - lo
            for i, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, desired], strict=True))
        }
        after = dict(loads)
        for move in plan_moves(desired, loads, 0.05):
            assert move.count > 0 and loads[move.source] > loads[move.target]
            after[move.source] -= move.count
            after[move.target] += move.count
        assert sum(after.values()) == desired
        assert balanced(desired, after, 0.05), (loads, after)


def test_an_under_loaded_instance_alone_triggers_moves_to_it() -> None:
    # nobody is over the slack, but c is 10% short: a and b each hand it their extra
    moves = plan_moves(1500, {"a": 525, "b": 525, "c": 450}, 0.05)
    assert moves == [Move("a", "c", 25), Move("b", "c", 25)]
    assert plan_moves(10, {"a": 4, "b": 4, "c": 2}, 0.05) == [Move("b", "c", 1)]


def test_free_relays_are_taken_before_anything_moves() -> None:
    # c died: 500 relays are free; survivors take them (rendezvous hashing), no hand-offs
    assert plan_moves(1500, {"a": 500, "b": 500}, 0.05) == []
    # a few free ones (within the slack) do not hold a needed move back
    assert plan_moves(1500, {"a": 900, "b": 590}, 0.05) == [Move("a", "b", 150)]


def test_plans_agree_whichever_instance_computes_them() -> None:
    loads = {"c": 10, "a": 700, "b": 300, "d": 490}
    assert plan_moves(1500, loads, 0.05) == plan_moves(1500, dict(reversed(loads.items())), 0.05)


# -- who takes a free relay ---------------------------------------------------------------------


def test_rendezvous_hashing_is_even_and_moves_only_the_departed_share() -> None:
    relays = [f"pbx{i}.example:7099" for i in range(1500)]
    three = {r: preferred_holder(r, ["a", "b", "c"]) for r in relays}
    counts = Counter(three.values())
    assert all(abs(n - 500) <= 50 for n in counts.values()), counts
    two = {r: preferred_holder(r, ["a", "b"]) for r in relays}
    assert all(two[r] == three[r] for r in relays if three[r] != "c")
    assert preferred_holder(RELAY, []) is None


def test_take_now_rules() -> None:
    live = {"a": beat("a"), "b": beat("b")}
    relay_for_a = next(
        f"pbx{i}:1" for i in range(100) if preferred_holder(f"pbx{i}:1", live) == "a"
    )
    relay_for_b = next(
        f"pbx{i}:1" for i in range(100) if preferred_holder(f"pbx{i}:1", live) == "b"
    )

    def take(record: dict | None, endpoint: str = RELAY, free_for: float = 0.0) -> bool:
        return take_now(record, live, "a", endpoint, NOW, free_for, B)

    assert not take(lease("b"))  # held by a live instance
    assert take(lease("a"))  # ours in this session
    assert take(lease("b", released=True, handoffTo="a"))  # handed to us
    assert not take(lease("a", released=True, handoffTo="b"))  # handed to b, alive
    assert take(lease("a", released=True, handoffTo="b"), free_for=B.grace)  # b did not take it
    assert take(lease("b", released=True, handoffTo="gone"))  # handed to a dead instance
    assert take(lease("b", released=True))  # let go of without a taker
    # absent, or its holder dead: the preferred live instance takes it now, others after grace
    assert take(None, relay_for_a) and take(lease("dead"), relay_for_a)
    assert not take(None, relay_for_b) and not take(lease("dead"), relay_for_b)
    assert take(None, relay_for_b, free_for=B.grace)


def test_relays_with_calls_in_progress_move_last_and_only_after_a_ring_window() -> None:
    held = ["r1", "r2", "r3", "r4"]
    calls = {"r1": 1, "r3": 2}
    chosen, deferred = choose_to_shed(held, 2, calls, {}, NOW, 60)
    assert chosen == ["r2", "r4"] and deferred == {}
    chosen, deferred = choose_to_shed(held, 3, calls, {}, NOW, 60)
    assert chosen == ["r2", "r4"] and deferred == {"r1": NOW}
    chosen, deferred = choose_to_shed(held, 3, calls, deferred, NOW + 59, 60)
    assert chosen == ["r2", "r4"] and deferred == {"r1": NOW}  # the wait counts from the first
    chosen, deferred = choose_to_shed(held, 3, calls, deferred, NOW + 60, 60)
    assert chosen == ["r2", "r4", "r1"] and deferred == {}
    assert assign(chosen, [Move("a", "c", 1), Move("a", "d", 2)], "a") == {
        "r2": "c",
        "r4": "d",
        "r1": "d",
    }


# -- clusters on a simulated clock --------------------------------------------------------------


@dataclass
class Instance:
    name: str
    offset: float  # when in each renew period its rounds run
    held: dict[str, int] = field(default_factory=dict)
    expires: float = 0.0
    alive: bool = True
    free_since: dict[str, float] = field(default_factory=dict)
    deferred: dict[str, float] = field(default_factory=dict)
    calm_until: float = 0.0


class Cluster:
    """The store (heartbeats, leases) and instances running the keeper's round with the pure
    decisions: renew with `held`, take what take_now allows, hand off what plan_moves says."""

    def __init__(self, relays: int) -> None:
        self.relays = [f"pbx{i}.example:7099" for i in range(relays)]
        self.beats: dict[str, dict[str, Any]] = {}
        self.leases: dict[str, dict[str, Any]] = {}
        self.instances: dict[str, Instance] = {}
        self.calls: dict[str, int] = {}  # relay -> calls in progress
        self.now = NOW
        self.moves = 0
        self.busy_moves: list[tuple[float, str]] = []  # (when, relay) moved with calls

    def start(self, name: str, offset: float) -> None:
        self.instances[name] = Instance(name, offset)
        self.beats[name] = new_heartbeat(name, self.now, P, held=0)
        self.instances[name].expires = self.beats[name]["expiresAt"]

    def kill(self, name: str) -> None:
        self.instances[name].alive = False
        self.instances[name].held.clear()  # a crash: it reads nothing from now on

    def live(self) -> dict[str, dict[str, Any]]:
        return {s: b for s, b in self.beats.items() if heartbeat_alive(b, s, self.now)}

    def round(self, inst: Instance) -> None:
        d = decide_heartbeat(self.beats[inst.name], inst.name, self.now, P, len(inst.held))
        assert d.action is Action.RENEW and d.record is not None
        self.beats[inst.name].update(d.record)
        inst.expires = d.record["expiresAt"]
        live = self.live()
        gained = False
        for relay in self.relays:
            if relay in inst.held:
                continue
            record = self.leases.get(relay)
            holder = record.get("holder") if record else None
            free = record is None or record.get("released") is True or holder not in live
            if not free:
                inst.free_since.pop(relay, None)
                continue
            free_for = self.now - inst.free_since.setdefault(relay, self.now)
            if not take_now(record, live, inst.name, relay, self.now, free_for, B):
                continue
            beat = live.get(holder) if holder else None
            decision = decide_acquire(record, beat, inst.name, relay, self.now)
            assert decision.action is Action.ACQUIRE and decision.record is not None
            self.leases[relay] = dict(decision.record)  # handoffTo and releasedAt dropped
            inst.held[relay] = int(decision.record["generation"])
            gained = True
        if gained:
            inst.calm_until = self.now + B.cooldown
            return
        loads = {s: int(b.get("held", 0)) for s, b in live.items()}
        loads[inst.name] = len(inst.held)
        plan = plan_moves(len(self.relays), loads, B.tolerance)
        mine = [m for m in plan if m.source == inst.name]
        count = min(sum(m.count for m in mine), B.max_moves)
        if count <= 0 or self.now < inst.calm_until:
            return
        chosen, inst.deferred = choose_to_shed(
            inst.held, count, self.calls, inst.deferred, self.now, B.ring_window
        )
        for relay, target in assign(chosen, mine, inst.name).items():
            generation = inst.held.pop(relay)  # stop reading first
            update = decide_release(
                self.leases[relay], inst.name, generation, inst.expires, self.now, P, target
            )
            assert update is not None
            self.leases[relay].update(update)
            self.moves += 1
            if self.calls.get(relay, 0):
                self.busy_moves.append((self.now, relay))
        inst.calm_until = self.now + B.cooldown

    def run(self, seconds: float, until=None, step: float = 0.25) -> float | None:
        """Advance the clock; each live instance runs its round once per renew period at its
        offset. Checks that no relay ever has two readers. Returns how long `until` took."""
        start = self.now
        end = self.now + seconds
        while self.now < end:
            for inst in self.instances.values():
                phase = (self.now - NOW - inst.offset) % P.renew_every
                if inst.alive and phase < step:
                    self.round(inst)
            readers = Counter(r for i in self.instances.values() for r in i.held)
            assert max(readers.values(), default=0) <= 1, "two readers"
            if until is not None and until():
                return self.now - start
            self.now += step
        return None

    def loads(self) -> dict[str, int]:
        return {n: len(i.held) for n, i in self.instances.items() if i.alive}

    def covered(self) -> bool:
        return sum(self.loads().values()) == len(self.relays)

    def within_10_percent(self) -> bool:
        loads = self.loads()
        share = len(self.relays) / len(loads)
        return self.covered() and all(abs(n - share) <= 0.1 * share for n in loads.values())


def test_three_instances_share_1500_relays_and_recover_from_a_death_and_a_join() -> None:
    c = Cluster(1500)
    c.start("a", 0.0)  # a alone first: it takes everything
    c.run(6)
    assert c.loads() == {"a": 1500}
    c.start("b", 1.3)
    c.start("c", 3.1)
    took = c.run(120, c.within_10_percent)
    assert took is not None and took <= 60
    c.run(30)  # settled: stays balanced, nothing moves
    moves = c.moves
    c.run(30)
    assert c.moves == moves and c.within_10_percent()

    c.kill("b")
    took = c.run(60, c.covered)
    assert took is not None and took <= P.takeover_bound
    assert c.run(60, c.within_10_percent) is not None  # rebalanced

    moves = c.moves
    c.start("d", 2.2)
    took = c.run(180, c.within_10_percent)
    assert took is not None and took <= 120
    # a join moves about the joiner's share, not the cluster's relays
    assert c.moves - moves <= 1.2 * 1500 / 3


def test_busy_relays_wait_for_their_calls_or_the_ring_window() -> None:
    c = Cluster(40)
    c.start("a", 0.0)
    c.run(6)
    c.calls = {relay: 1 for relay in c.relays[:30]}  # 30 of a's 40 relays have calls
    c.start("b", 2.0)
    c.run(30)
    assert c.busy_moves == []  # the 10 idle ones moved, the busy ones waited
    assert c.loads() == {"a": 30, "b": 10}
    for relay in c.relays[:5]:  # some calls end
        c.calls[relay] = 0
    c.run(20)
    assert c.busy_moves == [] and c.loads() == {"a": 25, "b": 15}
    c.run(60, lambda: c.loads() == {"a": 20, "b": 20})  # the rest move after a ring window
    assert c.loads() == {"a": 20, "b": 20}
    first_busy = min(t for t, _ in c.busy_moves)
    assert first_busy - (NOW + 6 + 2.0) >= B.ring_window  # not before a ring window passed


@pytest.mark.parametrize("relays", [1, 2, 5, 7])
def test_small_clusters_settle_as_evenly_as_the_numbers_allow(relays: int) -> None:
    c = Cluster(relays)
    for n, name in enumerate("abc"):
        c.start(name, n * 1.1)
    c.run(60)
    loads = sorted(c.loads().values())
    assert sum(loads) == relays and loads[-1] - loads[0] <= 1
