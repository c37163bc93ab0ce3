"""Benchmark 5, scale: one connector process holding 1,000 relay connections. Targets: ≤ 250 MB
resident, ≤ 5% of a core while idle, 100 calls/s across the relays with p99 ≤ 50 ms from the
relay's send to the connector's publish. Then 3-4 connector processes sharing 1,500 relays
through balanced leases (bench/scale_balance.py, which states its own targets).

Processes: a relay process (this module, `relay` role) runs 1,000 `DemoRelay` servers, one port
each, plus a tiny HTTP sink that stamps each POST's arrival; `python -m functions.connector` with
PBX_RELAYS listing all of them and CALL_EVENTS_PUSH_URL = the sink (its real PushPublisher, so
"publish" here includes the HTTP POST of the event), FIRESTORE_EMULATOR_HOST = an empty
Google Firestore emulator (devtools/emulators.py; the connector always watches `users`, and its
relay leases and relay_status live there). RLIMIT_NOFILE is raised in both our processes (the
connector inherits it).

Measured: time until every relay has its client; connector RSS (/proc VmRSS) once connected and
after the calls; its CPU over an idle window (pings: the connector pings every relay every 10 s,
each relay's websockets server pings every 20 s); then calls at 100/s, each a seed Newchannel on
the next relay in turn, latency = sink arrival − relay send (one machine clock).

Idle cost does not grow with the relays held: relay leases live on one heartbeat document per
connector instance (functions/connector/adapters/relay_leases.py, docs/leases.md), renewed
every 5 s.

Baseline: the same relay process and sink, a bare client process (`bare` role): one
`websockets.connect` per relay with the connector's ping settings, `orjson.loads` per frame and
one httpx POST of the frame per Newchannel. Same measurements.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

from bench.common import (
    LOCAL_SETTINGS,
    PROJECT,
    PY,
    ROOT,
    BenchResult,
    PushSink,
    Row,
    at_most,
    bench_env,
    cpu_seconds,
    free_port,
    raise_nofile,
    read_json_line,
    rss_mib,
    stop_process,
    summary_ms,
)
from bench.scale_balance import run_balance

RSS_MB = 250.0
IDLE_PCT = 5.0
P99_MS = 50.0
SETTLE_S = 3.0
RATE = 100.0
WARMUP = 100  # calls sent and not counted before the measured ones


# relay process ------------------------------------------------------------------------------------


class _Sink(PushSink):
    """Stamps each call's first arrival."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}

    def received(self, body: bytes, now: float) -> None:
        linkedid = _linkedid(body)
        if linkedid:
            self.arrivals.setdefault(linkedid, now)


def _linkedid(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
        if "message" in doc:  # the connector's Eventarc-shaped CloudEvent
            return json.loads(base64.b64decode(doc["message"]["data"]))["linkedid"]
        return doc["data"]["Linkedid"]  # the bare client posts the frame itself
    except (ValueError, KeyError, TypeError):
        return None


async def _relay_main(count: int) -> None:
    import orjson

    from devtools.demo_data import seed_frame
    from devtools.demo_relay import DemoRelay

    raise_nofile(4 * count + 1024)
    relays = [await DemoRelay().start() for _ in range(count)]
    sink = _Sink()
    server = await asyncio.start_server(sink.handle, "127.0.0.1", 0, backlog=1024)
    sink_port = server.sockets[0].getsockname()[1]
    print(
        json.dumps(
            {
                "ready": True,
                "urls": [r.url for r in relays],
                "sink": f"http://127.0.0.1:{sink_port}/",
            }
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.split()
        if not command or command[0] == "exit":
            break
        if command[0] == "wait":  # wait until every relay has a client
            started = time.monotonic()
            deadline = started + float(command[1])
            while time.monotonic() < deadline and sum(bool(r.clients) for r in relays) < count:
                await asyncio.sleep(0.05)
            connected = sum(bool(r.clients) for r in relays)
            print(json.dumps({"connected": connected}), flush=True)
        elif command[0] == "drop":
            for relay in relays:
                await relay.drop_clients()
            await asyncio.sleep(0.5)
            print(json.dumps({"dropped": True}), flush=True)
        elif command[0] == "calls":  # calls N RATE PREFIX
            calls, rate, prefix = int(command[1]), float(command[2]), command[3]
            sent: dict[str, float] = {}
            start = loop.time() + 0.05
            for index in range(calls):
                delay = start + index / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                linkedid = f"{prefix}.{index}"
                relay = relays[index % count]
                now = time.time()
                await relay.broadcast(orjson.dumps(seed_frame(linkedid, f"{now:.6f}")))
                sent[linkedid] = now
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(k not in sink.arrivals for k in sent):
                await asyncio.sleep(0.02)
            latencies = [sink.arrivals[k] - t for k, t in sent.items() if k in sink.arrivals]
            print(json.dumps({"sent": len(sent), "latencies": latencies}), flush=True)
    server.close()
    for relay in relays:
        await relay.stop()


# bare client process ------------------------------------------------------------------------------


async def _bare_main(urls: list[str], sink: str) -> None:
    import httpx
    import orjson
    from websockets.asyncio.client import connect

    raise_nofile(4 * len(urls) + 1024)
    client = httpx.AsyncClient(timeout=10)
    tasks: set[asyncio.Task[None]] = set()

    async def one(url: str) -> None:
        async with connect(
            url, max_size=16 * 1024 * 1024, compression=None, ping_interval=10, ping_timeout=10
        ) as ws:
            async for message in ws:
                raw = message if isinstance(message, bytes) else message.encode()
                frame = orjson.loads(raw)
                if frame.get("data", {}).get("Event") == "Newchannel":
                    task = asyncio.create_task(client.post(sink, content=raw))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)

    await asyncio.gather(*(one(u) for u in urls), return_exceptions=True)


# orchestration ------------------------------------------------------------------------------------


def _send(relay: subprocess.Popen, line: str, timeout: float) -> dict[str, Any]:
    assert relay.stdin is not None
    relay.stdin.write(line + "\n")
    relay.stdin.flush()
    return read_json_line(relay, timeout)


def _measure(
    relay: subprocess.Popen,
    client: subprocess.Popen,
    count: int,
    idle_s: float,
    calls: int,
    prefix: str,
    settled: Callable[[], bool] = lambda: True,
) -> dict[str, Any]:
    started = time.monotonic()
    connected = _send(relay, "wait 120", 130)["connected"]
    connect_s = time.monotonic() - started
    # Start-up is not idle: the first relay_status writes (spread over checks, a slice at a
    # time) and lease work finish before the idle window opens.
    deadline = time.monotonic() + 120
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.5)
    settle_s = time.monotonic() - started - connect_s
    time.sleep(SETTLE_S)
    rss_connected = rss_mib(client.pid)
    cpu0 = cpu_seconds(client.pid)
    time.sleep(idle_s)
    idle_pct = (cpu_seconds(client.pid) - cpu0) / idle_s * 100
    # First calls pay one-time costs on both sides (the first POST's connection, lazily loaded
    # number metadata): a second of calls, not counted, so the figures are the steady state.
    warmup = _send(relay, f"calls {WARMUP} {RATE} {prefix}w", WARMUP / RATE + 60)
    cpu1 = cpu_seconds(client.pid)
    got = _send(relay, f"calls {calls} {RATE} {prefix}", calls / RATE + 60)
    busy_cpu_ms = (cpu_seconds(client.pid) - cpu1) / max(1, calls) * 1000
    return {
        "relays": count,
        "connected": connected,
        "connect_s": connect_s,
        "status_settled_s": settle_s,
        "rss_mib_connected": rss_connected,
        "rss_mib_after_calls": rss_mib(client.pid),
        "idle_cpu_pct": idle_pct,
        "idle_window_s": idle_s,
        "calls": calls,
        "received": len(got["latencies"]),
        "warmup_max_ms": max(warmup["latencies"], default=0.0) * 1000,
        "latency_ms": summary_ms(got["latencies"]),
        "cpu_ms_per_call_incl_idle": busy_cpu_ms,
    }


def run(quick: bool = False) -> BenchResult:
    from google.cloud import firestore

    from devtools.emulators import FirestoreEmulator
    from functions.connector.adapters.relay_status import RELAY_STATUS

    count = 20 if quick else 1000
    idle_s = 3.0 if quick else 20.0
    calls = 20 if quick else 1000
    raise_nofile(4 * count + 1024)
    result = BenchResult(
        "scale",
        f"5. Scale: one connector, {count:,} relay connections; 3-4 connectors sharing "
        f"{25 if quick else 1500:,}",
        baseline=(
            "a bare client process on the same relays and sink: one websockets connection per "
            "relay with the connector's ping settings, orjson per frame, an httpx POST per "
            "Newchannel; what holding the connections costs before any product code"
        ),
        method=(
            f"{count:,} DemoRelay servers in one process; idle window {idle_s:.0f} s once all "
            f"are connected and their first relay_status written (+{SETTLE_S:.0f} s settle); "
            f"{WARMUP} warm-up calls, not counted, then "
            f"{calls:,} calls at {RATE:.0f}/s round-robin over the relays; RSS from /proc VmRSS; "
            "CPU from /proc stat. Latency is the connector's share of end to end (relay send to "
            "its publish arriving at a local sink); the notifier's share is benchmark 2. "
            "Then, on a fresh emulator, balancing (bench/scale_balance.py): 3 connector "
            "processes start together on 1,500 DemoRelay servers; idle window; one is killed "
            "(SIGKILL) and, once the loads are rebalanced, a fourth starts; calls at "
            "10/s to random relays from the kill to the end, each ringing 4 s before the "
            "caller hangs up; relays sampled every 0.5 s. The "
            "balancing rows have no bare baseline: nothing else here shares relays."
        ),
    )
    emulator = FirestoreEmulator(project=PROJECT).start()
    with mock.patch.dict(os.environ, {"FIRESTORE_EMULATOR_HOST": emulator.host}):
        store = firestore.Client(project=PROJECT)  # read at construction only

    def statuses_written() -> bool:
        return store.collection(RELAY_STATUS).count().get()[0][0].value >= count

    relay = subprocess.Popen(
        [PY, "-m", "bench.scale", "relay", str(count)],
        cwd=ROOT,
        env=bench_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    figures: dict[str, Any] = {}
    try:
        ready = read_json_line(relay, 120)
        urls, sink = ready["urls"], ready["sink"]
        for label, prefix, extra in (("connector", "sc", {}),):
            connector = subprocess.Popen(
                [PY, "-m", "functions.connector"],
                cwd=ROOT,
                env=bench_env(
                    GOOGLE_CLOUD_PROJECT=PROJECT,
                    FIRESTORE_EMULATOR_HOST=emulator.host,
                    PBX_RELAYS=",".join(urls),
                    CALL_EVENTS_PUSH_URL=sink,
                    PORT=str(free_port()),
                    LOG_LEVEL="WARNING",
                    **{**LOCAL_SETTINGS, **extra},
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                figures[label] = _measure(
                    relay, connector, count, idle_s, calls, prefix, statuses_written
                )
            finally:
                stop_process(connector)
            _send(relay, "drop", 30)
            emulator.reset()  # the next connector starts without the last one's leases
        bare = subprocess.Popen(
            [PY, "-m", "bench.scale", "bare", sink],
            cwd=ROOT,
            env=bench_env(BENCH_SCALE_URLS=",".join(urls)),
            stdout=subprocess.DEVNULL,
        )
        try:
            figures["bare"] = _measure(relay, bare, count, idle_s, calls, "sb")
        finally:
            stop_process(bare)
        if relay.stdin:
            relay.stdin.write("exit\n")
            relay.stdin.flush()
        stop_process(relay, timeout=30)
        emulator.reset()
        balance_rows, figures["balance"], balance_notes = run_balance(emulator, quick)
    finally:
        if relay.poll() is None and relay.stdin:
            relay.stdin.write("exit\n")
            relay.stdin.flush()
        stop_process(relay, timeout=30)
        store.close()
        emulator.stop()
    c, b = figures["connector"], figures["bare"]
    result.rows += [
        Row(
            "relays connected",
            c["connected"],
            "relays",
            f"= {count}",
            c["connected"] == count,
            b["connected"],
            "bare",
            note=(
                f"in {c['connect_s']:.1f} s (bare {b['connect_s']:.1f} s); first relay_status "
                f"of all written {c['status_settled_s']:.1f} s later"
            ),
        ),
        Row(
            "connector RSS, connected",
            c["rss_mib_connected"],
            "MiB",
            f"<= {RSS_MB:.0f}",
            at_most(c["rss_mib_connected"], RSS_MB),
            b["rss_mib_connected"],
            "bare",
            _ratio(c["rss_mib_connected"], b["rss_mib_connected"]),
        ),
        Row(
            "connector RSS, after the calls",
            c["rss_mib_after_calls"],
            "MiB",
            f"<= {RSS_MB:.0f}",
            at_most(c["rss_mib_after_calls"], RSS_MB),
            b["rss_mib_after_calls"],
            "bare",
            _ratio(c["rss_mib_after_calls"], b["rss_mib_after_calls"]),
        ),
        Row(
            f"idle CPU over {idle_s:.0f} s",
            c["idle_cpu_pct"],
            "% of a core",
            f"<= {IDLE_PCT:.0f}",
            at_most(c["idle_cpu_pct"], IDLE_PCT),
            b["idle_cpu_pct"],
            "bare",
            _ratio(c["idle_cpu_pct"], b["idle_cpu_pct"]),
        ),
        Row(
            f"p50, relay send → publish ({RATE:.0f} calls/s)",
            c["latency_ms"]["p50"],
            "ms",
            baseline=b["latency_ms"]["p50"],
            baseline_label="bare",
            ratio=_ratio(c["latency_ms"]["p50"], b["latency_ms"]["p50"]),
        ),
        Row(
            f"p99, relay send → publish ({RATE:.0f} calls/s)",
            c["latency_ms"]["p99"],
            "ms",
            f"<= {P99_MS:.0f}",
            at_most(c["latency_ms"]["p99"], P99_MS),
            b["latency_ms"]["p99"],
            "bare",
            _ratio(c["latency_ms"]["p99"], b["latency_ms"]["p99"]),
        ),
        Row(
            "max, relay send → publish",
            c["latency_ms"]["max"],
            "ms",
            baseline=b["latency_ms"]["max"],
            baseline_label="bare",
            note=(
                f"warm-up calls' max {c['warmup_max_ms']:.0f} ms "
                f"(bare {b['warmup_max_ms']:.0f} ms), not counted"
            ),
        ),
        Row(
            "calls published",
            c["received"],
            "calls",
            f"= {calls}",
            c["received"] == calls,
            b["received"],
            "bare",
        ),
    ]
    result.rows += balance_rows
    result.notes += balance_notes
    result.raw = figures
    per_conn_kib = (
        (c["rss_mib_connected"] - b["rss_mib_connected"]) * 1024 / count
        if c["rss_mib_connected"] and b["rss_mib_connected"]
        else None
    )
    if per_conn_kib is not None:
        result.notes.append(
            f"Connector over bare: {per_conn_kib:.1f} KiB RSS per connection (product objects, "
            "Firestore/gRPC and Pub/Sub clients are a fixed part of the difference)."
        )
    return result


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def main() -> None:
    import os

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="role", required=True)
    r = sub.add_parser("relay")
    r.add_argument("count", type=int)
    b = sub.add_parser("bare")
    b.add_argument("sink")
    b.add_argument("urls", nargs="*")
    args = parser.parse_args()
    if args.role == "relay":
        asyncio.run(_relay_main(args.count))
    else:
        urls = args.urls or os.environ["BENCH_SCALE_URLS"].split(",")
        asyncio.run(_bare_main(urls, args.sink))


if __name__ == "__main__":
    main()
