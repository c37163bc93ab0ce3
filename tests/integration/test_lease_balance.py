"""Balanced relay leases across real connector processes (`python -m functions.connector`) on
Google's Firestore emulator: three processes share 30 demo relays evenly, a killed one's relays
are read again within the lease bound and spread over the survivors, a fourth that joins gets
its share by hand-offs, no relay ever has two readers, and calls ring exactly once.

Events go to a local HTTP sink through the connector's real PushPublisher (what reaches the
notifier; the notifier's own exactly-once is tested elsewhere), so "rings" here means "the
connector published the call's ringing event"."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from devtools.demo_data import seed_frame
from devtools.demo_relay import DemoRelay
from tests.integration.conftest import PROJECT
from tests.integration.test_connector_ha import ConnectorProcess
from tests.support import LOOPBACK_RELAYS

RELAYS = 30
# Short leases so the test takes seconds: takeover bound = 2 + 0.5 + 0.5 = 3 s.
LEASES = {"LEASE_SECONDS": "2", "LEASE_RENEW_SECONDS": "0.5", "LEASE_SKEW_SECONDS": "0.5"}
BOUND = 3.0
SLACK = 4.0  # reconnects, process start-up and emulator round trips on a shared machine


class WatchedRelay(DemoRelay):
    """A demo relay that counts a client connecting while another is still connected: the
    double reader the leases must prevent, seen exactly rather than sampled."""

    overlaps = 0

    async def _handler(self, ws) -> None:  # type: ignore[no-untyped-def]
        if self.clients:
            self.overlaps += 1
        await super()._handler(ws)


class Sink:
    """The connector's CALL_EVENTS_PUSH_URL: counts ringing and ended events per call."""

    def __init__(self) -> None:
        self.rings: Counter[str] = Counter()
        self.ends: Counter[str] = Counter()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                body = await reader.readexactly(length)
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                event = json.loads(base64.b64decode(json.loads(body)["message"]["data"]))
                if event.get("kind") == "ringing":
                    self.rings[event["linkedid"]] += 1
                elif event.get("kind") == "ended":
                    self.ends[event["linkedid"]] += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def relays() -> AsyncIterator[list[WatchedRelay]]:
    started = [await WatchedRelay().start() for _ in range(RELAYS)]
    yield started
    for relay in started:
        await relay.stop()


async def until(check: Callable[[], bool], timeout: float, sample: Callable[[], None]) -> float:
    """Poll (sampling the relays meanwhile) until check() holds; how long it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "condition not met in time"
        sample()
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_three_processes_share_relays_evenly_through_a_death_and_a_join(
    db, emulator, relays: list[WatchedRelay], tmp_path: Path
) -> None:
    sink = Sink()
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "FIRESTORE_EMULATOR_HOST": emulator.host,
        "CALL_EVENTS_PUSH_URL": await sink.start(),
        "PBX_RELAYS": ",".join(r.url for r in relays),
        **LOOPBACK_RELAYS,
        **LEASES,
    }
    doubles = 0

    def sample() -> None:
        nonlocal doubles
        doubles += sum(len(r.clients) > 1 for r in relays)

    async def loads(*procs: ConnectorProcess) -> list[int] | None:
        reports = await asyncio.gather(*(asyncio.to_thread(p.health) for p in procs))
        if any(r is None for r in reports):
            return None
        return [len(r["leases_held"]) for r in reports if r is not None]

    async def settled(procs: tuple[ConnectorProcess, ...], timeout: float) -> float:
        """Every relay read by one process, and every load within 10% of the fair share."""
        share = RELAYS / len(procs)
        started = time.monotonic()
        while True:
            held = await loads(*procs)
            if (
                held is not None
                and all(len(r.clients) == 1 for r in relays)
                and sum(held) == RELAYS
                and all(abs(n - share) <= 0.1 * share for n in held)
            ):
                return time.monotonic() - started
            assert time.monotonic() - started < timeout, f"loads {held}, want ~{share:.1f}"
            sample()
            await asyncio.sleep(0.1)

    async def ring_everywhere(prefix: str) -> None:
        """A call on every relay: each rings once, then the caller hangs up (each call ends
        once, and no call stays in progress to hold its relay back from a move)."""
        ids = [f"{prefix}.{i}" for i in range(RELAYS)]
        rings = [seed_frame(linkedid, f"{time.time():.6f}") for linkedid in ids]
        for relay, ring in zip(relays, rings, strict=True):
            await relay.broadcast(orjson.dumps(ring))
        await until(lambda: all(sink.rings[i] for i in ids), 10, sample)
        for relay, ring in zip(relays, rings, strict=True):
            root = {k: ring["data"][k] for k in ("Channel", "Uniqueid", "Linkedid")}
            for event in ({"Event": "HangupRequest", "Cause": "16"}, {"Event": "Hangup"}):
                frame = {**ring, "data": {**root, **event, "Timestamp": f"{time.time():.6f}"}}
                await relay.broadcast(orjson.dumps(frame))
        await until(lambda: all(sink.ends[i] for i in ids), 10, sample)
        await asyncio.sleep(0.5)  # a second reader's duplicate would arrive meanwhile
        assert {i: sink.rings[i] for i in ids} == dict.fromkeys(ids, 1)
        assert {i: sink.ends[i] for i in ids} == dict.fromkeys(ids, 1)

    a = ConnectorProcess("a", env, tmp_path)
    b = ConnectorProcess("b", env, tmp_path)
    c = ConnectorProcess("c", env, tmp_path)
    d: ConnectorProcess | None = None
    try:
        await settled((a, b, c), 40)
        await asyncio.sleep(2.0)  # four lease periods: a settled cluster stays put
        assert await loads(a, b, c) is not None
        await settled((a, b, c), 1)
        await ring_everywhere("start")

        b.proc.send_signal(signal.SIGKILL)  # a crash: b's relays wait for its heartbeat
        killed = time.monotonic()
        await until(lambda: all(r.clients for r in relays), BOUND + SLACK, sample)
        assert time.monotonic() - killed <= BOUND + SLACK
        await settled((a, c), 15)
        await ring_everywhere("after-kill")

        d = ConnectorProcess("d", env, tmp_path)
        await settled((a, c, d), 30)
        await ring_everywhere("after-join")
        assert (await loads(d) or [0])[0] >= 9  # the joiner got its share, by hand-offs

        # never two readers: not in any sample, and no relay saw a second client connect
        assert doubles == 0
        assert sum(r.overlaps for r in relays) == 0
    finally:
        for proc in (a, b, c, d):
            if proc is not None:
                proc.stop()
        sink.server.close()
