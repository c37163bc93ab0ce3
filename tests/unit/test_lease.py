"""Every decision of functions.core.lease, on plain records and explicit clocks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from functions.core.lease import (
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

P = LeasePolicy()  # 20 s TTL, renew every 5 s, 5 s of tolerated skew
RELAY = "pbx.example.com:7099"
NOW = 1_000_000.0


def held(holder: str = "a", generation: int = 3, expires: float = NOW + 10) -> dict:
    return {
        "relay": RELAY,
        "holder": holder,
        "generation": generation,
        "epoch": "e1",
        "expiresAt": expires,
        "renewedAt": expires - P.lease_seconds,
    }


def test_defaults_bound_takeover_to_30_seconds() -> None:
    assert (P.lease_seconds, P.renew_every, P.max_skew) == (20.0, 5.0, 5.0)
    assert P.takeover_bound == 30.0


@pytest.mark.parametrize("args", [(20, 5, 15), (20, 16, 5), (20, 0, 1), (20, 5, -1)])
def test_policy_rejects_timings_without_room_to_renew(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        LeasePolicy(*args)


def test_absent_lease_is_created_at_generation_one() -> None:
    d = decide_acquire(None, "a", RELAY, NOW, P)
    assert d.action is Action.ACQUIRE and not d.takeover
    assert d.generation == 1
    assert d.record is not None
    assert d.record["holder"] == "a" and d.record["relay"] == RELAY
    assert d.record["expiresAt"] == NOW + 20 and d.record["renewedAt"] == NOW
    other = decide_acquire(None, "b", RELAY, NOW, P).record
    assert other is not None and d.record["epoch"] and d.record["epoch"] != other["epoch"]


def test_expired_lease_of_another_is_taken_over_with_a_new_generation() -> None:
    d = decide_acquire(held("b", 3, expires=NOW), "a", RELAY, NOW, P)
    assert d.action is Action.ACQUIRE and d.takeover
    assert d.generation == 4
    assert d.record is not None and d.record["holder"] == "a" and d.record["epoch"] == "e1"
    assert marker_id(d.record) == "e1-4"


def test_live_lease_of_another_means_wait() -> None:
    d = decide_acquire(held("b", expires=NOW + 0.001), "a", RELAY, NOW, P)
    assert d.action is Action.WAIT and d.record is None and d.generation is None


def test_our_own_live_lease_is_extended_with_the_same_generation() -> None:
    d = decide_acquire(held("a", 3, expires=NOW + 10), "a", RELAY, NOW, P)
    assert d.action is Action.ACQUIRE and not d.takeover
    assert d.generation == 3 and d.record is not None and d.record["expiresAt"] == NOW + 20


def test_our_lease_near_expiry_is_only_taken_back_after_it_expired_as_a_new_generation() -> None:
    # within max_skew of expiry another clock may already see it expired
    near = held("a", 3, expires=NOW + P.max_skew - 0.1)
    assert decide_acquire(near, "a", RELAY, NOW, P).action is Action.WAIT
    lapsed = decide_acquire(held("a", 3, expires=NOW), "a", RELAY, NOW, P)
    assert lapsed.action is Action.ACQUIRE and lapsed.takeover and lapsed.generation == 4


def test_released_lease_is_free_for_anyone_however_skewed() -> None:
    record = {**held("b", 7), **decide_release(held("b", 7), "b", 7, NOW, P)}
    assert record["expiresAt"] == 0.0 and record["releasedAt"] == NOW
    d = decide_acquire(record, "a", RELAY, NOW - 3600, P)  # a clock an hour behind
    assert d.action is Action.ACQUIRE and d.generation == 8


def test_renew_extends_our_lease_and_keeps_the_generation() -> None:
    d = decide_renew(held("a", 3, expires=NOW + 15), "a", 3, NOW, P)
    assert d.action is Action.RENEW and not d.takeover
    assert d.generation == 3 and d.record is not None
    assert d.record["expiresAt"] == NOW + 20 and d.record["renewedAt"] == NOW


@pytest.mark.parametrize(
    "record",
    [
        None,  # deleted
        held("b", 4),  # taken over
        held("a", 4),  # same holder, other generation: we lost it and took it back elsewhere
        held("a", 3, expires=NOW),  # expired
        held("a", 3, expires=NOW + P.max_skew),  # too close: a skewed clock may take it now
    ],
)
def test_renew_is_lost_when_not_safely_ours(record: dict | None) -> None:
    d = decide_renew(record, "a", 3, NOW, P)
    assert d.action is Action.LOST and d.record is None


def test_release_only_touches_our_generation() -> None:
    assert decide_release(held("a", 3), "a", 3, NOW, P) == {"expiresAt": 0.0, "releasedAt": NOW}
    assert decide_release(held("b", 3), "a", 3, NOW, P) is None
    assert decide_release(held("a", 4), "a", 3, NOW, P) is None
    assert decide_release(None, "a", 3, NOW, P) is None
    # about to expire: a takeover may be under way, leave it alone
    assert decide_release(held("a", 3, expires=NOW + 1), "a", 3, NOW, P) is None


def test_holder_stops_before_any_skewed_clock_sees_its_lease_expire() -> None:
    started = NOW
    written = decide_acquire(None, "a", RELAY, started + 0.2, P).record  # decided after start
    assert written is not None
    stop_at = holder_deadline(started, P)  # holder's clock
    for skew in (0.0, 2.5, P.max_skew):  # taker's clock ahead of the holder's by skew
        for t in (stop_at - 0.01, stop_at):  # holder time, while it may still be reading
            assert decide_acquire(written, "b", RELAY, t + skew, P).action is Action.WAIT
    # beyond max_skew the guarantee ends
    beyond = stop_at + P.max_skew + 1.0
    assert decide_acquire(written, "b", RELAY, beyond, P).action is Action.ACQUIRE


def test_live_holder_renewing_on_time_is_never_taken_over_within_the_skew_margin() -> None:
    record = held("a", 3, expires=NOW + P.lease_seconds)  # renewed at NOW
    next_renew = NOW + P.renew_every
    # a taker ahead by max_skew, looking just before the next renewal lands: still live
    assert decide_acquire(record, "b", RELAY, next_renew + P.max_skew, P).action is Action.WAIT
    # and the holder's renewal at that time still succeeds
    assert decide_renew(record, "a", 3, next_renew, P).action is Action.RENEW
    # two renewals may fail in a row before the holder must stop
    assert decide_renew(record, "a", 3, NOW + 2 * P.renew_every, P).action is Action.RENEW
    assert decide_renew(record, "a", 3, NOW + 3 * P.renew_every, P).action is Action.LOST


def test_malformed_records_count_as_expired_and_generation_zero() -> None:
    junk = {"holder": "b", "generation": "7", "expiresAt": "soon"}
    d = decide_acquire(junk, "a", RELAY, NOW, P)
    assert d.action is Action.ACQUIRE and d.generation == 1 and d.takeover
    assert decide_renew({"holder": "a", "generation": True}, "a", 1, NOW, P).action is Action.LOST


def test_firestore_timestamps_are_read_as_epoch_seconds() -> None:
    stamp = datetime.fromtimestamp(NOW + 10, UTC)
    assert seconds(stamp) == NOW + 10
    record = {**held("b"), "expiresAt": stamp}
    assert decide_acquire(record, "a", RELAY, NOW, P).action is Action.WAIT
    assert decide_acquire(record, "a", RELAY, NOW + 10, P).action is Action.ACQUIRE
    assert seconds(None) == 0.0 and seconds(True) == 0.0


def test_lease_id_is_a_stable_document_id() -> None:
    assert lease_id(RELAY) == lease_id(RELAY) != lease_id("pbx.example.com:7098")
    assert len(lease_id(RELAY)) == 32 and "/" not in lease_id("a/b:1")
