"""Benchmark 2, end to end on the local stack: the relay sends a ringing frame → the FCM request
arrives at the local FCM endpoint. 1,000 calls at 20 calls/s. Targets: p50 ≤ 15 ms, p99 ≤ 50 ms.

Assembled like tests/integration/conftest.py, every part a real process on 127.0.0.1:
DemoRelay (in this process) → `python -m functions.connector` (PBX_RELAYS and Firestore `users`
lead it to the relay; CALL_EVENTS_PUSH_URL = the notifier) → the notifier (main.py under
functions-framework, `NotifierProcess`) → Firestore emulator seeded with devtools.demo_data (the
seed's number rings three devices of two users) → devtools.fake_fcm (own process).

Latency of a call = FCM record time (`time.time()` when the request arrived) minus the time just
before the relay wrote the frame; one machine, one clock. Reported for the first and for the last
(third) push of each call. Calls are sent on a fixed schedule (not after the previous finished),
each with a fresh Linkedid; warm-up calls first (10, or 4% of the calls, at the same rate; the
notifier builds its clients on the first event: that is the cold-start benchmark's business).

Baseline (the "floor"): the same relay, the same real connector, the same functions-framework
server, but a notifier (bench/e2e_floor.py) that only decodes the event and POSTs the three FCM
requests: no Firestore lookups, no delivery ledger, no history, no firebase-admin. The ratio is
what the notifier's own work costs on top of the hops.

Variant: the production path through Pub/Sub: the connector publishes with google-cloud-pubsub to
devtools.fake_pubsub (PUBSUB_EMULATOR_HOST), which pushes the Eventarc-shaped request to the
notifier.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    PROJECT,
    BenchResult,
    Row,
    at_most,
    children,
    cpu_seconds,
    summary_ms,
)
from bench.stack import FakeFcmProcess, connector, notifier, notifier_env, seed_demo

P50_MS = 15.0
P99_MS = 50.0
RATE = 20.0
PUSHES_PER_CALL = 3  # the demo company's ringing devices


async def _wait_no_clients(relay: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while relay.clients and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _send_calls(relay: Any, prefix: str, calls: int, rate: float) -> dict[str, float]:
    from devtools.demo_data import seed_frame

    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    sent: dict[str, float] = {}
    for index in range(calls):
        delay = start + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        linkedid = f"{prefix}.{index}"
        now = time.time()
        await relay.broadcast(orjson.dumps(seed_frame(linkedid, f"{now:.6f}")))
        sent[linkedid] = now
    return sent


async def _phase(
    relay: Any,
    fcm: FakeFcmProcess,
    prefix: str,
    calls: int,
    rate: float,
    pids: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """Warm up with three calls, then send `calls`; latencies from FCM's records; CPU seconds per
    call of each process in `pids`."""
    await relay.wait_for_clients(1, timeout=30)
    warm = max(10, calls // 25)
    await _send_calls(relay, f"{prefix}-warm", warm, rate)
    await asyncio.to_thread(fcm.wait_for, warm * PUSHES_PER_CALL, 60)
    await asyncio.sleep(1.0)
    fcm.clear()
    pids = pids or {}
    cpu0 = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
    sent = await _send_calls(relay, prefix, calls, rate)
    records = await asyncio.to_thread(
        fcm.wait_for, calls * PUSHES_PER_CALL, min(300.0, 3 * calls / rate + 30)
    )
    cpu = {k: (sum(cpu_seconds(p) for p in v) - cpu0[k]) / calls * 1000 for k, v in pids.items()}
    arrivals: dict[str, list[float]] = {}
    for record in records:
        body = record.get("body") or {}
        linkedid = ((body.get("message") or {}).get("data") or {}).get("linkedid")
        if linkedid in sent and record.get("status") == 200:
            arrivals.setdefault(linkedid, []).append(record["time"])
    first = [min(times) - sent[lid] for lid, times in arrivals.items()]
    last = [max(times) - sent[lid] for lid, times in arrivals.items()]
    complete = sum(len(t) >= PUSHES_PER_CALL for t in arrivals.values())
    return {
        "calls": calls,
        "rate": rate,
        "complete_calls": complete,
        "pushes": sum(len(t) for t in arrivals.values()),
        "first_push_ms": summary_ms(first),
        "last_push_ms": summary_ms(last),
        "cpu_ms_per_call": {k: round(v, 1) for k, v in cpu.items()},
    }


async def _run(quick: bool, work: Path) -> dict[str, Any]:
    from devtools.demo_relay import DemoRelay
    from devtools.fake_pubsub import FakePubSubServer
    from tests.support import FirestoreEmulator

    calls = 20 if quick else 1000
    side_calls = 10 if quick else 300
    out: dict[str, Any] = {}
    emulator = FirestoreEmulator().start()
    # The connector's `users` listener gets its own emulator: this emulator answers ANY write
    # (the notifier's ledger and history) by resending the whole users query to every listener,
    # which production Firestore does not; sharing one would bill the connector for it.
    users_emulator = FirestoreEmulator().start()
    fcm = FakeFcmProcess().start()
    relay = await DemoRelay().start()
    try:
        seed_demo(emulator.host, relay.port)
        seed_demo(users_emulator.host, relay.port)
        base_env = {
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "FIRESTORE_EMULATOR_HOST": users_emulator.host,
            "PBX_RELAYS": relay.url,
        }
        env = notifier_env(emulator.host, fcm.url)
        with notifier(env) as real:
            push_env = {**base_env, "CALL_EVENTS_PUSH_URL": real.url}
            with connector(push_env, work / "c1.log") as conn:
                assert real.proc is not None and emulator.proc is not None and fcm.proc
                pids = {
                    "notifier": [real.proc.pid, *children(real.proc.pid)],
                    "firestore emulator": [emulator.proc.pid],
                    "connector": [conn.pid],
                    "fake FCM": [fcm.proc.pid],
                }
                out["push"] = await _phase(relay, fcm, "e2e", calls, RATE, pids)
            await _wait_no_clients(relay)
            shared = {**push_env, "FIRESTORE_EMULATOR_HOST": emulator.host}
            with connector(shared, work / "c0.log") as conn:
                out["shared_emulator"] = await _phase(
                    relay, fcm, "e2eshared", side_calls, RATE, {"connector": [conn.pid]}
                )
            await _wait_no_clients(relay)
            with (
                FakePubSubServer(project=PROJECT, push_url=real.url) as pubsub,
                connector(
                    {
                        **base_env,
                        "PUBSUB_EMULATOR_HOST": pubsub.host,
                        "CALL_EVENTS_TOPIC": "call-events",
                    },
                    work / "c2.log",
                ),
            ):
                out["pubsub"] = await _phase(relay, fcm, "e2eps", side_calls, RATE)
            await _wait_no_clients(relay)
        floor_source = str(Path(__file__).with_name("e2e_floor.py"))
        with notifier(env, source=floor_source) as floor:
            floor_env = {**base_env, "CALL_EVENTS_PUSH_URL": floor.url}
            with connector(floor_env, work / "c3.log"):
                out["floor"] = await _phase(relay, fcm, "e2efloor", side_calls, RATE)
    finally:
        await relay.stop()
        fcm.stop()
        emulator.stop()
        users_emulator.stop()
    return out


def run(quick: bool = False) -> BenchResult:
    with tempfile.TemporaryDirectory() as tmp:
        got = asyncio.run(_run(quick, Path(tmp)))
    push, pubsub, floor = got["push"], got["pubsub"], got["floor"]
    result = BenchResult(
        "e2e",
        f"2. End to end: relay frame → FCM request, {push['calls']:,} calls at {RATE:.0f}/s",
        baseline=(
            "the same relay, real connector and functions-framework server with a notifier that "
            "only decodes the event and POSTs the three FCM requests (bench/e2e_floor.py): the "
            "cost of the hops; the ratio is what the notifier's own work (Firestore lookups, "
            "ledger transaction, history, firebase-admin) adds"
        ),
        method=(
            f"{push['calls']:,} calls (floor and Pub/Sub variants: {floor['calls']:,} each) at "
            f"{RATE:.0f} calls/s on a fixed schedule after max(10, 4%) warm-up calls per phase; "
            "each call rings 3 devices; latency = FCM arrival − relay send."
        ),
    )
    lp, fp = push["last_push_ms"], floor["last_push_ms"]
    fpf = floor["first_push_ms"]
    first = push["first_push_ms"]
    result.rows += [
        Row(
            "p50, first push of a call",
            first["p50"],
            "ms",
            f"<= {P50_MS:.0f}",
            at_most(first["p50"], P50_MS),
            fpf["p50"],
            "floor",
            _r(first["p50"], fpf["p50"]),
        ),
        Row(
            "p99, first push of a call",
            first["p99"],
            "ms",
            f"<= {P99_MS:.0f}",
            at_most(first["p99"], P99_MS),
            fpf["p99"],
            "floor",
            _r(first["p99"], fpf["p99"]),
        ),
        Row("max, first push", first["max"], "ms", baseline=fpf["max"], baseline_label="floor"),
        Row(
            "p50, all 3 pushes of a call",
            lp["p50"],
            "ms",
            f"<= {P50_MS:.0f}",
            at_most(lp["p50"], P50_MS),
            fp["p50"],
            "floor",
            _r(lp["p50"], fp["p50"]),
        ),
        Row(
            "p99, all 3 pushes of a call",
            lp["p99"],
            "ms",
            f"<= {P99_MS:.0f}",
            at_most(lp["p99"], P99_MS),
            fp["p99"],
            "floor",
            _r(lp["p99"], fp["p99"]),
        ),
        Row("max, all 3 pushes", lp["max"], "ms", baseline=fp["max"], baseline_label="floor"),
        Row(
            "calls with all 3 pushes",
            push["complete_calls"],
            "calls",
            f"= {push['calls']}",
            push["complete_calls"] == push["calls"],
        ),
        Row(
            "via Pub/Sub: p50 / p99, all pushes",
            pubsub["last_push_ms"]["p50"],
            "ms",
            note=f"p99 {pubsub['last_push_ms']['p99']:.1f} ms, max "
            f"{pubsub['last_push_ms']['max']:.1f} ms, {pubsub['complete_calls']}/{pubsub['calls']}"
            " calls complete",
        ),
    ]
    cpu = push["cpu_ms_per_call"]
    result.notes.append(
        "CPU per call, by process (ms): "
        + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
        + f"; total {sum(cpu.values()):.1f} ms per call on {os.cpu_count()} cores = a ceiling of "
        f"~{1000 * (os.cpu_count() or 1) / max(1.0, sum(cpu.values())):.0f} calls/s for the "
        "whole local stack."
    )
    shared = got["shared_emulator"]
    result.notes.append(
        "Connector sharing the notifier's emulator (as tests/integration does): "
        f"{shared['cpu_ms_per_call'].get('connector', 0):.1f} ms connector CPU per call vs "
        f"{cpu.get('connector', 0):.1f} ms with its own; p50 "
        f"{shared['last_push_ms']['p50']:.1f} ms. The emulator's Listen re-sends the whole "
        "`users` query after every write anywhere (node_modules/@firestore-emulator/server "
        "v1Listen: `hasUpdate` is true when nothing changed); production Firestore does not."
    )
    result.raw = got
    return result


def _r(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None
