"""How relays are spread over the live connector instances: pure decisions on plain records and
explicit clocks, run by functions.connector.adapters.relay_leases.LeaseKeeper. See docs/leases.md.

- Free relays (no lease yet, or their holder's heartbeat expired) go to the instance that
  rendezvous hashing prefers among the live instances, so instances taking over a dead one's
  relays split them evenly without racing for the same ones. Another instance takes such a
  relay only after `grace`, in case the preferred one cannot.
- Each live instance publishes how many relays it holds in its heartbeat (`held`). When one's
  load strays further than `tolerance` from the fair share, the over-loaded ones hand relays to
  the under-loaded ones: stop reading, then release with `handoffTo` naming the taker (never
  two readers at once; the taker acquires under the usual fencing).
- Relays with calls in progress are moved last, and only once they have waited a ring window.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from functions.core.lease import Action, decide_acquire


@dataclass(frozen=True, slots=True)
class BalancePolicy:
    # A load may drift this far from the fair share (a fraction of it, at least one relay)
    # before relays move; half the 10% the issue allows, so that a settled cluster stays within.
    tolerance: float = 0.05
    grace: float = 10.0  # a free relay another live instance is preferred for: anyone's after this
    cooldown: float = 10.0  # no hand-offs this long after a hand-off or a gain (loads catch up)
    max_moves: int = 500  # relays handed off per round (in groups of 50, writes batched)
    ring_window: float = 60.0  # how long a relay with calls in progress may hold up its move

    @classmethod
    def for_renewal(cls, renew_every: float, ring_window: float = 60.0) -> BalancePolicy:
        """Grace and cooldown of two heartbeat periods: a taker sees a hand-off or a free
        relay within one round, and a load reaches the heartbeats within one renewal."""
        return cls(grace=2 * renew_every, cooldown=2 * renew_every, ring_window=ring_window)


@dataclass(frozen=True, slots=True)
class Move:
    source: str
    target: str
    count: int


def fair_share(desired: int, instances: int) -> float:
    return desired / instances if instances > 0 else float(desired)


def slack(share: float, tolerance: float) -> int:
    """How many relays a load may stray beyond the nearest whole share before relays move."""
    return math.floor(tolerance * share)


def quotas(desired: int, loads: Mapping[str, int]) -> dict[str, int]:
    """Exact shares that add up to `desired`: the floor or the ceiling of the fair share, the
    ceilings to the most loaded instances (fewest moves; ties by session, so every instance
    computes the same)."""
    if not loads:
        return {}
    ordered = sorted(loads, key=lambda s: (-loads[s], s))
    base, extra = divmod(max(0, desired), len(ordered))
    return {s: base + (1 if rank < extra else 0) for rank, s in enumerate(ordered)}


def balanced(desired: int, loads: Mapping[str, int], tolerance: float) -> bool:
    """Every live instance's load between floor(share) - slack and ceil(share) + slack."""
    if not loads:
        return True
    share = fair_share(desired, len(loads))
    allowed = slack(share, tolerance)
    low, high = math.floor(share) - allowed, math.ceil(share) + allowed
    return all(low <= load <= high for load in loads.values())


def plan_moves(desired: int, loads: Mapping[str, int], tolerance: float) -> list[Move]:
    """Hand-offs from over- to under-loaded instances that bring every load to its quota, when
    some load strays beyond the slack. `loads`: live session -> relays held (its heartbeat's
    `held`). Every instance computes the same plan from the same loads, and each carries out
    its own part. No moves while more relays are free than the slack: free relays are taken
    first (coverage before balance), and the loads are then re-read."""
    if len(loads) < 2 or desired <= 0 or balanced(desired, loads, tolerance):
        return []
    share = fair_share(desired, len(loads))
    if desired - sum(loads.values()) > max(1, slack(share, tolerance)):
        return []
    quota = quotas(desired, loads)
    sessions = sorted(loads)
    over = [[s, loads[s] - quota[s]] for s in sessions if loads[s] > quota[s]]
    under = [[s, quota[s] - loads[s]] for s in sessions if loads[s] < quota[s]]
    moves: list[Move] = []
    i = j = 0
    while i < len(over) and j < len(under):
        count = min(over[i][1], under[j][1])
        moves.append(Move(str(over[i][0]), str(under[j][0]), int(count)))
        over[i][1] -= count
        under[j][1] -= count
        i += over[i][1] == 0
        j += under[j][1] == 0
    return moves


def preferred_holder(endpoint: str, sessions: Iterable[str]) -> str | None:
    """Rendezvous (highest random weight) hashing: the live session a free relay goes to.
    Stable for the others when one joins or leaves, and even over many relays."""
    best: tuple[bytes, str] | None = None
    for session in sessions:
        weight = hashlib.blake2b(f"{session}|{endpoint}".encode(), digest_size=8).digest()
        if best is None or weight > best[0]:
            best = (weight, session)
    return None if best is None else best[1]


def take_now(
    lease: Mapping[str, Any] | None,
    live: Mapping[str, Mapping[str, Any]],
    session: str,
    endpoint: str,
    now: float,
    free_for: float,
    policy: BalancePolicy,
) -> bool:
    """Whether to try to acquire this relay now. `live`: the live sessions' heartbeats (ours
    included); `free_for`: how long this instance has seen the relay free (0 the first time).
    Ours, or handed to us, or released without a taker: yes. Handed to another live instance,
    or free and preferred for another: only after `policy.grace`."""
    holder = lease.get("holder") if lease is not None else None
    beat = live.get(holder) if isinstance(holder, str) else None
    if decide_acquire(lease, beat, session, endpoint, now).action is not Action.ACQUIRE:
        return False
    if lease is not None and holder == session and lease.get("released") is not True:
        return True  # ours in this session
    target = lease.get("handoffTo") if lease is not None else None
    if target == session or free_for >= policy.grace:
        return True
    if isinstance(target, str) and target:
        return target not in live  # handed to someone gone: anyone's
    if lease is not None and lease.get("released") is True:
        return True  # let go of without a taker: anyone's, at once
    return preferred_holder(endpoint, {*live, session}) == session


def choose_to_shed(
    held: Iterable[str],
    count: int,
    calls: Mapping[str, int],
    deferred_since: Mapping[str, float],
    now: float,
    ring_window: float,
) -> tuple[list[str], dict[str, float]]:
    """Which `count` of our relays to hand off: relays without calls in progress first; a relay
    with calls only once it has been held back for a ring window (its calls have ended or
    stopped ringing by then). Also returns when each held-back relay was first held back."""
    ordered = sorted(held)
    idle = [e for e in ordered if calls.get(e, 0) <= 0]
    chosen = idle[: max(0, count)]
    deferred: dict[str, float] = {}
    busy = [e for e in ordered if calls.get(e, 0) > 0]
    for endpoint in busy[: max(0, count - len(chosen))]:  # the ones the move needs, in order
        since = deferred_since.get(endpoint, now)
        if now - since >= ring_window:
            chosen.append(endpoint)
        else:
            deferred[endpoint] = since
    return chosen, deferred


def assign(chosen: Sequence[str], moves: Sequence[Move], source: str) -> dict[str, str]:
    """endpoint -> taker, filling our moves in order."""
    targets = [m.target for m in moves if m.source == source for _ in range(m.count)]
    return dict(zip(chosen, targets, strict=False))
