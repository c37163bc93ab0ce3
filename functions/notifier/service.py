"""What the notifier does with one call event. Talks to its adapters through small protocols, so
the rules read top to bottom and the wiring (functions.notifier.app) decides what is real.

- ringing: find the recipients, claim their devices in the call's ledger (a device already served
  by an earlier delivery or another instance is skipped), send, record, create history.
- answered / ended: mark the call over, send a cancel to every device that got the incoming push
  (plus a missed-call notification when nobody answered), update history.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from functions.core.call_event import CallEvent, EndReason, Kind
from functions.core.call_event import Outcome as CallOutcome
from functions.core.ledger import DeviceRef
from functions.core.push import (
    Push,
    cancel_action,
    cancel_push,
    incoming_push,
    missed_push,
    remaining_ring_seconds,
)
from functions.core.recipients import Device, Recipient, Selection
from functions.log import fields, mask_number, mask_token
from functions.notifier.adapters.fcm_sender import Outcome, SendResult

log = logging.getLogger("notifier")
RING_TIMEOUT = EndReason.RING_TIMEOUT.value

MAX_SEND_ATTEMPTS = 4
CANCEL_RETRY_SECONDS = 30.0  # a cancel or missed notice is worth retrying a little longer


class Directory(Protocol):
    def recipients_for(self, event: CallEvent) -> Selection: ...
    def delete_token_doc(self, doc_id: str) -> None: ...


class Sender(Protocol):
    def send(self, pushes: list[Push]) -> list[SendResult]: ...


class History(Protocol):
    def record_incoming(self, event: CallEvent, recipients: Sequence[Recipient]) -> int: ...
    def record_outcome(self, event: CallEvent, action: str) -> int: ...


class Ledger(Protocol):
    def claim_ring(
        self, event: CallEvent, candidates: Sequence[DeviceRef], now: float
    ) -> tuple[list[DeviceRef], bool]: ...
    def finish_ring(
        self, event: CallEvent, sent: Sequence[DeviceRef], failed: Sequence[DeviceRef], now: float
    ) -> tuple[list[DeviceRef], CallEvent | None]: ...
    def close_call(
        self, event: CallEvent, action: str, now: float
    ) -> tuple[list[DeviceRef], bool]: ...


class RingCommitter(Protocol):
    def finish(
        self,
        event: CallEvent,
        recipients: Sequence[Recipient],
        sent: Sequence[DeviceRef],
        failed: Sequence[DeviceRef],
        now: float,
    ) -> tuple[list[DeviceRef], CallEvent | None]: ...


@runtime_checkable
class RingingMemory(Protocol):
    """A ledger that can keep the ringing event of a call nobody was pushed for."""

    def remember_ringing(self, event: CallEvent) -> None: ...


@dataclass
class Report:
    """What happened to one call event: one log line, and what tests assert."""

    event_id: str
    kind: str
    recipients: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    pruned: int = 0
    attempts: int = 0
    dropped_reason: str = ""
    action: str = ""
    latency_ms: float | None = None


def _ref(recipient: Recipient, device: Device) -> DeviceRef:
    return DeviceRef(device.token, device.doc_id, recipient.user_id)


def _device(ref: DeviceRef) -> Device:
    return Device(ref.doc_id, ref.token)


@dataclass
class Notifier:
    directory: Directory
    sender: Sender
    history: History
    ledger: Ledger
    ring_window: int
    missed_notifications: bool = True
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    # history and the ring's results in one commit (functions/notifier/adapters/ring_commit.py);
    # None: history.record_incoming, then ledger.finish_ring
    ring_commit: RingCommitter | None = None

    def handle(self, event: CallEvent) -> Report:
        report = Report(event.event_id, event.kind.value)
        if event.kind is Kind.RINGING:
            self._ring(event, report)
        else:
            self._close(event, report)
        self._log(event, report)
        return report

    # ringing

    def _ring(self, event: CallEvent, report: Report) -> None:
        now = self.clock()
        if remaining_ring_seconds(event, now, self.ring_window) <= 0:
            report.dropped_reason = "stale"
            return
        selection = self.directory.recipients_for(event)
        report.recipients = len(selection.recipients)
        report.skipped.update(skip.reason for skip in selection.skipped)
        if not selection.recipients:
            self._remember_for_dcmiws(event, selection)
            return
        by_key = {_ref(r, d).key: (r, d) for r in selection.recipients for d in r.devices}
        candidates = [_ref(r, d) for r, d in by_key.values()]
        claimed, over = self.ledger.claim_ring(event, candidates, now)
        report.skipped["already_served"] += len(candidates) - len(claimed)
        report.skipped = +report.skipped  # drop zero counts
        if over:
            report.dropped_reason = "call_already_over"
            return
        pushes = [
            incoming_push(event, *by_key[ref.key], now=now, ring_window=self.ring_window)
            for ref in claimed
        ]
        results = self._deliver(event, pushes, report, deadline=self._ring_deadline(event))
        report.latency_ms = round((self.clock() - event.occurred_at) * 1000, 1)
        sent = {r.push.token for r in results if r.outcome is Outcome.SENT}
        delivered = [ref for ref in claimed if ref.token in sent]
        undelivered = [ref for ref in claimed if ref.token not in sent]
        if self.ring_commit is not None:
            late_cancels, closing = self.ring_commit.finish(
                event, selection.recipients, delivered, undelivered, self.clock()
            )
        else:
            self.history.record_incoming(event, selection.recipients)
            late_cancels, closing = self.ledger.finish_ring(
                event, delivered, undelivered, self.clock()
            )
        self._prune(results, report)
        if closing is not None:
            # The call was answered or ended while we were ringing: take it back at once.
            action = cancel_action(closing.kind.value, closing.outcome, closing.end_reason)
            report.action = action
            self.history.record_outcome(closing, action)
            pushes = self._closing_pushes(closing, late_cancels, action, self.clock())
            self._deliver(event, pushes, report, deadline=self.clock() + CANCEL_RETRY_SECONDS)

    def _remember_for_dcmiws(self, event: CallEvent, selection: Selection) -> None:
        """Users in DCMIWS mode see the call in the app and ask sendIncomingCallNotification
        (functions.app_endpoints) to ring their other devices: it acts only on calls the
        ledger saw ring. Calls with recipients are remembered by their first ledger write."""
        if isinstance(self.ledger, RingingMemory) and any(
            skip.reason == "dcmiws_enabled" for skip in selection.skipped
        ):
            self.ledger.remember_ringing(event)

    def deliver_cancels(
        self, event: CallEvent, devices: Sequence[DeviceRef], action: str
    ) -> Report:
        """Send the cancel push to these devices (claimed in the ledger by the caller), with the
        same retries and dead-token pruning as a closing event; history is the caller's."""
        report = Report(event.event_id, "cancel", action=action)
        report.recipients = len({d.user_id for d in devices})
        now = self.clock()
        pushes = [cancel_push(event, _device(d), action=action, now=now) for d in devices]
        if pushes:
            results = self._deliver(event, pushes, report, deadline=now + CANCEL_RETRY_SECONDS)
            self._prune(results, report)
        return report

    def _ring_deadline(self, event: CallEvent) -> float:
        return event.detected_at + self.ring_window

    # answered / ended

    def _close(self, event: CallEvent, report: Report) -> None:
        now = self.clock()
        action = cancel_action(event.kind.value, event.outcome, event.end_reason)
        report.action = action
        cancels, _first = self.ledger.close_call(event, action, now)
        pushes = self._closing_pushes(event, cancels, action, now)
        report.recipients = len({r.user_id for r in cancels})
        if pushes:
            results = self._deliver(event, pushes, report, deadline=now + CANCEL_RETRY_SECONDS)
            self._prune(results, report)
        self.history.record_outcome(event, action)

    def _closing_pushes(
        self, event: CallEvent, devices: Sequence[DeviceRef], action: str, now: float
    ) -> list[Push]:
        """A cancel to each device; when nobody answered, also the missed-call notification
        that replaces the incoming one."""
        pushes = [cancel_push(event, _device(r), action=action, now=now) for r in devices]
        missed = (
            event.kind is Kind.ENDED
            and event.outcome != CallOutcome.ANSWERED
            and self.missed_notifications
            # A call the connector ended after losing its events may have been answered
            # meanwhile: no "missed" claim. One that rang out the whole window was missed.
            and (event.outcome != CallOutcome.UNKNOWN or event.end_reason == RING_TIMEOUT)
        )
        if missed:
            pushes += [missed_push(event, _device(r), now=now) for r in devices]
        return pushes

    # delivery

    def _deliver(
        self, event: CallEvent, pushes: list[Push], report: Report, *, deadline: float
    ) -> list[SendResult]:
        """Send, then resend only the transient failures while there is time."""
        final: list[SendResult] = []
        pending = pushes
        attempt = 0
        while pending:
            attempt += 1
            report.attempts += 1
            results = self.sender.send(pending)
            retry = [r for r in results if r.outcome is Outcome.TRANSIENT]
            final += [r for r in results if r.outcome is not Outcome.TRANSIENT]
            if not retry:
                break
            hinted = [r.retry_after for r in retry if r.retry_after is not None]
            delay = min(2.0, max([0.2 * 2 ** (attempt - 1), *hinted]))
            if attempt >= MAX_SEND_ATTEMPTS or self.clock() + delay >= deadline:
                final += retry
                break
            self.sleep(delay)
            pending = [r.push for r in retry]
        report.outcomes.update(f"{r.push.kind}_{r.outcome.value}" for r in final)
        for r in final:
            if r.outcome is Outcome.SENT:
                # one line per push, as for failures: the `pushes` metric counts them by kind
                # and outcome (infra/monitoring.tf)
                log.info(
                    "push sent",
                    extra=fields(
                        event_id=event.event_id,
                        push=r.push.kind,
                        outcome="sent",
                        error_code="",
                        token=mask_token(r.push.token),
                    ),
                )
            else:
                log.warning(
                    "push not delivered",
                    extra=fields(
                        event_id=event.event_id,
                        push=r.push.kind,
                        outcome=r.outcome.value,
                        error_code=r.error_code,
                        detail=r.detail,
                        token=mask_token(r.push.token),
                    ),
                )
        return final

    def _prune(self, results: list[SendResult], report: Report) -> None:
        for doc_id in {
            r.push.device_doc_id
            for r in results
            if r.outcome is Outcome.DEAD_TOKEN and r.push.device_doc_id
        }:
            self.directory.delete_token_doc(doc_id)
            report.pruned += 1

    def _log(self, event: CallEvent, report: Report) -> None:
        log.info(
            "call event handled",
            extra=fields(
                event_id=event.event_id,
                kind=report.kind,
                caller=mask_number(event.caller_number),
                dialled=mask_number(event.dialled_number),
                outcome=event.outcome or None,
                action=report.action or None,
                recipients=report.recipients,
                results=dict(report.outcomes),
                skipped=dict(report.skipped),
                pruned=report.pruned,
                attempts=report.attempts,
                dropped=report.dropped_reason or None,
                latency_ms=report.latency_ms,
            ),
        )
        for reason, count in report.skipped.items():  # the `recipients_skipped` metric's
            log.info(
                "recipients skipped",
                extra=fields(event_id=event.event_id, reason=reason, count=count),
            )
