"""The notifier's rules with in-memory adapters (the ledger runs the real core transitions);
the Firestore/FCM versions of these paths run in tests/integration."""

from __future__ import annotations

from dataclasses import replace

from functions.core import ledger
from functions.core.call_event import CallEvent, Kind
from functions.core.recipients import Device, Recipient, Selection
from functions.notifier.adapters.fcm_sender import Outcome, SendResult
from functions.notifier.service import Notifier

NOW = 1_000_000.0
CALL = CallEvent(
    kind=Kind.RINGING,
    relay="pbx:7099",
    server_id=1,
    linkedid="c1",
    caller_number="01026132471",
    caller_name="",
    dialled_number="07045144801",
    channel="PJSIP/x",
    occurred_at=NOW,
    detected_at=NOW,
)
ALICE = Recipient("alice", "1010", devices=(Device("a1", "tok-a1"), Device("a2", "tok-a2")))


class Directory:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def recipients_for(self, event):
        return Selection(recipients=[ALICE])

    def delete_token_doc(self, doc_id):
        self.deleted.append(doc_id)


class Sender:
    def __init__(self, script: dict[str, list[Outcome]] | None = None) -> None:
        self.sent: list = []
        self.script = script or {}

    def send(self, pushes):
        results = []
        for push in pushes:
            queue = self.script.get(push.token, [])
            outcome = queue.pop(0) if queue else Outcome.SENT
            self.sent.append((push.kind, push.token, outcome))
            results.append(SendResult(push, outcome, retry_after=None))
        return results


class History:
    def __init__(self) -> None:
        self.outcomes: list = []

    def record_incoming(self, event, recipients):
        return len(recipients)

    def record_outcome(self, event, action):
        self.outcomes.append((event.kind, action))
        return 1


class Ledger:
    """The real transitions on a dict instead of Firestore."""

    def __init__(self) -> None:
        self.records: dict[str, dict] = {}

    def claim_ring(self, event, candidates, now):
        new, chosen, over = ledger.claim_ring(self.records.get(event.call_key), candidates, now, {})
        if new is not None:
            self.records[event.call_key] = new
        return chosen, over

    def finish_ring(self, event, sent, failed, now):
        new, cancels = ledger.finish_ring(self.records.get(event.call_key), sent, failed, now, {})
        self.records[event.call_key] = new
        return cancels, None

    def close_call(self, event, action, now):
        new, cancels, first = ledger.close_call(
            self.records.get(event.call_key), {"overAction": action}, now, {}
        )
        if new is not None:
            self.records[event.call_key] = new
        return cancels, first


def notifier(sender: Sender | None = None, **kwargs) -> tuple[Notifier, Sender, list[float]]:
    sender = sender or Sender()
    clock = [NOW]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    service = Notifier(
        Directory(),
        sender,
        History(),
        Ledger(),
        ring_window=60,
        clock=lambda: clock[0],
        sleep=sleep,
        **kwargs,
    )
    return service, sender, sleeps


def test_missed_call_notification_can_be_turned_off():
    service, sender, _ = notifier(missed_notifications=False)
    service.handle(CALL)
    service.handle(replace(CALL, kind=Kind.ENDED, outcome="no_answer"))
    assert [kind for kind, _, _ in sender.sent] == ["incoming", "incoming", "cancel", "cancel"]


def test_missed_call_notification_is_on_by_default_and_not_for_answered_calls():
    service, sender, _ = notifier()
    service.handle(CALL)
    report = service.handle(replace(CALL, kind=Kind.ENDED, outcome="caller_abandoned"))
    assert report.outcomes == {"cancel_sent": 2, "missed_sent": 2}
    assert report.action == "caller_hung_up"
    service, sender, _ = notifier()
    service.handle(CALL)
    service.handle(replace(CALL, kind=Kind.ENDED, outcome="answered"))
    assert [k for k, _, _ in sender.sent].count("missed") == 0


def test_transient_failures_retry_only_the_failed_device_with_backoff():
    sender = Sender({"tok-a2": [Outcome.TRANSIENT, Outcome.TRANSIENT]})
    service, sender, sleeps = notifier(sender)
    report = service.handle(CALL)
    assert report.outcomes == {"incoming_sent": 2} and report.attempts == 3
    assert sleeps == [0.2, 0.4]
    assert [t for _, t, _ in sender.sent] == ["tok-a1", "tok-a2", "tok-a2", "tok-a2"]


def test_retries_stop_when_the_ring_window_would_be_over():
    sender = Sender({"tok-a2": [Outcome.TRANSIENT] * 10})
    service, sender, sleeps = notifier(sender)
    late = replace(CALL, detected_at=NOW - 59.5)  # half a second of ringing left
    report = service.handle(late)
    assert report.outcomes == {"incoming_sent": 1, "incoming_transient": 1}
    assert sleeps == [0.2] and report.attempts == 2


def test_dead_tokens_are_pruned_once():
    sender = Sender({"tok-a1": [Outcome.DEAD_TOKEN]})
    service, sender, _ = notifier(sender)
    report = service.handle(CALL)
    assert report.pruned == 1 and service.directory.deleted == ["a1"]


def test_stale_event_sends_nothing():
    service, sender, _ = notifier()
    report = service.handle(replace(CALL, detected_at=NOW - 61))
    assert report.dropped_reason == "stale" and sender.sent == []
