"""Where the console's data comes from (I/O): the Firestore emulator's `relay_status`,
`call_history` and `push_dedupe`, the local FCM endpoint's request log, and the admin doctor.

The Firestore client is synchronous: every read runs in a worker thread. A source that fails is
reported on the page (`errors`) instead of stopping the others.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.cloud import firestore

RECENT = 200  # documents read per collection: the console shows the latest calls only


class Sources:
    def __init__(self, client: firestore.Client, fcm_url: str | None) -> None:
        self.client = client
        self.fcm_url = fcm_url.rstrip("/") if fcm_url else None

    def _relays(self) -> dict[str, dict[str, Any]]:
        return {s.id: s.to_dict() or {} for s in self.client.collection("relay_status").stream()}

    def _history(self) -> dict[str, dict[str, Any]]:
        query = (
            self.client.collection("call_history")
            .order_by("timestamp", direction=firestore.Query.DESCENDING)
            .limit(RECENT)
        )
        return {s.id: s.to_dict() or {} for s in query.stream()}

    def _ledger(self) -> list[dict[str, Any]]:
        query = (
            self.client.collection("push_dedupe")
            .order_by("expiresAt", direction=firestore.Query.DESCENDING)
            .limit(RECENT)
        )
        return [s.to_dict() or {} for s in query.stream()]

    def _pushes(self) -> list[dict[str, Any]]:
        if self.fcm_url is None:
            return []
        with urllib.request.urlopen(f"{self.fcm_url}/__fake/messages", timeout=5) as response:
            records = json.load(response)
        return records if isinstance(records, list) else []

    async def read(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Every source at once: ({name: data}, {name: error})."""
        names = ("relays", "history", "ledger", "records")
        readers = (self._relays, self._history, self._ledger, self._pushes)
        results = await asyncio.gather(
            *(asyncio.to_thread(reader) for reader in readers), return_exceptions=True
        )
        data: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                errors[name] = f"{type(result).__name__}: {result}"[:300]
                data[name] = [] if name in ("ledger", "records") else {}
            else:
                data[name] = result
        return data, errors


def run_doctor_once(client: firestore.Client, env: Mapping[str, str] | None = None) -> dict:
    """The admin doctor's findings (functions.admin.doctor, written alongside this console),
    imported lazily so the console runs before and without it."""
    checked = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    try:
        from functions.admin.doctor import run_doctor  # type: ignore[import-not-found]
    except ImportError as exc:
        return {"available": False, "problems": [], "error": f"doctor unavailable ({exc})"}
    try:
        from functions.settings import load_settings

        settings = load_settings(dict(os.environ if env is None else env))
        problems = run_doctor(client, settings, live=False)
        return {
            "available": True,
            "problems": [p.as_dict() for p in problems],
            "error": None,
            "checkedAt": checked,
        }
    except Exception as exc:  # the doctor is someone else's work in progress: show, go on
        return {
            "available": True,
            "problems": [],
            "error": f"doctor failed: {type(exc).__name__}: {exc}"[:300],
            "checkedAt": checked,
        }
