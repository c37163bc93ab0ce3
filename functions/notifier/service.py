"""What the notifier does with one call event. Talks to its adapters through small protocols, so
the rules read top to bottom and the wiring (functions.notifier.app) decides what is real."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from functions.adapters.fcm_sender import Outcome, SendResult
from functions.core.call_event import CallEvent, Kind
from functions.core.push import Push, incoming_push, remaining_ring_seconds
from functions.core.recipients import Recipient, Selection
from functions.log import fields, mask_number, mask_token

log = logging.getLogger("notifier")

MAX_SEND_ATTEMPTS = 4


class Directory(Protocol):
    def recipients_for(self, event: CallEvent) -> Selection: ...
    def delete_token_doc(self, doc_id: str) -> None: ...


class Sender(Protocol):
    def send(self, pushes: list[Push]) -> list[SendResult]: ...


class History(Protocol):
    def record_incoming(self, event: CallEvent, recipients: Sequence[Recipient]) -> int: ...


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
    latency_ms: float | None = None


@dataclass
class Notifier:
    directory: Directory
    sender: Sender
    history: History
    ring_window: int
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def handle(self, event: CallEvent) -> Report:
        report = Report(event.event_id, event.kind.value)
        if event.kind is Kind.RINGING:
            self._ring(event, report)
        else:
            report.dropped_reason = "kind_not_handled_yet"
        self._log(event, report)
        return report

    def _ring(self, event: CallEvent, report: Report) -> None:
        now = self.clock()
        if remaining_ring_seconds(event, now, self.ring_window) <= 0:
            report.dropped_reason = "stale"
            return
        selection = self.directory.recipients_for(event)
        report.recipients = len(selection.recipients)
        report.skipped.update(skip.reason for skip in selection.skipped)
        if not selection.recipients:
            return
        pushes = [
            incoming_push(event, recipient, device, now=now, ring_window=self.ring_window)
            for recipient in selection.recipients
            for device in recipient.devices
        ]
        results = self._deliver(event, pushes, report)
        report.latency_ms = round((self.clock() - event.occurred_at) * 1000, 1)
        self._prune(results, report)
        self.history.record_incoming(event, selection.recipients)

    def _deliver(self, event: CallEvent, pushes: list[Push], report: Report) -> list[SendResult]:
        """Send, then resend only the transient failures while the call still rings."""
        final: list[SendResult] = []
        pending = pushes
        while pending:
            report.attempts += 1
            results = self.sender.send(pending)
            retry = [r for r in results if r.outcome is Outcome.TRANSIENT]
            final += [r for r in results if r.outcome is not Outcome.TRANSIENT]
            if not retry:
                break
            delay = min(
                2.0,
                max(
                    [0.2 * 2 ** (report.attempts - 1)]
                    + [r.retry_after for r in retry if r.retry_after is not None]
                ),
            )
            left = remaining_ring_seconds(event, self.clock(), self.ring_window)
            if report.attempts >= MAX_SEND_ATTEMPTS or delay >= left:
                final += retry
                break
            self.sleep(delay)
            pending = [r.push for r in retry]
        report.outcomes.update(r.outcome.value for r in final)
        for r in final:
            if r.outcome is not Outcome.SENT:
                log.warning(
                    "push not delivered",
                    extra=fields(
                        event_id=event.event_id,
                        outcome=r.outcome.value,
                        error_code=r.error_code,
                        detail=r.detail,
                        token=mask_token(r.push.token),
                    ),
                )
        return final

    def _prune(self, results: list[SendResult], report: Report) -> None:
        for result in results:
            if result.outcome is Outcome.DEAD_TOKEN and result.push.device_doc_id:
                self.directory.delete_token_doc(result.push.device_doc_id)
                report.pruned += 1

    def _log(self, event: CallEvent, report: Report) -> None:
        log.info(
            "call event handled",
            extra=fields(
                event_id=f"{event.relay}/{event.server_id}/{event.linkedid}/{event.kind.value}",
                kind=report.kind,
                caller=mask_number(event.caller_number),
                dialled=mask_number(event.dialled_number),
                recipients=report.recipients,
                results=dict(report.outcomes),
                skipped=dict(report.skipped),
                pruned=report.pruned,
                attempts=report.attempts,
                dropped=report.dropped_reason or None,
                latency_ms=report.latency_ms,
            ),
        )
