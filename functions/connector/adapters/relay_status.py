"""Writes each relay's status to Firestore `relay_status/{relay}` so admins see, in the console,
whether the connector holds the relay, since when, its last event and error, and counters. A
relay the address policy refuses is `state: "refused"` with `refusedReason` ("loopback", ...).

Writes go through a worker thread (the Firestore client is synchronous) and a failed write is
logged, never raised: status is for people, it must not disturb the calls.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime
from typing import Any

from functions.log import fields

log = logging.getLogger("connector.status")
RELAY_STATUS = "relay_status"
BATCH = 25  # writes per commit: ~6 ms of CPU under the GIL each (Firestore allows 500)
PAUSE = 0.1  # seconds between commits, so the event loop is never short of the GIL for long
MIN_BUDGET = 50  # writes per check however few relays: a small connector is never held back


def status_due(
    report: dict[str, Any], last: tuple[float, dict[str, Any]] | None, now: float, refresh: float
) -> bool:
    """Whether a relay's status needs writing: at once when its state changed, otherwise only
    when something in it changed and the last write is `refresh` seconds old. An idle relay is
    not rewritten at all (its instance's heartbeat in connector_instances says the connector is
    alive): writes follow activity, not the number of relays."""
    if last is None:
        return True
    when, written = last
    if report["state"] != written["state"]:
        return True
    return report != written and now - when >= refresh


def write_budget(relays: int, check: float, refresh: float) -> int:
    """Documents one status check may write: twice the even share of a full refresh, so every
    relay can be refreshed once per `refresh` with room for state changes. Encoding a status
    write costs about 0.25 ms of CPU under the GIL; 1,000 at once stalled the event loop for
    ~250 ms and put 100-200 ms on calls arriving meanwhile (bench scale p99)."""
    return max(MIN_BUDGET, math.ceil(2 * relays * check / refresh))


def plan_status_writes(
    reports: dict[str, dict[str, Any]],
    written: dict[str, tuple[float, dict[str, Any]]],
    now: float,
    refresh: float,
    budget: int,
) -> dict[str, dict[str, Any]]:
    """The reports to write this check, at most `budget`, most overdue first, so writes spread
    out instead of arriving all at once when a thousand relays' counters come due together.
    A relay never written comes first; a state change counts as `refresh` seconds more overdue
    than a counter refresh written at the same time, so it is written within a check or two,
    yet relays that keep flapping cannot starve the others' refreshes."""
    due: list[tuple[float, str]] = []
    for endpoint, report in reports.items():
        last = written.get(endpoint)
        if last is None:
            due.append((-math.inf, endpoint))
        elif status_due(report, last, now, refresh):
            changed = report["state"] != last[1]["state"]
            due.append((last[0] - (refresh if changed else 0.0), endpoint))
    due.sort()
    return {endpoint: reports[endpoint] for _, endpoint in due[:budget]}


def status_doc_id(endpoint: str) -> str:
    """`host:port` is a valid document id once '/' (IPv6 never has one, but be safe) is gone."""
    return endpoint.replace("/", "_")


def _ts(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch else None


def status_document(report: dict[str, Any], instance: str) -> dict[str, Any]:
    """The Firestore shape of one relay's health report (functions.connector.app)."""
    return {
        "relay": report["relay"],
        "state": report["state"],
        "connected": report["state"] == "connected",
        "since": _ts(report["since"]),
        "lastFrameAt": _ts(report["last_frame_at"]),
        "lastEventAt": _ts(report["last_event_at"]),
        "lastError": report["last_error"],
        # why the address policy refuses to connect (state "refused"), else None
        "refusedReason": report.get("refused_reason"),
        # user-documents mode: users whose own relay settings the relay refused (relay_access)
        "refusedUsers": report.get("refused_users"),
        # amiws's own link to the PBX, from its login replies: "up", "auth_failed" or ""
        "pbxLink": report["pbx_link"],
        "pbxLinkSince": _ts(report.get("pbx_link_since")),
        "connects": report["connects"],
        "activeCalls": report["active_calls"],
        "counters": {
            "frames": report["frames"],
            "events": report["events"],
            "repaired": report["repaired"],
            "badFrames": report["bad_frames"],
            "gaps": report.get("gaps", 0),
            "staleRings": report.get("stale_rings", 0),
        },
        "instance": instance,
        "updatedAt": datetime.now(UTC),
    }


class RelayStatusWriter:
    def __init__(self, client: Any, instance: str) -> None:
        self.client = client
        self.instance = instance
        self.failures = 0

    async def write_many(self, reports: dict[str, dict[str, Any]]) -> list[str]:
        """The endpoints whose status got written. In small commits, each in a worker thread,
        with pauses between them in which the loop has the GIL to itself: status must not put
        latency on calls. A failed commit is logged and the others still go: one bad
        document must not keep every other relay's status from being written."""
        items = list(reports.items())
        done: list[str] = []
        for start in range(0, len(items), BATCH):
            chunk = dict(items[start : start + BATCH])
            if start:
                await asyncio.sleep(PAUSE)
            try:
                await asyncio.to_thread(self._commit, chunk)
            except Exception as exc:  # never let status reporting disturb the connector
                self.failures += 1
                log.warning(
                    "relay status not written",
                    extra=fields(relays=len(chunk), error=f"{type(exc).__name__}: {exc}"[:200]),
                )
                continue
            done += chunk
        return done

    def _commit(self, reports: dict[str, dict[str, Any]]) -> None:
        batch = self.client.batch()
        for endpoint, report in reports.items():
            ref = self.client.collection(RELAY_STATUS).document(status_doc_id(endpoint))
            batch.set(ref, status_document(report, self.instance))
        batch.commit()
