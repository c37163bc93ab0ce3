"""Benchmark 4, notifier cold start: process start → first event handled (the CloudEvent POST
answered), against a bare import of the notifier's dependencies. Target: at most 1.3×.

The notifier runs as Cloud Functions runs it: `python -m functions_framework --target
on_call_event --signature-type cloudevent` (gunicorn, main.py), against Google's Firestore
emulator (devtools/emulators.py) seeded with devtools.demo_data and devtools.fake_fcm. The clock
starts just before `Popen`; the port is polled every 5 ms; the first event is a ringing call for
the seed's number (three pushes, Firestore lookups, ledger, history), POSTed as the Eventarc
CloudEvent the connector would send.
Each repetition is a fresh process; one start before the counted ones warms the emulator's JVM
(its very first requests take ~0.6 s: class loading and JIT), as a long-lived emulator is.

The prototype this benchmark used to run alongside (firebase-admin's messaging service built
without the httpx client fcm_sender.py replaces at once) was adopted in commit 2958842
(fcm_sender.py `_messaging_service`) and retired; its proposal now reports the adoption: the
figures before (run of 2026-12-01 08:46:46 UTC, prototype alternating with the shipped notifier)
and this run's, each against its own run's bare import.

Baseline: `python -c "import <the notifier's third-party dependencies>"`, a fresh process, timed
the same way (start → exit). Also reported: start → port listening, and `-X importtime` of main.py
(the slowest imports, for the lazy-import proposals).
"""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.common import (
    PROJECT,
    PY,
    ROOT,
    BenchResult,
    Proposal,
    Row,
    at_most,
    bench_env,
    free_port,
    median,
    stop_process,
)
from bench.stack import FakeFcmProcess, notifier_env, seed_demo
from devtools.processes import notifier_command

TARGET_RATIO = 1.3
# The last run before fcm_sender.py stopped building firebase-admin's httpx client (code db322d1,
# bench of a39f4ba), 5 starts of each, alternating: the shipped notifier and the prototype.
BEFORE_RUN = "2026-12-01 08:46:46 UTC"
BEFORE = {"handled": 572.7, "first_event": 182.7, "bare": 430.5, "prototype": 506.6}
RELAY_PORT = 7099
BARE_IMPORTS = (
    "functions_framework",
    "cloudevents.http",
    "firebase_admin",
    "firebase_admin.messaging",
    "google.cloud.firestore",
    "phonenumbers",
    "orjson",
    "httpx",
    "aiohttp",
)


def _event_request(linkedid: str) -> tuple[dict[str, str], bytes]:
    from functions.connector.adapters.eventarc_envelope import pubsub_cloudevent
    from functions.core.call_event import CallEvent, Kind

    now = time.time()
    event = CallEvent(
        Kind.RINGING,
        f"127.0.0.1:{RELAY_PORT}",
        1,
        linkedid,
        "01026132471",
        "김철수",
        "07045144801",
        "PJSIP/DKCT-000001b1",
        now,
        now,
    )
    return pubsub_cloudevent(
        event.to_json(),
        event.attributes(),
        project=PROJECT,
        topic="call-events",
        message_id=uuid.uuid4().hex,
        publish_time=datetime.now(UTC),
        ordering_key=event.call_key,
    )


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _one_start(env: dict[str, str], log: Path) -> dict[str, float]:
    port = free_port()
    headers, body = _event_request(f"cold.{uuid.uuid4().hex[:8]}")
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            notifier_command(port, python=PY),
            cwd=ROOT,
            env=bench_env(PORT=str(port), **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = started + 60
            while not _listening(port):
                if proc.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(f"notifier did not listen: {log.read_text()[-2000:]}")
                time.sleep(0.005)
            listening = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", "/", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            handled = time.perf_counter()
            conn.close()
            if response.status != 200:
                raise RuntimeError(f"first event answered {response.status}")
        finally:
            stop_process(proc)
    return {"listening": listening - started, "handled": handled - started}


def _bare_import() -> float:
    started = time.perf_counter()
    subprocess.run(
        [PY, "-c", "import " + ", ".join(BARE_IMPORTS)], cwd=ROOT, env=bench_env(), check=True
    )
    return time.perf_counter() - started


def _importtime(top: int = 8) -> list[tuple[str, float]]:
    """Cumulative import time (ms) of the biggest modules main.py pulls in, two levels deep."""
    out = subprocess.run(
        [PY, "-X", "importtime", "-c", "import main"],
        cwd=ROOT,
        env=bench_env(GOOGLE_CLOUD_PROJECT=PROJECT),
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[tuple[str, float]] = []
    for line in out.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( +)(\S+)", line)
        if match is None:
            continue
        level = (len(match.group(2)) - 1) // 2
        if level in (0, 1, 2):
            rows.append((match.group(3), int(match.group(1)) / 1000))
    return sorted(rows, key=lambda r: -r[1])[:top]


def run(quick: bool = False) -> BenchResult:
    from devtools.emulators import FirestoreEmulator

    reps = 1 if quick else 5
    result = BenchResult(
        "coldstart",
        "4. Notifier cold start: process start → first event handled",
        baseline=(
            "a fresh `python -c 'import "
            + ", ".join(BARE_IMPORTS)
            + "'`: what any notifier built on these libraries pays before doing anything"
        ),
        method=(
            f"{reps} fresh process(es) each of bare import and shipped notifier, "
            "alternating, after one uncounted start that warms the emulator's JVM; median "
            "reported. First event: a ringing call for the seed's number (3 pushes) against "
            "Google's Firestore emulator, seeded."
        ),
    )
    emulator = FirestoreEmulator(project=PROJECT).start()
    fcm = FakeFcmProcess().start()
    starts: list[dict[str, float]] = []
    bare: list[float] = []
    try:
        seed_demo(emulator.host, RELAY_PORT)
        env = notifier_env(emulator.host, fcm.url)
        env.pop("PYTHONPATH", None)
        _bare_import()  # page cache warm for both
        with tempfile.TemporaryDirectory() as tmp:
            # A fresh JVM answers its very first requests slowly (class loading, JIT): one
            # notifier start against it first, not counted, so that every counted start meets
            # the emulator as the tests' and `make dev`'s long-lived one is.
            _one_start(env, Path(tmp) / "jvm-warm-up.log")
            fcm.clear()
            for index in range(reps):
                bare.append(_bare_import())
                starts.append(_one_start(env, Path(tmp) / f"n{index}.log"))
        pushes = len(fcm.records())
        imports = _importtime()
    finally:
        fcm.stop()
        emulator.stop()
    handled = median([s["handled"] for s in starts])
    listening = median([s["listening"] for s in starts])
    base = median(bare)
    assert handled and listening and base
    ratio = handled / base
    result.rows += [
        Row(
            "start → first event handled",
            handled * 1000,
            "ms",
            f"<= {TARGET_RATIO}× bare",
            at_most(ratio, TARGET_RATIO),
            base * 1000,
            "bare import",
            ratio,
        ),
        Row(
            "start → port listening",
            listening * 1000,
            "ms",
            baseline=base * 1000,
            baseline_label="bare import",
            ratio=listening / base,
        ),
        Row("first event itself (handled − listening)", (handled - listening) * 1000, "ms"),
        Row("bare import of the dependencies", base * 1000, "ms"),
        Row(
            "pushes received from the first events",
            pushes,
            "pushes",
            f"= {3 * reps}",
            pushes == 3 * reps,
            note="3 per counted start",
        ),
    ]
    result.notes.append(
        "Slowest top-level imports of main.py (`-X importtime`, cumulative ms): "
        + ", ".join(f"{name} {ms:.0f}" for name, ms in imports)
    )
    result.raw = {"starts": starts, "bare": bare, "importtime_ms": imports}
    first_event = handled - listening
    before_ratio = BEFORE["handled"] / BEFORE["bare"]
    proto_ratio = BEFORE["prototype"] / BEFORE["bare"]
    result.proposals.append(
        Proposal(
            (BEFORE["handled"] - BEFORE["prototype"]) / BEFORE["handled"],
            "functions/notifier/adapters/fcm_sender.py `init_firebase_app` → firebase-admin "
            "`messaging._MessagingService.__init__` (run by `_send_through_aiohttp`)",
            f"before adoption: {BEFORE['first_event']:,.0f} ms of the {BEFORE['handled']:,.0f} ms "
            "cold start was the first event; it waits on functions/notifier/app.py `notifier()`'s "
            "lock while the worker's warm-up thread builds the clients, and most of that build "
            "was firebase-admin's messaging service constructing an httpx AsyncClient (two "
            "`ssl.create_default_context()` loads of the CA bundle and the first import of "
            "httpcore) that `_send_through_aiohttp` replaced with AiohttpFcmClient at once; "
            f"this run, adopted: the first event {first_event * 1000:,.0f} ms of the "
            f"{handled * 1000:,.0f} ms cold start",
            "build the messaging service without that client (e.g. construct it with "
            "`_http_client.HttpxAsyncClient` stubbed out, as the prototype did, then set "
            "`_async_client`), and start the Firestore channel's warm-up before firebase-admin's "
            "set-up instead of after it",
            "measured with a prototype before adoption (run of "
            f"{BEFORE_RUN}, code db322d1; retired once adopted): "
            f"{BEFORE['handled'] - BEFORE['prototype']:,.0f} ms "
            f"({BEFORE['handled']:,.1f} → {BEFORE['prototype']:,.1f} ms, {before_ratio:.2f}× → "
            f"{proto_ratio:.2f}× a bare import of {BEFORE['bare']:,.1f} ms), alternating with the "
            "shipped notifier",
            f"this run, adopted: start → first event handled {handled * 1000:,.1f} ms, "
            f"{ratio:.2f}× the same run's bare import of {base * 1000:,.1f} ms (target "
            f"≤ {TARGET_RATIO}×); first event {first_event * 1000:,.1f} ms",
        )
    )
    return result
