"""Benchmark: the notifier under a burst. 200 ringing calls within one second, over 20 tenants of
the PBX directory, each call to 3 devices (issue 17, "Notifier under a burst").

Real parts: Google's Firestore emulator seeded with 20 `pbx_tenants` (one PBX, one number, two
members with 2 + 1 devices each), the notifier (main.py under functions-framework, as Cloud
Functions serves it) and the FCM stand-in in its own process. The events reach the notifier as
Eventarc delivers them: one binary-mode CloudEvent POST each (the connector's PushPublisher),
sent on a fixed schedule over one second. Latency = FCM arrival - the event's send.

Variants: the notifier's request concurrency (functions-framework's gunicorn threads, `THREADS`;
Cloud Functions gen2's `max_instance_request_concurrency` per instance). One process stands for
one instance: what one instance sustains is what min/max instances multiply.

Baseline: the same burst against a floor notifier (bench/e2e_floor.py: decode the event, POST
the three FCM requests, nothing else) with the same concurrency: the cost of the hops.

Cost per call (issue 17: halve the notifier's CPU per ringing call): the same burst, at
concurrency 1 and as deployed, against the notifier as it was before that work (BEFORE, read
from this repository's git history with `git archive` into a temporary directory and served by
the same functions-framework and packages), alternating with today's.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

from bench.common import (
    LOCAL_SETTINGS,
    PROJECT,
    ROOT,
    BenchResult,
    Row,
    at_least,
    children,
    cpu_seconds,
    median,
    percentile,
)
from bench.stack import FakeFcmProcess, notifier, notifier_env

CALLS = 200
TENANTS = 20
DEVICES_PER_CALL = 3
BURST_SECONDS = 1.0
CONCURRENCY = (1, 8, 32)
DEPLOYED = 8  # infra/notifier.tf's request concurrency this benchmark supports (see the rows)
# The notifier before issue 17's cost-per-call work (the ring commit, the raw commits): the last
# commit before b83baf0. The tree the issue was filed on (f6b83e1) predates the backend-owned
# PBX directory and cannot ring this benchmark's tenants.
BEFORE = "7abacc25bcac4fc06e198c57f6732b5a658e257a"
COST_TARGET = 0.5  # CPU per ringing call, today's / BEFORE's
COST_ROUNDS = 2  # alternating pairs per concurrency
GAPIC_RPCS = ("commit", "batch_get_documents", "run_query", "get_document", "list_documents")


def tenant_documents(tenants: int) -> dict[str, dict[str, dict[str, Any]]]:
    """`tenants` companies, each on its own PBX (relay 127.0.0.1:7200+t, server 1) with one
    number and two members: A with two phones, B with one."""
    docs: dict[str, dict[str, dict[str, Any]]] = {
        "pbx_tenants": {},
        "users": {},
        "my_extensions": {},
        "fcm_tokens": {},
    }
    for t in range(tenants):
        number = f"0704514{t:04d}"
        members = [f"t{t}-a", f"t{t}-b"]
        docs["pbx_tenants"][f"tenant-{t}"] = {
            "name": f"회사 {t}",
            "active": True,
            "pbx": [{"relay": f"ws://127.0.0.1:{7200 + t}", "serverId": 1}],
            "numbers": [number],
            "members": members,
        }
        for m, uid in enumerate(members):
            docs["users"][uid] = {"companyName": f"회사 {t}", "isActive": True}
            docs["my_extensions"][f"ext-{uid}"] = {
                "userId": uid,
                "extension": f"{1000 + m}",
                "accountCode": number,
            }
            for d in range(2 - m):
                docs["fcm_tokens"][f"{uid}_d{d}_Android"] = {
                    "userId": uid,
                    "fcmToken": f"tok-{uid}-{d}",
                    "deviceId": f"d{d}",
                    "platform": "android",
                    "isActive": True,
                    "isApproved": True,
                }
    return docs


def _seed(emulator_host: str) -> None:
    from google.cloud import firestore

    with mock.patch.dict(os.environ, {"FIRESTORE_EMULATOR_HOST": emulator_host}):
        client = firestore.Client(project=PROJECT)
    try:
        batch = client.batch()
        for collection, items in tenant_documents(TENANTS).items():
            for doc_id, doc in items.items():
                batch.set(client.collection(collection).document(doc_id), doc)
        batch.commit()
    finally:
        client.close()


def _events(prefix: str, calls: int) -> list[Any]:
    from functions.core.call_event import CallEvent, Kind

    now = time.time()
    return [
        CallEvent(
            kind=Kind.RINGING,
            relay=f"127.0.0.1:{7200 + n % TENANTS}",
            server_id=1,
            linkedid=f"{prefix}.{n}",
            caller_number=f"0102613{n:04d}",
            caller_name="김철수",
            dialled_number=f"0704514{n % TENANTS:04d}",
            channel=f"PJSIP/trunk-{n:08x}",
            occurred_at=now,
            detected_at=now,
        )
        for n in range(calls)
    ]


async def _burst(url: str, prefix: str, calls: int) -> dict[str, float]:
    """POST the calls' ringing events on a fixed schedule over BURST_SECONDS; send times."""
    from dataclasses import replace

    from functions.connector.adapters.event_publishers import PushPublisher

    publisher = PushPublisher(url, PROJECT, "call-events", timeout=60)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    sent: dict[str, float] = {}
    for n, event in enumerate(_events(prefix, calls)):
        delay = start + n * BURST_SECONDS / calls - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.time()
        await publisher.publish(replace(event, occurred_at=now, detected_at=now))
        sent[event.linkedid] = now
    await publisher.close()
    return sent


def _arrivals(records: list[dict[str, Any]], sent: dict[str, float]) -> dict[str, list[float]]:
    arrivals: dict[str, list[float]] = {}
    for record in records:
        data = ((record.get("body") or {}).get("message") or {}).get("data") or {}
        if data.get("linkedid") in sent and record.get("status") == 200:
            arrivals.setdefault(data["linkedid"], []).append(record["time"])
    return arrivals


def _before_source(tmp: Path) -> str | None:
    """A functions-framework source file serving BEFORE's main.py (None: no git history here,
    e.g. a source archive)."""
    import subprocess

    tree = tmp / "before"
    tree.mkdir()
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", BEFORE],
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    shim = tmp / "before_main.py"
    shim.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(tree)!r})\n"
        "for name in [m for m in sys.modules if m.split('.')[0] in ('functions', 'main')]:\n"
        "    del sys.modules[name]\n"
        "from main import on_call_event  # noqa: E402,F401\n"
        "import functions  # noqa: E402\n"
        f"assert functions.__file__.startswith({str(tree)!r}), functions.__file__\n"
    )
    return str(shim)


def _round_trips(env: dict[str, str], calls: int) -> dict[str, Any]:
    """Firestore RPCs of the real notifier wiring (functions.notifier.app.build_notifier, in this
    process) per ringing call once its caches are warm: before the first FCM request, and in
    all. Counted where every RPC leaves: the client's GAPIC methods and the raw commits."""
    from google.cloud.firestore_v1.services.firestore import client as gapic

    from functions.notifier.adapters.direct_commit import DirectCommit
    from functions.notifier.app import build_notifier
    from functions.settings import load_settings

    counted: list[str] = []

    def counting(name: str, real: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counted.append(name)
            return real(*args, **kwargs)

        return wrapper

    targets = [(gapic.FirestoreClient, name, name) for name in GAPIC_RPCS]
    targets.append((DirectCommit, "_send", "commit"))
    patches = [
        mock.patch.object(owner, attr, counting(label, getattr(owner, attr)))
        for owner, attr, label in targets
    ]
    with mock.patch.dict(os.environ, {"FIRESTORE_EMULATOR_HOST": env["FIRESTORE_EMULATOR_HOST"]}):
        notifier = build_notifier(load_settings(env))
    before: list[int] = []
    real_deliver = notifier.sender.send

    def send(pushes: list[Any]) -> Any:
        before.append(len(counted))
        return real_deliver(pushes)

    notifier.sender.send = send  # type: ignore[method-assign]
    firsts, totals, sent = [], [], 0
    for patch in patches:
        patch.start()
    try:
        for event in _events("rtwarm", TENANTS):  # every tenant's directory cached
            notifier.handle(event)
        for event in _events("rt", calls):
            counted.clear()
            before.clear()
            report = notifier.handle(event)
            sent += report.outcomes.get("incoming_sent", 0)
            firsts.append(before[0] if before else -1)
            totals.append(len(counted))
    finally:
        for patch in patches:
            patch.stop()
        notifier.sender.close()
    return {"before_first": firsts, "total": totals, "sent": sent, "calls": calls}


def _vs_floor(phase: dict, floor: dict, label: str, key: str, **target: Any) -> Row:
    """A phase's figure against the floor notifier's in the same concurrency."""
    return Row(
        f"concurrency {phase['threads']}: {label}",
        phase[key],
        "ms",
        **target,
        baseline=floor[key],
        baseline_label="floor notifier",
        ratio=phase[key] / max(floor[key], 1e-9),
    )


def _phase(
    fcm: FakeFcmProcess, env: dict[str, str], threads: int, source: str | None, tag: str = ""
) -> dict:
    prefix = f"burst{threads}{tag or ('f' if source else '')}"
    with notifier({**env, "THREADS": str(threads)}, source=source) as proc:
        asyncio.run(_burst(proc.url, f"{prefix}warm", TENANTS))  # every tenant's cache warm
        fcm.wait_for(TENANTS * DEVICES_PER_CALL, 60)
        fcm.clear()
        pids = [proc.proc.pid, *children(proc.proc.pid)]  # gunicorn's master and worker
        cpu_before = sum(cpu_seconds(p) for p in pids)
        sent = asyncio.run(_burst(proc.url, prefix, CALLS))
        deadline = time.monotonic() + 120
        while True:
            arrivals = _arrivals(fcm.records(), sent)
            done = sum(len(a) >= DEVICES_PER_CALL for a in arrivals.values())
            if done >= CALLS or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        time.sleep(0.5)  # a push too many would arrive in this time
        arrivals = _arrivals(fcm.records(), sent)
        cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
    first = [min(a) - sent[c] for c, a in arrivals.items()]
    last = [max(a) - sent[c] for c, a in arrivals.items() if len(a) >= DEVICES_PER_CALL]
    return {
        "threads": threads,
        "delivered": sum(len(a) for a in arrivals.values()),
        "complete_calls": len(last),
        "once": all(len(a) == DEVICES_PER_CALL for a in arrivals.values()),
        "first_p50_ms": (percentile(first, 50) or 0) * 1000,
        "first_p99_ms": (percentile(first, 99) or 0) * 1000,
        "all_p50_ms": (percentile(last, 50) or 0) * 1000,
        "all_p99_ms": (percentile(last, 99) or 0) * 1000,
        "cpu_ms_per_call": cpu * 1000 / CALLS,
    }


def run(quick: bool = False) -> BenchResult:
    from devtools.emulators import FirestoreEmulator

    global CALLS
    CALLS = 40 if quick else 200
    result = BenchResult(
        "burst",
        f"6. Notifier under a burst: {CALLS} ringing calls within 1 s, {TENANTS} tenants, "
        f"{DEVICES_PER_CALL} devices each",
        baseline=(
            "the same burst, concurrency and stack against the floor notifier (bench/e2e_floor.py: "
            "decode the event, POST its FCM requests, nothing else)"
        ),
        method=(
            f"{CALLS} binary CloudEvent POSTs (the connector's PushPublisher) on a fixed schedule "
            f"over {BURST_SECONDS:.0f} s to main.py's on_call_event under functions-framework, "
            "after one warm-up call per tenant; Google's Firestore emulator holds the PBX "
            "directory (20 pbx_tenants) and the app's documents; the FCM stand-in answers at "
            "once. Latency = FCM arrival − send; 'all' = the call's third device. Concurrency = "
            "gunicorn threads in one notifier process (one Cloud Functions instance). Cost per "
            "call (issue 17: halve the notifier's CPU per ringing call): the same burst, "
            f"alternating, against the notifier at {BEFORE[:7]} (the last commit before the "
            "cost work, read from git with `git archive`, same packages and stack); the issue's "
            "14.8 ms was the e2e harness (a ring and an end per call) on a slower machine, and "
            "the tree it was filed on (f6b83e1) has no PBX directory to ring these tenants. "
            "Round trips: the real notifier wiring in this process, its Firestore RPCs counted "
            "at the client's GAPIC methods and the raw commits (direct_commit.py)."
        ),
    )
    phases: list[dict[str, Any]] = []
    floors: dict[int, dict[str, Any]] = {}
    costs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    trips: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        emulator = FirestoreEmulator(project=PROJECT, log_path=Path(tmp) / "fs.log").start()
        fcm = FakeFcmProcess().start()
        try:
            _seed(emulator.host)
            env = notifier_env(emulator.host, fcm.url, **LOCAL_SETTINGS)
            floor_source = str(Path(__file__).with_name("e2e_floor.py"))
            for threads in CONCURRENCY if not quick else (8,):
                phases.append(_phase(fcm, env, threads, None))
                floors[threads] = _phase(fcm, env, threads, floor_source)
            trips = _round_trips(env, 20 if not quick else 5)
            fcm.clear()  # its pushes must not count as the next phase's
            before_source = _before_source(Path(tmp))
            for threads in (1, DEPLOYED) if before_source and not quick else ():
                for n in range(COST_ROUNDS):  # alternating, today's first then BEFORE's first
                    pair = [("now", None), ("before", before_source)][:: 1 if n % 2 == 0 else -1]
                    for label, source in pair:
                        got = _phase(fcm, env, threads, source, tag=f"{label}{n}")
                        costs.setdefault((threads, label), []).append(got)
        finally:
            fcm.stop()
            emulator.stop()
    expected = CALLS * DEVICES_PER_CALL
    for phase in phases:
        threads = phase["threads"]
        floor, deployed = floors[threads], threads == DEPLOYED
        result.rows += [
            Row(
                f"concurrency {threads}: pushes delivered, each device once",
                float(phase["delivered"]),
                "pushes",
                f"= {expected}",
                phase["delivered"] == expected and phase["once"],
            ),
            _vs_floor(phase, floor, "p50, every device of a call rung", "all_p50_ms"),
            _vs_floor(
                phase,
                floor,
                "p99, every device of a call rung",
                "all_p99_ms",
                target="<= 1000" if deployed else "",
                passed=at_least(1000 - phase["all_p99_ms"], 0) if deployed else None,
            ),
            _vs_floor(phase, floor, "notifier CPU per ringing call", "cpu_ms_per_call"),
        ]
    for threads in (1, DEPLOYED):
        now, before = costs.get((threads, "now"), []), costs.get((threads, "before"), [])
        if not now or not before:
            continue
        value = median([p["cpu_ms_per_call"] for p in now]) or 0.0
        base = median([p["cpu_ms_per_call"] for p in before]) or 0.0
        complete = all(p["delivered"] == expected and p["once"] for p in now + before)
        ratio = value / max(base, 1e-9)
        result.rows.append(
            Row(
                f"concurrency {threads}: notifier CPU per ringing call, today's / before the "
                f"cost work ({BEFORE[:7]}) — median of {len(now)} alternating bursts each; "
                f"all pushes delivered once in both: {complete}",
                value,
                "ms",
                target=f"<= {COST_TARGET} x before",
                passed=complete and ratio <= COST_TARGET,
                baseline=base,
                baseline_label=f"notifier at {BEFORE[:7]}",
                ratio=ratio,
            )
        )
    firsts, totals = trips["before_first"], trips["total"]
    result.rows += [
        Row(
            f"Firestore round trips before a ringing call's first FCM request, warm caches — "
            f"most over {trips['calls']} calls; {trips['sent']} pushes sent",
            float(max(firsts)),
            "round trips",
            target="<= 1",
            passed=(
                max(firsts) <= 1
                and min(firsts) >= 0
                and trips["sent"] == DEVICES_PER_CALL * trips["calls"]
            ),
            note="the ledger claim's create",
        ),
        Row(
            "Firestore round trips per ringing call in all, warm caches — most",
            float(max(totals)),
            "round trips",
            note="the claim, then the ring's results and history in one commit",
        ),
    ]
    if not costs and not quick:
        result.notes.append(
            f"cost per call: not measured, no git history to read the notifier at {BEFORE[:7]} "
            "from (a source archive?)"
        )
    result.raw = {
        "phases": phases,
        "floors": floors,
        "costs": {f"{t}:{label}": runs for (t, label), runs in costs.items()},
        "round_trips": trips,
    }
    return result


def main() -> None:
    result = run(quick=False)
    for row in result.rows:
        print(row.label, row.value, row.passed, row.baseline)


if __name__ == "__main__":
    main()
