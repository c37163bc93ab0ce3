from functions.core import ledger
from functions.core.ledger import CLAIM_SECONDS, DeviceRef

A, B = DeviceRef("tok-a", "a_doc", "ua"), DeviceRef("tok-b", "b_doc", "ub")
BASE = {"callKey": "pbx/1/x", "linkedid": "x"}


def test_first_claim_takes_every_device_and_a_second_takes_none():
    record, chosen, over = ledger.claim_ring(None, [A, B], 100.0, BASE)
    assert chosen == [A, B] and not over and record["linkedid"] == "x"
    again, chosen, over = ledger.claim_ring(record, [A, B], 101.0, BASE)
    assert again is None and chosen == [] and not over


def test_new_device_of_a_known_call_is_claimed_alone():
    record, _, _ = ledger.claim_ring(None, [A], 100.0, BASE)
    _, chosen, _ = ledger.claim_ring(record, [A, B], 101.0, BASE)
    assert chosen == [B]


def test_failed_and_abandoned_claims_are_taken_again_but_not_sent_ones():
    record, _, _ = ledger.claim_ring(None, [A, B], 100.0, BASE)
    record, _ = ledger.finish_ring(record, [A], [B], 101.0, BASE)
    _, chosen, _ = ledger.claim_ring(record, [A, B], 102.0, BASE)
    assert chosen == [B]
    stuck, _, _ = ledger.claim_ring(None, [A], 100.0, BASE)
    assert ledger.claim_ring(stuck, [A], 100.0 + CLAIM_SECONDS - 1, BASE)[1] == []
    assert ledger.claim_ring(stuck, [A], 100.0 + CLAIM_SECONDS + 1, BASE)[1] == [A]


def test_close_before_ring_stops_the_ring():
    closed, cancels, first = ledger.close_call(None, {"overAction": "caller_hung_up"}, 5.0, BASE)
    assert first and cancels == [] and closed["over"]
    _, chosen, over = ledger.claim_ring(closed, [A], 6.0, BASE)
    assert over and chosen == []


def test_close_cancels_only_sent_devices_and_only_once():
    record, _, _ = ledger.claim_ring(None, [A, B], 1.0, BASE)
    record, _ = ledger.finish_ring(record, [A], [B], 2.0, BASE)
    record, cancels, first = ledger.close_call(record, {"overAction": "answered"}, 3.0, BASE)
    assert cancels == [A] and first
    again, cancels, first = ledger.close_call(record, {"overAction": "no_answer"}, 4.0, BASE)
    assert again is None and cancels == [] and not first
    assert record["overAction"] == "answered"  # the first close wins


def test_ring_finishing_after_close_claims_the_cancels_itself():
    record, _, _ = ledger.claim_ring(None, [A, B], 1.0, BASE)
    record, cancels, _ = ledger.close_call(record, {"overAction": "caller_hung_up"}, 2.0, BASE)
    assert cancels == []  # nothing had been sent yet
    record, late = ledger.finish_ring(record, [A, B], [], 3.0, BASE)
    assert late == [A, B]
    assert ledger.plan_cancel(record) == []


def test_malformed_records_do_not_raise():
    for junk in ({"devices": 5}, {"devices": {"k": 3}}, {"over": False, "devices": None}):
        assert ledger.claim_ring(junk, [A], 1.0, BASE)[1] == [A]
        assert ledger.plan_cancel(junk) == []
