"""Relay leases as plain data: which connector instance holds which relay. Pure decisions; the
Firestore adapter (functions.adapters.relay_leases) runs them inside transactions.

One record per relay endpoint (`relay_leases/{lease_id(endpoint)}`), times in epoch seconds:

    {"relay": "pbx.example.com:7099", "holder": <instance id>, "generation": int,
     "epoch": str, "expiresAt": float, "renewedAt": float, "releasedAt": float (optional)}

`generation` goes up on every change of holder (and when a lapsed lease is taken back): it is the
fencing token. `epoch` names the record's life (set when the document is created), so the
write-once takeover markers (`marker_id`) of a deleted and re-created record never collide.

Clocks: `expiresAt` is written with the writer's clock and read with the reader's. A holder
stops using a lease `max_skew` seconds before it expires (`holder_deadline`) and renews only
before then, so another instance whose clock is up to `max_skew` ahead can take over no earlier
than the holder stopped. A live holder renews every `renew_every`, so it is never seen as
expired unless a renewal is more than `lease_seconds - max_skew - renew_every` late.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

LEASES = "relay_leases"


@dataclass(frozen=True, slots=True)
class LeasePolicy:
    lease_seconds: float = 20.0  # TTL written on every acquire and renew
    renew_every: float = 5.0  # renew period of a holder, retry period of the others
    max_skew: float = 5.0  # clock difference between instances that stays safe

    def __post_init__(self) -> None:
        if self.renew_every <= 0 or self.max_skew < 0:
            raise ValueError("renew_every must be > 0 and max_skew >= 0")
        if self.renew_every + self.max_skew >= self.lease_seconds:
            # a holder must get at least one renewal in before it has to stop
            raise ValueError("renew_every + max_skew must be below lease_seconds")

    @property
    def takeover_bound(self) -> float:
        """Worst case from a holder's death to another instance holding its relay: the lease
        runs out, the taker's clock may lag by max_skew, and it polls every renew_every."""
        return self.lease_seconds + self.max_skew + self.renew_every


class Action(StrEnum):
    ACQUIRE = "acquire"  # write `record`: the lease is ours from now on
    RENEW = "renew"  # write `record`: still ours, later expiry
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
    """When a holder must stop using a lease whose acquire/renew call started at `started` (its
    own clock, taken before the call: the record's expiry is at least lease_seconds later)."""
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


def _ours_and_usable(
    record: Mapping[str, Any], instance_id: str, now: float, policy: LeasePolicy
) -> bool:
    return (
        record.get("holder") == instance_id
        and now < seconds(record.get("expiresAt")) - policy.max_skew
    )


def decide_acquire(
    record: Mapping[str, Any] | None,
    instance_id: str,
    endpoint: str,
    now: float,
    policy: LeasePolicy,
) -> Decision:
    """Take the lease if it is absent, expired or already (safely) ours."""
    fresh = {"holder": instance_id, "expiresAt": now + policy.lease_seconds, "renewedAt": now}
    if record is None:
        epoch = hashlib.sha256(f"{instance_id}|{now!r}".encode()).hexdigest()[:8]
        return Decision(
            Action.ACQUIRE, {"relay": endpoint, "generation": 1, "epoch": epoch, **fresh}
        )
    generation = _int(record.get("generation"))
    base = {"relay": endpoint, "epoch": str(record.get("epoch") or "")}
    if _ours_and_usable(record, instance_id, now, policy):
        # e.g. after a renew that timed out but landed: same holder, same token
        return Decision(Action.ACQUIRE, {**base, "generation": generation, **fresh})
    if now < seconds(record.get("expiresAt")):
        # someone's live lease, or our own within max_skew of expiry: another instance may
        # already count it as expired, so it is only taken back as a new generation
        return Decision(Action.WAIT)
    return Decision(Action.ACQUIRE, {**base, "generation": generation + 1, **fresh}, takeover=True)


def decide_renew(
    record: Mapping[str, Any] | None,
    instance_id: str,
    generation: int,
    now: float,
    policy: LeasePolicy,
) -> Decision:
    """Extend our lease; LOST if the holder or generation changed, or if it is too close to
    expiry to be sure nobody else is taking it (the caller must already have stopped)."""
    if (
        record is None
        or _int(record.get("generation")) != generation
        or not _ours_and_usable(record, instance_id, now, policy)
    ):
        return Decision(Action.LOST)
    return Decision(
        Action.RENEW,
        {**record, "expiresAt": now + policy.lease_seconds, "renewedAt": now},
    )


def decide_release(
    record: Mapping[str, Any] | None,
    instance_id: str,
    generation: int,
    now: float,
    policy: LeasePolicy,
) -> dict[str, Any] | None:
    """Fields that end our lease at once; None when it is not ours any more or about to expire
    anyway (a takeover may be under way: leave that record alone). The record is kept, not
    deleted, so the next holder's generation keeps counting up."""
    if (
        record is None
        or _int(record.get("generation")) != generation
        or not _ours_and_usable(record, instance_id, now, policy)
    ):
        return None
    # expired for every clock, however skewed
    return {"expiresAt": 0.0, "releasedAt": now}
