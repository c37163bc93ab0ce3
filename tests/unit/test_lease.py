"""Every decision of functions.core.lease, on plain records and explicit clocks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from functions.core.lease import (
    Action,
    LeasePolicy,
    decide_acquire,
    decide_heartbeat,
    decide_release,
    heartbeat_alive,
    holder_deadline,
    lease_id,
    lease_live,
    marker_id,
    new_heartbeat,
    seconds,
)

P = LeasePolicy()  # 20 s TTL, renew every 5 s, 5 s of tolerated skew
RELAY = "pbx.example.com:7099"
NOW = 1_000_000.0


def lease(holder: str = "b", generation: int = 3, released: bool = False) -> dict:
    return {
        "relay": RELAY,
        "holder": holder,
        "generation": generation,
        "epoch": "e1",
        "acquiredAt": NOW - 100,
        "released": released,
    }


def beat(holder: str = "b", expires: float = NOW + 10) -> dict:
    return {
        "holder": holder,
        "startedAt": NOW - 100,
        "renewedAt": expires - 20,
        "expiresAt": expires,
    }


def test_defaults_bound_takeover_to_30_seconds() -> None:
    assert (P.lease_seconds, P.renew_every, P.max_skew) == (20.0, 5.0, 5.0)
    assert P.takeover_bound == 30.0


@pytest.mark.parametrize("args", [(20, 5, 15), (20, 16, 5), (20, 0, 1), (20, 5, -1)])
def test_policy_rejects_timings_without_room_to_renew(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        LeasePolicy(*args)


# -- heartbeats ---------------------------------------------------------------------------------


def test_a_new_heartbeat_lives_for_one_lease_period() -> None:
    record = new_heartbeat("a", NOW, P)
    assert record == {"holder": "a", "startedAt": NOW, "renewedAt": NOW, "expiresAt": NOW + 20}
    assert heartbeat_alive(record, "a", NOW + 19.9)
    assert not heartbeat_alive(record, "a", NOW + 20)
    assert not heartbeat_alive(record, "b", NOW)  # another session's record


def test_heartbeat_renewal_extends_our_own_record() -> None:
    d = decide_heartbeat(beat("a", NOW + 15), "a", NOW, P)
    assert d.action is Action.RENEW
    assert d.record == {"expiresAt": NOW + 20, "renewedAt": NOW}


@pytest.mark.parametrize(
    "record",
    [
        None,  # deleted (a TTL policy removes expired heartbeats)
        beat("b"),  # not ours
        beat("a", NOW),  # expired
        beat("a", NOW + P.max_skew),  # too close: a skewed clock may see it expired now
        {"holder": "a", "expiresAt": "soon"},  # malformed: counts as long expired
    ],
)
def test_heartbeat_is_lost_when_not_safely_ours(record: dict | None) -> None:
    d = decide_heartbeat(record, "a", NOW, P)
    assert d.action is Action.LOST and d.record is None


def test_a_holder_renewing_on_time_survives_two_failed_renewals_not_three() -> None:
    record = new_heartbeat("a", NOW, P)
    assert decide_heartbeat(record, "a", NOW + P.renew_every, P).action is Action.RENEW
    assert decide_heartbeat(record, "a", NOW + 2 * P.renew_every, P).action is Action.RENEW
    assert decide_heartbeat(record, "a", NOW + 3 * P.renew_every, P).action is Action.LOST


# -- relay leases -------------------------------------------------------------------------------


def test_absent_lease_is_created_at_generation_one() -> None:
    d = decide_acquire(None, None, "a", RELAY, NOW)
    assert d.action is Action.ACQUIRE and not d.takeover
    assert d.generation == 1
    assert d.record is not None
    assert d.record["holder"] == "a" and d.record["relay"] == RELAY
    assert d.record["acquiredAt"] == NOW and d.record["released"] is False
    other = decide_acquire(None, None, "b", RELAY, NOW).record
    assert other is not None and d.record["epoch"] and d.record["epoch"] != other["epoch"]


def test_lease_of_a_live_instance_means_wait() -> None:
    d = decide_acquire(lease("b"), beat("b", NOW + 0.001), "a", RELAY, NOW)
    assert d.action is Action.WAIT and d.record is None and d.generation is None
    assert lease_live(lease("b"), beat("b", NOW + 0.001), NOW)


@pytest.mark.parametrize(
    "heartbeat",
    [
        beat("b", NOW),  # expired
        None,  # gone
        beat("c", NOW + 10),  # the record under that name is someone else's (cannot happen)
    ],
)
def test_lease_of_a_dead_instance_is_taken_over_with_a_new_generation(heartbeat) -> None:
    d = decide_acquire(lease("b", 3), heartbeat, "a", RELAY, NOW)
    assert d.action is Action.ACQUIRE and d.takeover
    assert d.generation == 4
    assert d.record is not None and d.record["holder"] == "a" and d.record["epoch"] == "e1"
    assert marker_id(d.record) == "e1-4"


def test_our_own_lease_in_this_session_keeps_its_generation() -> None:
    # e.g. an acquire that timed out but landed
    d = decide_acquire(lease("a", 3), None, "a", RELAY, NOW)
    assert d.action is Action.ACQUIRE and not d.takeover and d.generation == 3


def test_a_lease_of_our_lapsed_session_is_taken_back_only_as_a_new_generation() -> None:
    # after a lapse the keeper carries on as session "a.1": "a"'s leases are anyone's to take
    assert decide_acquire(lease("a", 3), beat("a", NOW + 10), "a.1", RELAY, NOW).action is (
        Action.WAIT
    )
    d = decide_acquire(lease("a", 3), beat("a", NOW), "a.1", RELAY, NOW)
    assert d.action is Action.ACQUIRE and d.takeover and d.generation == 4


def test_released_lease_is_free_for_anyone_however_skewed_even_its_last_holder() -> None:
    update = decide_release(lease("b", 7), "b", 7, NOW + 20, NOW, P)
    assert update == {"released": True, "releasedAt": NOW}
    record = {**lease("b", 7), **update}
    assert not lease_live(record, beat("b", NOW + 3600), NOW)
    for taker in ("a", "b"):
        d = decide_acquire(record, beat("b", NOW + 3600), taker, RELAY, NOW - 3600)
        assert d.action is Action.ACQUIRE and d.takeover and d.generation == 8


def test_release_only_touches_our_generation_while_our_heartbeat_is_safe() -> None:
    expires = NOW + 20
    assert decide_release(lease("a", 3), "a", 3, expires, NOW, P) is not None
    assert decide_release(lease("b", 3), "a", 3, expires, NOW, P) is None
    assert decide_release(lease("a", 4), "a", 3, expires, NOW, P) is None
    assert decide_release(None, "a", 3, expires, NOW, P) is None
    assert decide_release(lease("a", 3, released=True), "a", 3, expires, NOW, P) is None
    # our heartbeat about to expire: a takeover may be under way, leave the lease alone
    assert decide_release(lease("a", 3), "a", 3, NOW + P.max_skew, NOW, P) is None


def test_holder_stops_before_any_skewed_clock_sees_its_heartbeat_expire() -> None:
    started = NOW
    written = new_heartbeat("a", started + 0.2, P)  # the write happens after the call starts
    stop_at = holder_deadline(started, P)  # holder's clock
    for skew in (0.0, 2.5, P.max_skew):  # taker's clock ahead of the holder's by skew
        for t in (stop_at - 0.01, stop_at):  # holder time, while it may still be reading
            assert decide_acquire(lease("a"), written, "b", RELAY, t + skew).action is Action.WAIT
    # beyond max_skew the guarantee ends
    beyond = stop_at + P.max_skew + 1.0
    assert decide_acquire(lease("a"), written, "b", RELAY, beyond).action is Action.ACQUIRE


def test_live_holder_renewing_on_time_is_never_taken_over_within_the_skew_margin() -> None:
    record = new_heartbeat("a", NOW, P)
    next_renew = NOW + P.renew_every
    # a taker ahead by max_skew, looking just before the next renewal lands: still live
    assert decide_acquire(lease("a"), record, "b", RELAY, next_renew + P.max_skew).action is (
        Action.WAIT
    )
    assert decide_heartbeat(record, "a", next_renew, P).action is Action.RENEW


def test_malformed_records_count_as_free_and_generation_zero() -> None:
    junk = {"holder": "b", "generation": "7", "released": "no"}
    d = decide_acquire(junk, {"holder": "b", "expiresAt": "soon"}, "a", RELAY, NOW)
    assert d.action is Action.ACQUIRE and d.generation == 1 and d.takeover
    junk_holder = {**lease(), "holder": 42}
    assert decide_acquire(junk_holder, None, "a", RELAY, NOW).action is Action.ACQUIRE


def test_firestore_timestamps_are_read_as_epoch_seconds() -> None:
    stamp = datetime.fromtimestamp(NOW + 10, UTC)
    assert seconds(stamp) == NOW + 10
    record = {**beat("b"), "expiresAt": stamp}
    assert decide_acquire(lease("b"), record, "a", RELAY, NOW).action is Action.WAIT
    assert decide_acquire(lease("b"), record, "a", RELAY, NOW + 10).action is Action.ACQUIRE
    assert seconds(None) == 0.0 and seconds(True) == 0.0


def test_lease_id_is_a_stable_document_id() -> None:
    assert lease_id(RELAY) == lease_id(RELAY) != lease_id("pbx.example.com:7098")
    assert len(lease_id(RELAY)) == 32 and "/" not in lease_id("a/b:1")


def test_heartbeats_carry_the_load_for_balancing_when_given() -> None:
    assert new_heartbeat("a", NOW, P, held=0)["held"] == 0
    d = decide_heartbeat(beat("a", NOW + 15), "a", NOW, P, held=12)
    assert d.record == {"expiresAt": NOW + 20, "renewedAt": NOW, "held": 12}


def test_a_hand_off_names_its_taker_and_the_taker_drops_it() -> None:
    update = decide_release(lease("a", 3), "a", 3, NOW + 20, NOW, P, handoff_to="b")
    assert update == {"released": True, "releasedAt": NOW, "handoffTo": "b"}
    d = decide_acquire({**lease("a", 3), **update}, beat("a", NOW + 10), "b", RELAY, NOW)
    assert d.action is Action.ACQUIRE and d.takeover and d.generation == 4
    assert d.record is not None and "handoffTo" not in d.record and "releasedAt" not in d.record
