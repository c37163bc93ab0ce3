"""`python -m functions.connector` as Cloud Run runs it: health over HTTP, and SIGTERM: stop
taking frames, flush what is queued, exit well within the 10 s grace."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import orjson

from devtools.demo_data import seed_frame
from tests.support import LOOPBACK_RELAYS, ROOT, USER_DOCUMENTS, eventually, free_port


class SlowSink:
    """Stands in for the notifier: answers each POST after `delay` seconds, records bodies."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.bodies: list[bytes] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"

    async def _handle(self, reader, writer) -> None:
        headers = b""
        while not headers.endswith(b"\r\n\r\n"):
            chunk = await reader.read(1)
            if not chunk:
                return
            headers += chunk
        length = int(
            next(
                line.split(b":")[1]
                for line in headers.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        body = await reader.readexactly(length)
        await asyncio.sleep(self.delay)
        self.bodies.append(body)
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


async def test_health_and_graceful_sigterm_flushes_queued_events(emulator, relay, tmp_path):
    sink = SlowSink(delay=1.5)
    sink_url = await sink.start()
    port = free_port()
    env = {
        **os.environ,
        "GOOGLE_CLOUD_PROJECT": "demo-proc",
        "PBX_RELAYS": relay.url,
        "CALL_EVENTS_PUSH_URL": sink_url,
        "PORT": str(port),
        "FIRESTORE_EMULATOR_HOST": emulator.host,
        **LOOPBACK_RELAYS,
        **USER_DOCUMENTS,
    }
    log_path = tmp_path / "connector.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "functions.connector"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def health() -> dict | None:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()
            except httpx.HTTPError:
                return None
            return body if body["relays_connected"] == 1 else None

        report = await asyncio.to_thread(eventually, health, 20)
        assert report["relays"][0]["relay"] == relay.url
        assert httpx.get(f"http://127.0.0.1:{port}/nope", timeout=1).status_code == 404

        await relay.broadcast(orjson.dumps(seed_frame("term.1", str(time.time()))))
        await asyncio.sleep(0.3)  # the event is on its way to the (slow) notifier
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 10)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0 and took < 10
    assert [json.loads(b)["message"]["orderingKey"].endswith("/term.1") for b in sink.bodies] == [
        True
    ]
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert any(entry["message"] == "connector stopped" for entry in lines)
    assert all("01026132471" not in json.dumps(entry) for entry in lines)  # numbers masked
    assert not relay.clients  # the relay connection was closed
