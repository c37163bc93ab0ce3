"""Starting the real local parts the integration tests talk to: Google's Firestore and Pub/Sub
emulators (devtools/emulators.py), the notifier under functions-framework (a subprocess, over
HTTP), and helpers to wait on them."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from devtools.emulators import FirestoreEmulator, PubSubEmulator
from devtools.processes import free_port, notifier_command, stop_process, wait_for_port
from functions.core.call_event import CallEvent, Kind

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
__all__ = [
    "LOOPBACK_RELAYS",
    "ROOT",
    "USER_DOCUMENTS",
    "FirestoreEmulator",
    "NotifierProcess",
    "PubSubEmulator",
    "eventually",
    "free_port",
    "wait_for_port",
]


# Relays in tests listen on loopback, which the address policy refuses unless allowed.
LOOPBACK_RELAYS = {"RELAY_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128"}
# The tests written before the PBX directory find users through their own documents.
USER_DOCUMENTS = {"TENANCY": "user_documents"}


def eventually(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll until check() returns a truthy value; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout}s (last: {value!r})")
        time.sleep(interval)


class NotifierProcess:
    """main.py's `on_call_event` served by functions-framework, as Cloud Functions runs it (or
    another file's, with `source`: the benchmarks' floor notifier; or another target of main.py,
    with `target` and `signature`: the app's endpoints)."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        source: str = "",
        *,
        target: str = "on_call_event",
        signature: str = "cloudevent",
    ) -> None:
        self.port = free_port()
        self.command = notifier_command(
            self.port, source=source, target=target, signature=signature
        )
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = {**os.environ, **env, "PORT": str(self.port)}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> NotifierProcess:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, timeout=30, proc=self.proc)
        return self

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


def ringing_event(linkedid: str, relay_port: int, **changes: object) -> CallEvent:
    """The tests' ringing call, now: the seed's caller dialling the demo number through the
    relay on `relay_port` (`changes`: any other CallEvent field)."""
    now = time.time()
    event = CallEvent(
        kind=Kind.RINGING,
        relay=f"127.0.0.1:{relay_port}",
        server_id=1,
        linkedid=linkedid,
        caller_number="01026132471",
        caller_name="김철수",
        dialled_number="07045144801",
        channel="PJSIP/DKCT-000001b1",
        occurred_at=now,
        detected_at=now,
    )
    return replace(event, **changes) if changes else event  # type: ignore[arg-type]
