"""High availability: several connector processes, one relay. Each relay is read by exactly one
of them (its lease holder), so a call rings once; when the holder is killed, another takes the
relay over within the lease bound and calls ring again, still once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from devtools.demo_data import seed_frame
from tests.integration.conftest import PROJECT
from tests.integration.scenario import EXPECTED_TOKENS, company, write
from tests.support import LOOPBACK_RELAYS, ROOT, USER_DOCUMENTS, eventually, free_port

# Short leases so the test takes seconds: takeover bound = 2 + 0.5 + 0.5 = 3 s.
LEASES = {"LEASE_SECONDS": "2", "LEASE_RENEW_SECONDS": "0.5", "LEASE_SKEW_SECONDS": "0.5"}


class ConnectorProcess:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.log = (log_dir / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "functions.connector"],
            cwd=ROOT,
            env={**os.environ, "HEALTH_HOST": "127.0.0.1", **env, "PORT": str(self.port)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def health(self) -> dict | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).json()
        except httpx.HTTPError:
            return None

    def holds(self) -> bool:
        report = self.health()
        return bool(report and report["relays_connected"] == 1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


async def ring(relay, fcm, linkedid: str) -> list[dict]:
    fcm.clear()
    await relay.broadcast(orjson.dumps(seed_frame(linkedid, str(time.time()))))
    await asyncio.to_thread(fcm.wait_for, 3, 15)
    await asyncio.sleep(1.0)  # a duplicate from a second reader would arrive in this time
    return [m for m in fcm.sent_messages() if m["data"]["linkedid"] == linkedid]


async def test_two_connectors_one_relay_one_ring_and_takeover_after_a_kill(
    db, notifier, fcm, relay, emulator, tmp_path
):
    write(db, company(relay.port, 1))
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "FIRESTORE_EMULATOR_HOST": emulator.host,
        "CALL_EVENTS_PUSH_URL": notifier.url,
        **LOOPBACK_RELAYS,
        **USER_DOCUMENTS,
        **LEASES,
    }
    a = ConnectorProcess("a", env, tmp_path)
    b = ConnectorProcess("b", env, tmp_path)
    try:
        # Both watch the same users; exactly one connects to the relay (the other has no
        # connection to it at all, not merely an idle one).
        await asyncio.to_thread(eventually, lambda: a.holds() or b.holds(), 20)
        await asyncio.sleep(1.5)  # several lease rounds: the other must stay out
        assert len(relay.clients) == 1
        assert sum([a.holds(), b.holds()]) == 1
        pushes = await ring(relay, fcm, "ha.1")
        assert sorted(m["token"] for m in pushes) == sorted(EXPECTED_TOKENS)

        holder, other = (a, b) if a.holds() else (b, a)
        holder.proc.send_signal(signal.SIGKILL)  # no release: a crash
        killed = time.monotonic()
        await asyncio.to_thread(eventually, other.holds, 10)
        takeover = time.monotonic() - killed
        assert takeover <= 3.0 + 1.0  # the lease bound, plus a round trip and a reconnect
        await relay.wait_for_clients(1, timeout=5)
        pushes = await ring(relay, fcm, "ha.2")
        assert sorted(m["token"] for m in pushes) == sorted(EXPECTED_TOKENS)
    finally:
        a.stop()
        b.stop()


async def test_clean_shutdown_hands_the_relay_over_at_once(db, notifier, relay, emulator, tmp_path):
    write(db, company(relay.port, 1))
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "FIRESTORE_EMULATOR_HOST": emulator.host,
        "CALL_EVENTS_PUSH_URL": notifier.url,
        **LOOPBACK_RELAYS,
        **USER_DOCUMENTS,
        "LEASE_SECONDS": "20",
        "LEASE_RENEW_SECONDS": "0.5",
        "LEASE_SKEW_SECONDS": "1",
    }
    a = ConnectorProcess("a", env, tmp_path)
    try:
        await asyncio.to_thread(eventually, a.holds, 20)
        b = ConnectorProcess("b", env, tmp_path)
        try:
            await asyncio.to_thread(eventually, lambda: b.health() is not None, 20)
            a.proc.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            await asyncio.to_thread(eventually, b.holds, 10)
            # Released, not expired: far sooner than the 20 s lease.
            assert time.monotonic() - stopped < 5
            assert a.proc.wait(10) == 0
        finally:
            b.stop()
    finally:
        a.stop()
