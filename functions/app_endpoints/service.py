"""What the app's two endpoints do, over small protocols (wiring: functions.app_endpoints.app).

- cancel (the user tapped confirm, accept or reject on one device): the signed-in user's call,
  found in the delivery ledger; the cancel push to that user's other devices that were rung,
  each at most once; that user's history documents marked cancelled. Nobody else's phone stops.
- ring (the app in DCMIWS mode saw the call's Newchannel itself): the call must be one the
  backend saw ring (the ledger keeps its ringing event; the app may be a little ahead of the
  connector, so it is waited for, bounded); then exactly the notifier's ring for that event, with
  the PBX's caller id, through the same ledger, for the users the tenancy rules allow, those who
  listen to the relay in the app included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from functions.core.app_calls import (
    CancelRequest,
    Refused,
    RingRequest,
    call_of_user,
    call_to_ring,
    check_caller,
    device_of_caller,
    others_still_ringing,
)
from functions.core.call_event import CallEvent
from functions.core.ledger import DeviceRef, Record
from functions.core.recipients import Recipient, Selection
from functions.log import fields, mask_number
from functions.notifier.service import Directory, Notifier, Report

log = logging.getLogger("app_endpoints")

KNOWN_CALL_WAIT_SECONDS = 4.0  # the app sees the Newchannel about when the connector does
KNOWN_CALL_POLL_SECONDS = 0.2
WAITED_FOR = ("unknown_call", "call_does_not_match")  # may still arrive; a call over will not


class Calls(Protocol):
    def calls_named(self, linkedid: str) -> list[tuple[CallEvent, Record]]: ...
    def cancel_for_user(
        self, event: CallEvent, user_id: str, action: str, now: float
    ) -> list[DeviceRef]: ...


class History(Protocol):
    def record_user_cancel(
        self, linkedid: str, user_id: str, action: str, *, shared_closes: bool
    ) -> int: ...


@dataclass
class OnlyUser:
    """A directory narrowed to one user (a ring request that carried that user's ID token)."""

    directory: Directory
    user_id: str

    def recipients_for(self, event: CallEvent) -> Selection:
        selection = self.directory.recipients_for(event)
        return Selection(
            [r for r in selection.recipients if r.user_id == self.user_id], selection.skipped
        )

    def delete_token_doc(self, doc_id: str) -> None:
        self.directory.delete_token_doc(doc_id)


@dataclass
class JoiningHistory:
    """The notifier's history, for rings that join a call the notifier may have recorded: users
    who have a document keep it (functions.notifier.adapters.history_store.record_joining)."""

    store: Any  # HistoryStore

    def record_incoming(self, event: CallEvent, recipients: Sequence[Recipient]) -> int:
        return int(self.store.record_joining(event, recipients))

    def record_outcome(self, event: CallEvent, action: str) -> int:
        return int(self.store.record_outcome(event, action))


def _failures(report: Report, kind: str) -> int:
    return sum(n for key, n in report.outcomes.items() if key.startswith(kind + "_")) - (
        report.outcomes.get(f"{kind}_sent", 0)
    )


@dataclass
class AppCallService:
    calls: Calls
    history: History
    # the notifier's ring, on a directory that keeps DCMIWS users; also sends the cancels
    # (its retries and dead-token pruning)
    notifier: Notifier
    region: str
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    known_call_wait: float = KNOWN_CALL_WAIT_SECONDS

    def cancel(
        self, uid: str | None, request: CancelRequest, instance_token: str | None = None
    ) -> dict[str, Any]:
        try:
            check_caller(uid, request)
            event, record = call_of_user(self.calls.calls_named(request.linkedid), request.user_id)
        except Refused as refused:
            self._log("cancel refused", refused.reason, request.linkedid, uid)
            raise
        devices = self.calls.cancel_for_user(event, request.user_id, request.action, self.clock())
        caller = device_of_caller(devices, instance_token)
        others: Sequence[DeviceRef] = [d for d in devices if d != caller]
        report = self.notifier.deliver_cancels(event, others, request.action)
        updated = self.history.record_user_cancel(
            request.linkedid,
            request.user_id,
            request.action,
            shared_closes=not others_still_ringing(record, request.user_id),
        )
        sent = report.outcomes.get("cancel_sent", 0)
        self._log(
            "cancel done",
            "",
            request.linkedid,
            uid,
            sent=sent,
            devices=len(others),
            history_updated=updated,
            action=request.action,
        )
        return {
            "success": True,
            "linkedid": request.linkedid,
            "userId": request.user_id,
            "action": request.action,
            "sentCount": sent,
            "failureCount": _failures(report, "cancel"),
            "totalTokens": len(others),
            "firestoreUpdated": updated > 0,
        }

    def ring(self, request: RingRequest, uid: str | None = None) -> dict[str, Any]:
        try:
            event = self._known_call(request)
        except Refused as refused:
            self._log(
                "ring refused",
                refused.reason,
                request.linkedid,
                uid,
                receiver=mask_number(request.receiver_number),
            )
            raise
        ringer = self.notifier
        if uid is not None:
            ringer = replace(ringer, directory=OnlyUser(ringer.directory, uid))
        report = ringer.handle(event)
        already = report.skipped.get("already_served", 0)
        if report.dropped_reason or not report.recipients:
            reason = report.dropped_reason or "no_recipient"
            self._log("ring refused", reason, request.linkedid, uid)
            if report.dropped_reason:
                raise Refused("not-found", "Call not found", reason)
            raise Refused("not-found", "Extension not found", reason)
        sent = report.outcomes.get("incoming_sent", 0)
        self._log("ring done", "", request.linkedid, uid, sent=sent, already_rung=already)
        body: dict[str, Any] = {
            "success": True,
            "linkedid": request.linkedid,
            "sentCount": sent,
            "failureCount": _failures(report, "incoming"),
            "alreadyRung": already,
        }
        if uid is not None:
            body["userId"] = uid
        return body

    def _known_call(self, request: RingRequest) -> CallEvent:
        """The ringing call the request names, waiting (bounded) for the connector's event."""
        deadline = self.clock() + self.known_call_wait
        while True:
            try:
                return call_to_ring(self.calls.calls_named(request.linkedid), request, self.region)
            except Refused as refused:
                if refused.reason not in WAITED_FOR or self.clock() >= deadline:
                    raise
            self.sleep(KNOWN_CALL_POLL_SECONDS)

    @staticmethod
    def _log(message: str, reason: str, linkedid: str, uid: str | None, **extra: Any) -> None:
        level = logging.WARNING if reason else logging.INFO
        log.log(
            level,
            message,
            extra=fields(reason=reason or None, linkedid=linkedid, uid=uid, **extra),
        )
