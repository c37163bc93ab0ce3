"""The local stack the end-to-end and cold-start benchmarks run against, assembled like
tests/integration/conftest.py: Google's Firestore emulator (devtools/emulators.py) seeded with
devtools.demo_data, Google's Pub/Sub emulator where a benchmark takes the Pub/Sub path, the FCM
stand-in (devtools.fake_fcm, own process), the notifier under functions-framework
(tests.support.NotifierProcess) and the connector (`python -m functions.connector`, own process).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

from bench.common import (
    LOCAL_SETTINGS,
    PROJECT,
    PY,
    ROOT,
    bench_env,
    free_port,
    read_json_line,
    stop_process,
)


class FakeFcmProcess:
    """devtools.fake_fcm in its own process; records read over its control API."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> FakeFcmProcess:
        self.proc = subprocess.Popen(
            [PY, "-m", "devtools.fake_fcm", "--port", str(self.port)],
            cwd=ROOT,
            env=bench_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = read_json_line(self.proc, 30)["url"]
        return self

    def _call(self, path: str, method: str = "GET", body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def records(self) -> list[dict[str, Any]]:
        return self._call("/__fake/messages")

    def clear(self) -> None:
        self._call("/__fake/messages", "DELETE")

    def set_delay(self, seconds: float) -> None:
        self._call("/__fake/delay", "POST", {"seconds": seconds})

    def wait_for(self, count: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            records = self.records()
            if len(records) >= count or time.monotonic() > deadline:
                return records
            time.sleep(0.25)

    def stop(self) -> None:
        stop_process(self.proc)


def seed_demo(emulator_host: str, relay_port: int) -> None:
    """devtools.demo_data into the emulator at `emulator_host` (this process's environment is
    left as it was: the client reads FIRESTORE_EMULATOR_HOST at construction only)."""
    from google.cloud import firestore

    from devtools.demo_data import seed

    with mock.patch.dict(os.environ, {"FIRESTORE_EMULATOR_HOST": emulator_host}):
        client = firestore.Client(project=PROJECT)
    try:
        seed(client, "127.0.0.1", relay_port)
    finally:
        client.close()


def notifier_env(emulator_host: str, fcm_url: str, **extra: str) -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "FIRESTORE_EMULATOR_HOST": emulator_host,
        "FCM_ENDPOINT": fcm_url,
        "RING_WINDOW_SECONDS": "60",
        "LOG_LEVEL": "INFO",
        "PYTHONPATH": str(ROOT),
        **LOCAL_SETTINGS,
        **extra,
    }


@contextlib.contextmanager
def notifier(env: Mapping[str, str], source: str | None = None) -> Iterator[Any]:
    """NotifierProcess (main.py) or, with `source`, another functions-framework target file."""
    from tests.support import NotifierProcess

    with tempfile.TemporaryDirectory() as tmp:
        proc = NotifierProcess(env, Path(tmp) / "notifier.log", source=source or "").start()
        try:
            yield proc
        finally:
            proc.stop()


@contextlib.contextmanager
def connector(env: Mapping[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """`python -m functions.connector` with the given environment (plus a free health port)."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [PY, "-m", "functions.connector"],
            cwd=ROOT,
            env=bench_env(PORT=str(free_port()), LOG_LEVEL="INFO", **{**LOCAL_SETTINGS, **env}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            stop_process(proc)
