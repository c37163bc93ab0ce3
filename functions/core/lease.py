"""Relay leases as plain data: which connector instance holds which relay. Pure decisions; the
Firestore adapter (functions.connector.adapters.relay_leases) runs them inside transactions.

Two kinds of record, times in epoch seconds:

- a heartbeat per connector instance (`connector_instances/{session}`), the only record renewed
  while nothing changes, whatever the number of relays held:

      {"holder": <session>, "expiresAt": float, "renewedAt": float, "startedAt": float,
       "held": int (relays held, for balancing: functions.core.lease_balance)}

- a lease per relay endpoint (`relay_leases/{lease_id(endpoint)}`), written only when its
  holder changes or it is released:

      {"relay": "pbx.example.com:7099", "holder": <session>, "generation": int, "epoch": str,
       "acquiredAt": float, "released": bool, "releasedAt": float (optional),
       "handoffTo": <session> (optional: released for this instance to take, when balancing)}

A lease is live while it is not released and its holder's heartbeat has not expired. A session
is one unbroken run of heartbeats: an instance whose heartbeat lapses starts a new session, so
its old leases are taken back like anyone else's, as a new generation. `generation` goes up on
every change of holder: it is the fencing token. `epoch` names the lease record's life (set when
the document is created), so the write-once takeover markers (`marker_id`) of a deleted and
re-created record never collide.

Clocks: `expiresAt` is written with the holder's clock and read with the others'. A holder stops
using its leases `max_skew` seconds before its heartbeat expires (`holder_deadline`) and renews
only before then, so another instance whose clock is up to `max_skew` ahead can take over no
earlier than the holder stopped. A live holder renews every `renew_every`, so it is never seen
as expired unless a renewal is more than `lease_seconds - max_skew - renew_every` late.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

LEASES = "relay_leases"
INSTANCES = "connector_instances"


@dataclass(frozen=True, slots=True)
class LeasePolicy:
    lease_seconds: float = 20.0  # heartbeat TTL written on every start and renewal
    renew_every: float = 5.0  # heartbeat period of a holder, retry period of the others
    max_skew: float = 5.0  # clock difference between instances that stays safe

    def __post_init__(self) -> None:
        if self.renew_every <= 0 or self.max_skew < 0:
            raise ValueError("renew_every must be > 0 and max_skew >= 0")
        if self.renew_every + self.max_skew >= self.lease_seconds:
            # a holder must get at least one renewal in before it has to stop
            raise ValueError("renew_every + max_skew must be below lease_seconds")

    @property
    def takeover_bound(self) -> float:
        """Worst case from a holder's death to another instance holding its relay: the heartbeat
        runs out, the taker's clock may lag by max_skew, and it polls every renew_every."""
        return self.lease_seconds + self.max_skew + self.renew_every


class Action(StrEnum):
    ACQUIRE = "acquire"  # write `record`: the lease is ours from now on
    RENEW = "renew"  # write `record`: the heartbeat goes on, later expiry
    LOST = "lost"  # not ours any more (or no longer safe to use): stop at once
    WAIT = "wait"  # someone else holds it: try again later


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    record: dict[str, Any] | None = None  # the record to write, for ACQUIRE and RENEW
    # ACQUIRE over an existing record with a new generation: the write must also create
    # marker_id(record) so that two instances cannot both take the same generation
    takeover: bool = False

    @property
    def generation(self) -> int | None:
        return None if self.record is None else int(self.record["generation"])


def lease_id(endpoint: str) -> str:
    """Document id for a relay endpoint (endpoints contain ':' and may be long)."""
    return hashlib.sha256(endpoint.encode()).hexdigest()[:32]


def marker_id(record: Mapping[str, Any]) -> str:
    """Write-once document id claiming this record's generation."""
    return f"{record.get('epoch') or ''}-{_int(record.get('generation'))}"


def holder_deadline(started: float, policy: LeasePolicy) -> float:
    """When a holder must stop using its leases, for a heartbeat write that started at `started`
    (its own clock, taken before the call: the expiry written is at least lease_seconds later)."""
    return started + policy.lease_seconds - policy.max_skew


def seconds(value: Any) -> float:
    """A record time (epoch seconds, or a Firestore timestamp as datetime) as epoch seconds;
    missing or unusable counts as long expired."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# -- heartbeats ---------------------------------------------------------------------------------


def new_heartbeat(
    session: str, now: float, policy: LeasePolicy, held: int | None = None
) -> dict[str, Any]:
    """The first heartbeat record of a session (created, never overwritten). `held`: how many
    relays the instance holds, published for balancing (functions.core.lease_balance)."""
    record: dict[str, Any] = {
        "holder": session,
        "startedAt": now,
        "renewedAt": now,
        "expiresAt": now + policy.lease_seconds,
    }
    if held is not None:
        record["held"] = held
    return record


def decide_heartbeat(
    record: Mapping[str, Any] | None,
    session: str,
    now: float,
    policy: LeasePolicy,
    held: int | None = None,
) -> Decision:
    """Extend our heartbeat (with the number of relays held, when given); LOST when it is gone,
    not ours, or too close to expiry to be sure nobody is taking our relays over (the caller
    must already have stopped using them)."""
    if (
        record is None
        or record.get("holder") != session
        or now >= seconds(record.get("expiresAt")) - policy.max_skew
    ):
        return Decision(Action.LOST)
    renewal: dict[str, Any] = {"expiresAt": now + policy.lease_seconds, "renewedAt": now}
    if held is not None:
        renewal["held"] = held
    return Decision(Action.RENEW, renewal)


def heartbeat_alive(record: Mapping[str, Any] | None, session: Any, now: float) -> bool:
    """Whether `session`'s heartbeat record says it is alive, by the reader's clock."""
    return (
        record is not None
        and record.get("holder") == session
        and now < seconds(record.get("expiresAt"))
    )


# -- relay leases -------------------------------------------------------------------------------


def lease_live(
    lease: Mapping[str, Any] | None, holder_heartbeat: Mapping[str, Any] | None, now: float
) -> bool:
    """Someone holds this lease now: not released, and its holder's heartbeat is alive."""
    return (
        lease is not None
        and lease.get("released") is not True
        and heartbeat_alive(holder_heartbeat, lease.get("holder"), now)
    )


def decide_acquire(
    lease: Mapping[str, Any] | None,
    holder_heartbeat: Mapping[str, Any] | None,
    session: str,
    endpoint: str,
    now: float,
) -> Decision:
    """Take the lease if it is absent, released, ours, or its holder's heartbeat expired.
    `holder_heartbeat` is the heartbeat record of the lease's current holder (None if absent).
    The caller's own heartbeat must be alive: leases live and die with it."""
    fresh = {"holder": session, "acquiredAt": now, "released": False}
    if lease is None:
        epoch = hashlib.sha256(f"{session}|{now!r}".encode()).hexdigest()[:8]
        return Decision(
            Action.ACQUIRE, {"relay": endpoint, "generation": 1, "epoch": epoch, **fresh}
        )
    generation = _int(lease.get("generation"))
    base = {"relay": endpoint, "epoch": str(lease.get("epoch") or "")}
    if lease.get("holder") == session and lease.get("released") is not True:
        # ours in this session (an acquire that timed out but landed): same token
        return Decision(Action.ACQUIRE, {**base, "generation": generation, **fresh})
    if lease_live(lease, holder_heartbeat, now):
        return Decision(Action.WAIT)
    # released, or its holder is gone: a new generation, even when the last holder was us
    return Decision(Action.ACQUIRE, {**base, "generation": generation + 1, **fresh}, takeover=True)


def decide_release(
    lease: Mapping[str, Any] | None,
    session: str,
    generation: int,
    heartbeat_expires: float,
    now: float,
    policy: LeasePolicy,
    handoff_to: str | None = None,
) -> dict[str, Any] | None:
    """Fields that end our lease at once; None when it is not ours any more, or when our own
    heartbeat (last written to expire at `heartbeat_expires`) is about to run out: a takeover may
    be under way, leave that record alone. The record is kept, not deleted, so the next
    holder's generation keeps counting up. `handoff_to` names the instance that should take it
    (balancing); the others leave it alone for a grace period (lease_balance.take_now)."""
    if (
        lease is None
        or lease.get("holder") != session
        or _int(lease.get("generation")) != generation
        or lease.get("released") is True
        or now >= heartbeat_expires - policy.max_skew
    ):
        return None
    update: dict[str, Any] = {"released": True, "releasedAt": now}
    if handoff_to:
        update["handoffTo"] = handoff_to
    return update
