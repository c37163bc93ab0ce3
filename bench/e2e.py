"""Benchmark 2, end to end on the local stack: the relay sends a ringing frame → the FCM request
arrives at the local FCM endpoint. 1,000 calls at 20 calls/s. Targets: p50 ≤ 15 ms, p99 ≤ 50 ms.

Assembled like tests/integration/conftest.py, every part a real process on 127.0.0.1:
DemoRelay (in this process) → `python -m functions.connector` (PBX_RELAYS and Firestore lead it
to the relay; CALL_EVENTS_PUSH_URL = the notifier) → the notifier (main.py under
functions-framework, `NotifierProcess`) → Google's Firestore emulator (devtools/emulators.py)
seeded with devtools.demo_data (the seed's number rings three devices of two users) →
devtools.fake_fcm (own process). One Firestore emulator serves the connector and the notifier,
as one Firestore does in production.

Latency of a call = FCM record time (`time.time()` when the request arrived) minus the time just
before the relay wrote the frame; one machine, one clock. Reported for the first and for the last
(third) push of each call. Calls are sent on a fixed schedule (not after the previous finished),
each with a fresh Linkedid; warm-up calls first (10, or 4% of the calls, at the same rate; the
notifier builds its clients on the first event: that is the cold-start benchmark's business).

Baseline (the "floor"): the same relay, the same real connector, the same functions-framework
server, but a notifier (bench/e2e_floor.py) that only decodes the event and POSTs the three FCM
requests: no Firestore lookups, no delivery ledger, no history, no firebase-admin. The ratio is
what the notifier's own work costs on top of the hops.

The targets are measured on this direct path (connector → CALL_EVENTS_PUSH_URL → notifier).

Pub/Sub rows: the production path, the connector's PubSubPublisher (google-cloud-pubsub,
PUBSUB_EMULATOR_HOST) → Google's Pub/Sub emulator → a push subscription as Eventarc makes it
(ordered, 10 s ack deadline) → functions-framework, which turns the raw Pub/Sub push into the
messagePublished CloudEvent (devtools.emulators.push_endpoint) → the notifier. Their own floor is
the same path into the floor notifier: the difference to the direct floor is what the emulator
and the publish path add. That is mostly the emulator's push delivery, which polls its push
subscriptions (~100 ms apart), so it is no target: production Pub/Sub does not work that way.

Listen check: a `users` listener of this process on the shared emulator counts the Listen
responses the notifier's writes cause; with the connector's CPU per call against the floor
phase's (where the notifier writes nothing) it shows whether sharing one emulator bills the
connector (the npm emulator used before did: docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

import orjson

from bench.common import (
    PROJECT,
    BenchResult,
    Row,
    at_most,
    children,
    cpu_seconds,
    machine_busy_seconds,
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


async def _hang_up(relay: Any, linkedids: list[str], ledger_host: str) -> None:
    """Each call's root Hangup (the caller gave up), then wait until the ledger has every call
    over (the notifier handled the ends; a floor notifier keeps no ledger: nothing to wait for)."""
    for n, linkedid in enumerate(linkedids):
        hangup = {"Event": "Hangup", "Uniqueid": linkedid, "Linkedid": linkedid, "Cause": "16"}
        await relay.broadcast(orjson.dumps({"type": 3, "server_id": 1, "data": hangup}))
        if n % 50 == 49:
            await asyncio.sleep(0.05)
    if ledger_host:
        await asyncio.to_thread(_wait_over, ledger_host, f"127.0.0.1:{relay.port}")


def _wait_over(host: str, relay_endpoint: str, timeout: float = 90.0) -> None:
    from google.cloud import firestore
    from google.cloud.firestore_v1.base_query import FieldFilter

    with mock.patch.dict(os.environ, {"FIRESTORE_EMULATOR_HOST": host}):
        client = firestore.Client(project=PROJECT)
    query = (
        client.collection("push_dedupe")
        .where(filter=FieldFilter("relay", "==", relay_endpoint))
        .where(filter=FieldFilter("over", "==", False))
        .limit(1)
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and list(query.stream()):
            time.sleep(0.5)
    finally:
        client.close()


def _by_call(records: list[dict[str, Any]], sent: dict[str, float]) -> dict[str, list[float]]:
    """Arrival times of the answered (200) FCM requests of each call in `sent`."""
    arrivals: dict[str, list[float]] = {}
    for record in records:
        body = record.get("body") or {}
        linkedid = ((body.get("message") or {}).get("data") or {}).get("linkedid")
        if linkedid in sent and record.get("status") == 200:
            arrivals.setdefault(linkedid, []).append(record["time"])
    return arrivals


def _wait_pushes(
    fcm: FakeFcmProcess, sent: dict[str, float], timeout: float
) -> list[dict[str, Any]]:
    """FCM's records once every call in `sent` has its pushes (bounded by `timeout`), plus a
    short settle, so that a push too many (a redelivery rung twice) is counted too."""
    deadline = time.monotonic() + timeout
    while True:
        arrivals = _by_call(fcm.records(), sent)
        complete = sum(len(t) >= PUSHES_PER_CALL for t in arrivals.values())
        if complete >= len(sent) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    time.sleep(0.5)
    return fcm.records()


async def _phase(
    relay: Any,
    fcm: FakeFcmProcess,
    prefix: str,
    calls: int,
    rate: float,
    pids: dict[str, list[int]] | None = None,
    ledger_host: str = "",
) -> dict[str, Any]:
    """Warm-up calls, then `calls`; latencies from FCM's records; CPU seconds per call of each
    process in `pids`. `ledger_host`: the Firestore emulator whose ledger shows the calls over
    after their hang-up ("" for the floor notifier, which keeps none)."""
    await relay.wait_for_clients(1, timeout=30)
    warm = max(10, calls // 25)
    warm_sent = await _send_calls(relay, f"{prefix}-warm", warm, rate)
    await asyncio.to_thread(_wait_pushes, fcm, warm_sent, 60)
    await asyncio.sleep(1.0)
    fcm.clear()
    pids = pids or {}
    cpu0 = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
    busy0, own0, wall0 = machine_busy_seconds(), cpu_seconds(os.getpid()), time.monotonic()
    sent = await _send_calls(relay, prefix, calls, rate)
    records = await asyncio.to_thread(_wait_pushes, fcm, sent, min(300.0, 3 * calls / rate + 30))
    used = {k: sum(cpu_seconds(p) for p in v) - cpu0[k] for k, v in pids.items()}
    cpu = {k: v / calls * 1000 for k, v in used.items()}
    # CPU the machine spent outside this benchmark's processes (another job on the 2 cores)
    outside = (
        machine_busy_seconds() - busy0 - (cpu_seconds(os.getpid()) - own0) - sum(used.values())
    )
    wall = time.monotonic() - wall0
    # The calls end, as calls do, before the next phase: a new connector on the relay would
    # otherwise carry them over from the ledger and end them while that phase is measured.
    await _hang_up(relay, [*warm_sent, *sent], ledger_host)
    arrivals = _by_call(records, sent)
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
        "outside_cpu_pct": round(100 * max(0.0, outside) / wall, 1) if pids else None,
    }


class _ListenProbe:
    """A `users` listener of our own on the emulator the connector watches, counting every
    ListenResponse its stream delivers (google-cloud-firestore's Watch.on_snapshot sees each one,
    changed or not): the Listen traffic the notifier's writes cause for a `users` listener."""

    def __init__(self, emulator_host: str) -> None:
        self.emulator_host = emulator_host
        self.counts: Counter[str] = Counter()
        self._start: Counter[str] = Counter()

    def __enter__(self) -> _ListenProbe:
        from google.cloud import firestore
        from google.cloud.firestore_v1 import watch

        self._original = original = watch.Watch.on_snapshot
        counts = self.counts

        def counting(watcher: Any, proto: Any) -> Any:
            if proto is not None:
                counts[proto._pb.WhichOneof("response_type") or "none"] += 1
            return original(watcher, proto)

        watch.Watch.on_snapshot = counting  # type: ignore[method-assign]
        with mock.patch.dict(os.environ, {"FIRESTORE_EMULATOR_HOST": self.emulator_host}):
            self._client = firestore.Client(project=PROJECT)
        loaded = threading.Event()
        self._watch = self._client.collection("users").on_snapshot(lambda *_: loaded.set())
        loaded.wait(30)
        time.sleep(0.5)  # the initial snapshot's last responses
        self._start = Counter(self.counts)
        return self

    def during(self) -> dict[str, int]:
        """Responses since the initial snapshot, by kind."""
        return {k: self.counts[k] - self._start[k] for k in self.counts}

    def control(self, timeout: float = 10.0) -> int:
        """Positive control: one write to `users` must reach the listener (else a 0 above
        would say nothing). The document names no relay, so no connector acts on it."""
        before = sum(self.counts.values())
        ref = self._client.collection("users").document("zz-bench-listen-probe")
        ref.set({"email": "listen-probe@bench.invalid", "isActive": False})
        deadline = time.monotonic() + timeout
        while sum(self.counts.values()) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        ref.delete()
        return sum(self.counts.values()) - before

    def __exit__(self, *exc: object) -> None:
        from google.cloud.firestore_v1 import watch

        self._watch.unsubscribe()
        self._client.close()
        watch.Watch.on_snapshot = self._original  # type: ignore[method-assign]


async def _run(quick: bool, work: Path) -> dict[str, Any]:
    from devtools.demo_relay import DemoRelay
    from devtools.emulators import FirestoreEmulator, PubSubEmulator, push_endpoint

    calls = 20 if quick else 1000
    side_calls = 10 if quick else 300
    out: dict[str, Any] = {}
    emulator = FirestoreEmulator(project=PROJECT, log_path=work / "firestore.log").start()
    pubsub = PubSubEmulator(log_path=work / "pubsub.log").start()
    fcm = FakeFcmProcess().start()
    relay = await DemoRelay().start()
    # One emulator for the connector's relay directory and the notifier, as in production,
    # tests/integration and `make dev`: Google's emulator sends a listener only changes to its
    # query (the run checks it: _ListenProbe, and the connector's CPU per call against the floor
    # phase's, where the notifier writes nothing).
    base_env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "FIRESTORE_EMULATOR_HOST": emulator.host,
        "PBX_RELAYS": relay.url,
    }

    def via_pubsub(name: str, notifier_url: str) -> tuple[dict[str, str], str]:
        """A topic of the phase's own and the push subscription Eventarc makes for the trigger
        (ordered, 10 s ack deadline), delivering to `notifier_url`; the connector's env."""
        topic = pubsub.create_topic(PROJECT, f"call-events-{name}")
        subscription = pubsub.create_push_subscription(
            PROJECT, f"notifier-{name}", topic, push_endpoint(notifier_url, topic)
        )
        return {**base_env, **pubsub.env(), "CALL_EVENTS_TOPIC": topic}, subscription

    def processes(notifier_proc: Any, conn: Any) -> dict[str, list[int]]:
        """The pids whose CPU a phase reports (all of the stack's, for the outside-CPU check)."""
        assert notifier_proc.proc and emulator.proc and pubsub.proc and fcm.proc
        return {
            "notifier": [notifier_proc.proc.pid, *children(notifier_proc.proc.pid)],
            "firestore emulator": [emulator.proc.pid],
            "connector": [conn.pid],
            "pubsub emulator": [pubsub.proc.pid],
            "fake FCM": [fcm.proc.pid],
        }

    try:
        seed_demo(emulator.host, relay.port)
        env = notifier_env(emulator.host, fcm.url)
        with notifier(env) as real:
            push_env = {**base_env, "CALL_EVENTS_PUSH_URL": real.url}
            with _ListenProbe(emulator.host) as probe, connector(push_env, work / "c1.log") as conn:
                pids = processes(real, conn)
                out["push"] = await _phase(relay, fcm, "e2e", calls, RATE, pids, emulator.host)
                out["push"]["listen_responses"] = probe.during()
                out["push"]["listen_control"] = probe.control()
            await _wait_no_clients(relay)
            ps_env, subscription = via_pubsub("real", real.url)
            with connector(ps_env, work / "c2.log") as conn:
                pids = processes(real, conn)
                out["pubsub"] = await _phase(
                    relay, fcm, "e2eps", side_calls, RATE, pids, emulator.host
                )
            await _wait_no_clients(relay)
            pubsub.delete_subscription(subscription)
        floor_source = str(Path(__file__).with_name("e2e_floor.py"))
        with notifier(env, source=floor_source) as floor:
            floor_env = {**base_env, "CALL_EVENTS_PUSH_URL": floor.url}
            with connector(floor_env, work / "c3.log") as conn:
                pids = processes(floor, conn)
                out["floor"] = await _phase(relay, fcm, "e2efloor", calls, RATE, pids)
            await _wait_no_clients(relay)
            ps_env, subscription = via_pubsub("floor", floor.url)
            with connector(ps_env, work / "c4.log") as conn:
                pids = processes(floor, conn)
                out["pubsub_floor"] = await _phase(relay, fcm, "e2epsfloor", side_calls, RATE, pids)
            await _wait_no_clients(relay)
            pubsub.delete_subscription(subscription)
    finally:
        await relay.stop()
        fcm.stop()
        pubsub.stop()
        emulator.stop()
    return out


def run(quick: bool = False) -> BenchResult:
    with tempfile.TemporaryDirectory() as tmp:
        got = asyncio.run(_run(quick, Path(tmp)))
    push, pubsub, floor = got["push"], got["pubsub"], got["floor"]
    pubsub_floor = got["pubsub_floor"]
    result = BenchResult(
        "e2e",
        f"2. End to end: relay frame → FCM request, {push['calls']:,} calls at {RATE:.0f}/s",
        baseline=(
            "the same relay, real connector and functions-framework server with a notifier that "
            "only decodes the event and POSTs the three FCM requests (bench/e2e_floor.py): the "
            "cost of the hops; the ratio is what the notifier's own work (Firestore lookups, "
            "ledger, history, firebase-admin) adds. The Pub/Sub rows have their own floor: the "
            "same floor notifier behind the same Pub/Sub emulator"
        ),
        method=(
            f"{push['calls']:,} calls on the direct path (connector → CALL_EVENTS_PUSH_URL → "
            f"notifier) and as many on its floor, {pubsub['calls']:,} in each Pub/Sub phase, "
            f"at {RATE:.0f} calls/s on a "
            "fixed schedule after max(10, 4%) warm-up calls per phase; each call rings 3 "
            "devices; latency = FCM arrival − relay send. One Google Firestore emulator holds "
            "what the connector watches and the notifier's data, as one Firestore does in "
            "production. The "
            "Pub/Sub rows take the production path: the connector's PubSubPublisher → Google's "
            "Pub/Sub emulator → an ordered push subscription → functions-framework's Pub/Sub "
            "push conversion → the notifier. Targets are on the direct path: the Pub/Sub "
            "emulator polls its push subscriptions (~100 ms), which production Pub/Sub does not."
        ),
    )
    lp, fp = push["last_push_ms"], floor["last_push_ms"]
    fpf = floor["first_push_ms"]
    first = push["first_push_ms"]
    plp, pfp = pubsub["last_push_ms"], pubsub_floor["last_push_ms"]
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
            "calls with all 3 pushes, each device once",
            push["complete_calls"],
            "calls",
            f"= {push['calls']}",
            _all_once(push),
            note=f"pushes {push['pushes']:,} of {PUSHES_PER_CALL * push['calls']:,}; floor "
            f"{floor['complete_calls']}/{floor['calls']} calls",
        ),
        Row(
            "via the Pub/Sub emulator: p50, all 3 pushes",
            plp["p50"],
            "ms",
            baseline=pfp["p50"],
            baseline_label="floor via the emulator",
            ratio=_r(plp["p50"], pfp["p50"]),
        ),
        Row(
            "via the Pub/Sub emulator: p99, all 3 pushes",
            plp["p99"],
            "ms",
            baseline=pfp["p99"],
            baseline_label="floor via the emulator",
            ratio=_r(plp["p99"], pfp["p99"]),
            note=f"max {_f(plp['max'])} ms (floor via the emulator {_f(pfp['max'])} ms)",
        ),
        Row(
            "floor via the Pub/Sub emulator (the emulator's own share): p50, all 3 pushes",
            pfp["p50"],
            "ms",
            baseline=fp["p50"],
            baseline_label="floor direct",
            ratio=_r(pfp["p50"], fp["p50"]),
            note=f"p99 {_f(pfp['p99'])} ms vs {_f(fp['p99'])} ms direct",
        ),
        Row(
            "calls with all 3 pushes, each device once, via the Pub/Sub emulator",
            pubsub["complete_calls"],
            "calls",
            f"= {pubsub['calls']}",
            _all_once(pubsub),
            note=f"pushes {pubsub['pushes']:,} of {PUSHES_PER_CALL * pubsub['calls']:,}; floor "
            f"{pubsub_floor['complete_calls']}/{pubsub_floor['calls']} calls",
        ),
    ]
    cpu = {k: v for k, v in push["cpu_ms_per_call"].items() if k != "pubsub emulator"}
    result.notes.append(
        "CPU per call on the direct path, by process (ms): "
        + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
        + f"; total {sum(cpu.values()):.1f} ms per call on {os.cpu_count()} cores = a ceiling of "
        f"~{1000 * (os.cpu_count() or 1) / max(1.0, sum(cpu.values())):.0f} calls/s for the "
        "whole local stack."
    )
    ps_cpu = pubsub["cpu_ms_per_call"]
    emulator_share = (
        pfp["p50"] - fp["p50"] if pfp["p50"] is not None and fp["p50"] is not None else None
    )
    result.notes.append(
        "Via the Pub/Sub emulator: of the p50 "
        f"{_f(plp['p50'])} ms, {_f(emulator_share)} ms is the emulator and the publish path "
        f"(its floor {_f(pfp['p50'])} ms − the direct floor {_f(fp['p50'])} ms): the emulator "
        "polls its push subscriptions about every 100 ms, so a message waits ~50 ms on average "
        "whatever the publisher does (PubSubPublisher flushes after 1 ms). Production Pub/Sub "
        "pushes as messages arrive. CPU per call, by process (ms): "
        + ", ".join(f"{k} {v:.1f}" for k, v in ps_cpu.items())
        + "."
    )
    outside = {
        name: got[key].get("outside_cpu_pct")
        for name, key in (
            ("direct", "push"),
            ("direct floor", "floor"),
            ("Pub/Sub", "pubsub"),
            ("Pub/Sub floor", "pubsub_floor"),
        )
    }
    result.notes.append(
        "CPU spent outside this benchmark's processes during each phase (other work on the "
        "2 cores; /proc/stat minus every process of the stack and the harness): "
        + ", ".join(f"{name} {_f(pct)}%" for name, pct in outside.items())
        + " of a core. At 20 calls/s a 200 ms stall of any process on the path delays ~4 "
        "consecutive calls: a few such stalls decide a p99 and the max."
    )
    shared_cpu = cpu.get("connector", 0.0)
    quiet_cpu = floor["cpu_ms_per_call"].get("connector", 0.0)
    listen = push.get("listen_responses", {})
    result.notes.append(
        "Connector sharing the notifier's Firestore emulator (every phase here, as in "
        f"production and tests/integration): {shared_cpu:.1f} ms connector CPU per call while "
        f"the notifier writes ledger and history for every call, {quiet_cpu:.1f} ms in the "
        "floor phase, where the notifier writes nothing; a `users` listener of the "
        f"benchmark's own on that emulator got {sum(listen.values())} Listen responses during the "
        f"{push['calls']:,} calls ({_kinds(listen)}; one `users` write afterwards, the "
        f"control, gave {push.get('listen_control', '–')}). "
        + _listen_verdict(shared_cpu, quiet_cpu)
    )
    result.raw = got
    return result


def _all_once(phase: dict[str, Any]) -> bool:
    calls = phase["calls"]
    return phase["complete_calls"] == calls and phase["pushes"] == PUSHES_PER_CALL * calls


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def _listen_verdict(shared: float, quiet: float) -> str:
    """What the connector's CPU with and without the notifier's writes says about Listen."""
    if shared <= max(quiet * 1.5, quiet + 2.0):
        return (
            "Google's emulator sends a listener only changes to its query, as production "
            "Firestore does, so the notifier's writes cost the connector nothing and it needs "
            "no emulator of its own. The npm emulator used before re-sent the whole `users` "
            "query after every write anywhere: 19.2 ms connector CPU per call shared vs 3.5 ms "
            "with its own (run of 2026-11-27 04:22)."
        )
    return (
        "The notifier's writes cost the connector extra CPU per call: the emulator's Listen "
        "stream sends the `users` listener more than changes to its query (production Firestore "
        "does not); give the connector an emulator of its own before trusting its CPU figure."
    )


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _r(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None
