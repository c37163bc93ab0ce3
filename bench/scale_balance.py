"""Benchmark 5, second part (run by bench.scale): relays spread over connector instances.
3 connector processes (`python -m functions.connector`) share 1,500 relays; one is killed; a
fourth joins. Targets: balanced within 10% of the fair share within 60 s of the start; after
the kill every relay read again within 30 s (the lease bound) and the loads rebalanced; after
the join rebalanced within 120 s; no relay with two readers in any sample (every 0.5 s) nor at
any connect; calls sent throughout ring exactly once; CPU and RSS per instance.

Processes: a relay process (this module, `relay` role) runs the DemoRelay servers, samples them
every 0.5 s (relays with no client, with more than one), counts a client that connects while
another is still connected, times each relay's unread gap (last client gone → next connect),
sends the calls (the seed's Newchannel, to random relays) and runs the HTTP sink the connectors
publish to (their real PushPublisher), which counts ringing events per call. The loads are the
live instances' leases in Firestore (count queries on the emulator); the CPU and RSS are each
connector process's own (/proc).

Default lease timing (20 s, renew 5 s, skew 5 s): a killed instance's relays wait for its
heartbeat to run out, so calls sent to them meanwhile cannot ring; they are counted apart
("sent while unread"), as are calls a relay sent while its old reader was already stopping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any
from unittest import mock

from bench.common import (
    LOCAL_SETTINGS,
    PROJECT,
    PY,
    ROOT,
    PushSink,
    Row,
    at_most,
    bench_env,
    cpu_seconds,
    free_port,
    percentile,
    raise_nofile,
    read_json_line,
    rss_mib,
    stop_process,
)

BALANCE_S = 60.0  # 3 instances balanced within
TAKEOVER_S = 30.0  # every relay of a killed instance read again within
JOIN_S = 120.0  # a fourth instance's share within
TOLERANCE = 0.10
SAMPLE_S = 0.5
CALL_RATE = 10.0  # calls/s sent throughout the kill and the join
RING_S = 4.0  # each call rings this long, then the caller hangs up
QUICK_LEASES = {"LEASE_SECONDS": "4", "LEASE_RENEW_SECONDS": "1", "LEASE_SKEW_SECONDS": "1"}


# relay process ------------------------------------------------------------------------------------


def _relay_classes() -> Any:
    from devtools.demo_relay import DemoRelay

    class WatchedRelay(DemoRelay):
        """Counts a connect while another client is connected (two readers, exactly), and
        times each unread gap."""

        overlaps = 0
        empty_since: float | None = None
        gaps: list[float]
        emptied: list[float]  # when the last client left

        async def _handler(self, ws) -> None:  # type: ignore[no-untyped-def]
            now = time.monotonic()
            if self.clients:
                type(self).overlaps += 1
            elif self.empty_since is not None:
                self.gaps.append(now - self.empty_since)
            self.empty_since = None
            try:
                await super()._handler(ws)
            finally:
                if not self.clients:
                    self.empty_since = time.monotonic()
                    self.emptied.append(self.empty_since)

    return WatchedRelay


class _RingSink(PushSink):
    """The connectors' CALL_EVENTS_PUSH_URL: counts ringing and ended events per call."""

    def __init__(self) -> None:
        self.rings: Counter[str] = Counter()
        self.ends: Counter[str] = Counter()

    def received(self, body: bytes, now: float) -> None:
        try:
            event = json.loads(base64.b64decode(json.loads(body)["message"]["data"]))
        except (ValueError, KeyError, TypeError):
            return
        if event.get("kind") == "ringing":
            self.rings[str(event.get("linkedid"))] += 1
        elif event.get("kind") == "ended":
            self.ends[str(event.get("linkedid"))] += 1


async def _relay_main(count: int) -> None:
    import orjson

    from devtools.demo_data import seed_frame

    raise_nofile(4 * count + 1024)
    cls = _relay_classes()
    relays = []
    for _ in range(count):
        relay = cls()
        relay.gaps = []
        relay.emptied = []
        relays.append(await relay.start())
    sink = _RingSink()
    server = await asyncio.start_server(sink.handle, "127.0.0.1", 0, backlog=1024)
    samples = {"n": 0, "doubles_max": 0, "doubles_total": 0}
    calls: dict[str, tuple[int, int, float]] = {}  # linkedid -> (relay, clients at send, when)
    sending: asyncio.Task[None] | None = None
    hangups: set[asyncio.Task[None]] = set()

    async def sample() -> None:
        while True:
            await asyncio.sleep(SAMPLE_S)
            doubles = sum(len(r.clients) > 1 for r in relays)
            samples["n"] += 1
            samples["doubles_total"] += doubles
            samples["doubles_max"] = max(samples["doubles_max"], doubles)

    async def hang_up(relay: Any, ring: dict[str, Any]) -> None:
        """The caller gives up after RING_S: the call's end, on the same relay."""
        await asyncio.sleep(RING_S)
        root = {k: ring["data"][k] for k in ("Channel", "Uniqueid", "Linkedid")}
        for event in ({"Event": "HangupRequest", "Cause": "16"}, {"Event": "Hangup"}):
            frame = {**ring, "data": {**root, **event, "Timestamp": f"{time.time():.6f}"}}
            await relay.broadcast(orjson.dumps(frame))

    async def send_calls(rate: float, prefix: str) -> None:
        rng = random.Random(prefix)
        loop = asyncio.get_running_loop()
        start = loop.time()
        index = 0
        while True:
            delay = start + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            which = rng.randrange(count)
            linkedid = f"{prefix}.{index}"
            relay = relays[which]
            calls[linkedid] = (which, len(relay.clients), time.monotonic())
            ring = seed_frame(linkedid, f"{time.time():.6f}")
            await relay.broadcast(orjson.dumps(ring))
            task = asyncio.create_task(hang_up(relay, ring))
            hangups.add(task)
            task.add_done_callback(hangups.discard)
            index += 1

    sampler = asyncio.create_task(sample())
    port = server.sockets[0].getsockname()[1]
    print(
        json.dumps(
            {"ready": True, "urls": [r.url for r in relays], "sink": f"http://127.0.0.1:{port}/"}
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.split()
        if not command or command[0] == "exit":
            break
        if command[0] == "coverage":  # relays with exactly one client, none, several
            print(
                json.dumps(
                    {
                        "one": sum(len(r.clients) == 1 for r in relays),
                        "none": sum(not r.clients for r in relays),
                        "several": sum(len(r.clients) > 1 for r in relays),
                    }
                ),
                flush=True,
            )
        elif command[0] == "gaps":  # unread gaps since the last call of this command
            gaps = [g for r in relays for g in r.gaps]
            for r in relays:
                r.gaps = []
            print(json.dumps({"gaps": gaps}), flush=True)
        elif command[0] == "calls_start":  # calls_start RATE PREFIX
            sending = asyncio.create_task(send_calls(float(command[1]), command[2]))
            print(json.dumps({"sending": True}), flush=True)
        elif command[0] == "calls_stop":
            if sending is not None:
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)
            await asyncio.gather(*hangups, return_exceptions=True)
            read = [k for k, (_, clients, _) in calls.items() if clients]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(not sink.rings[k] for k in read):
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # a second reader's duplicate would arrive meanwhile
            rings = {k: sink.rings[k] for k in calls}

            def leaving(linkedid: str) -> bool:
                """Its relay lost its reader within a second of the send: the old reader
                had stopped reading but was still connected (a move)."""
                which, _, sent = calls[linkedid]
                return any(sent <= t <= sent + 1.0 for t in relays[which].emptied)

            print(
                json.dumps(
                    {
                        "sent": len(calls),
                        "sent_unread": len(calls) - len(read),
                        "rang_once": sum(rings[k] == 1 for k in calls),
                        "rang_more": sum(rings[k] > 1 for k in calls),
                        "read_not_rung": sum(rings[k] == 0 for k in read),
                        "lost_while_leaving": sum(rings[k] == 0 and leaving(k) for k in read),
                        "unread_rung": sum(rings[k] > 0 for k in calls if k not in read),
                        # of the calls that rang, how many ends were published once / never
                        "ended_once": sum(sink.ends[k] == 1 for k in calls if rings[k]),
                        "end_lost": sum(sink.ends[k] == 0 for k in calls if rings[k]),
                        "ended_more": sum(sink.ends[k] > 1 for k in calls),
                    }
                ),
                flush=True,
            )
        elif command[0] == "samples":
            print(json.dumps({**samples, "overlaps": cls.overlaps}), flush=True)
    sampler.cancel()
    server.close()
    for relay in relays:
        await relay.stop()


# orchestration ------------------------------------------------------------------------------------


def _send(relay: subprocess.Popen, line: str, timeout: float = 60) -> dict[str, Any]:
    assert relay.stdin is not None
    relay.stdin.write(line + "\n")
    relay.stdin.flush()
    return read_json_line(relay, timeout)


class _Instance:
    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [PY, "-m", "functions.connector"],
            cwd=ROOT,
            env=bench_env(**env, PORT=str(free_port())),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.cpu_start = 0.0

    def alive(self) -> bool:
        return self.proc.poll() is None


def run_balance(emulator: Any, quick: bool) -> tuple[list[Row], dict[str, Any], list[str]]:
    from google.cloud import firestore

    from functions.core.lease import INSTANCES, LEASES

    count = 25 if quick else 1500
    idle_s = 3.0 if quick else 20.0
    raise_nofile(4 * count + 2048)
    with mock.patch.dict(os.environ, {"FIRESTORE_EMULATOR_HOST": emulator.host}):
        store = firestore.Client(project=PROJECT)

    def loads(instances: list[_Instance]) -> dict[str, int]:
        """Leases held per live instance (by its heartbeat), from Firestore."""
        now = time.time()
        live = {}
        for snap in store.collection(INSTANCES).stream():
            record = snap.to_dict() or {}
            expires = record.get("expiresAt")
            if expires is not None and expires.timestamp() > now and not record.get("ended"):
                live[snap.id] = record
        out: dict[str, int] = {}
        for inst in instances:
            if not inst.alive():
                continue
            mine = [s for s in live if f"-{inst.proc.pid}-" in s]
            total = 0
            for session in mine:
                query = (
                    store.collection(LEASES)
                    .where(filter=firestore.FieldFilter("holder", "==", session))
                    .where(filter=firestore.FieldFilter("released", "==", False))
                )
                total += query.count().get()[0][0].value
            out[inst.name] = total
        return out

    def balanced(instances: list[_Instance], relay: subprocess.Popen) -> tuple[bool, dict]:
        held = loads(instances)
        share = count / len(held) if held else 0
        cover = _send(relay, "coverage")
        ok = (
            len(held) == len(instances)
            and cover["one"] == count
            and sum(held.values()) == count
            and all(abs(n - share) <= TOLERANCE * share for n in held.values())
        )
        return ok, {"loads": held, **cover}

    def wait_balanced(
        instances: list[_Instance], relay: subprocess.Popen, since: float, timeout: float
    ) -> tuple[float | None, dict]:
        deadline = since + timeout
        state: dict = {}
        while time.monotonic() < deadline:
            ok, state = balanced(instances, relay)
            if ok:
                return time.monotonic() - since, state
            time.sleep(0.5)
        return None, state

    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "FIRESTORE_EMULATOR_HOST": emulator.host,
        "LOG_LEVEL": "WARNING",
        **LOCAL_SETTINGS,
        # the smoke run (make test) need not wait out 20 s leases; full runs use the defaults
        **(QUICK_LEASES if quick else {}),
    }
    relay = subprocess.Popen(
        [PY, "-m", "bench.scale_balance", "relay", str(count)],
        cwd=ROOT,
        env=bench_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    # the smoke run's 25 relays would otherwise all have calls in progress all the time
    rate = CALL_RATE / 5 if quick else CALL_RATE
    f: dict[str, Any] = {"relays": count, "idle_window_s": idle_s, "call_rate": rate}
    instances: list[_Instance] = []
    try:
        ready = read_json_line(relay, 180)
        env.update(PBX_RELAYS=",".join(ready["urls"]), CALL_EVENTS_PUSH_URL=ready["sink"])
        started = time.monotonic()
        instances = [_Instance(name, env) for name in ("a", "b", "c")]
        f["start_s"], f["start_state"] = wait_balanced(instances, relay, started, 2 * BALANCE_S)
        _send(relay, "gaps")  # start-up gaps are not moves

        # idle: three instances, each holding its share
        time.sleep(3.0)
        cpu0 = {i.name: cpu_seconds(i.proc.pid) for i in instances}
        time.sleep(idle_s)
        f["idle_cpu_pct"] = {
            i.name: (cpu_seconds(i.proc.pid) - cpu0[i.name]) / idle_s * 100 for i in instances
        }
        f["rss_mib_idle"] = {i.name: rss_mib(i.proc.pid) for i in instances}
        for inst in instances:
            inst.cpu_start = cpu_seconds(inst.proc.pid)
        moves_started = time.monotonic()

        # one killed: its relays wait for its heartbeat to run out, then spread
        victim = instances[1]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        killed = time.monotonic()
        # Calls from just after the kill: its relays have lost their reader by then (the
        # kernel closed its sockets), so a call sent to one counts as sent while unread, not
        # as one a live reader lost; calls already ringing on it when it died are the crash's.
        time.sleep(0.5)
        _send(relay, f"calls_start {f['call_rate']} bal")
        f["reread_s"] = None
        while time.monotonic() < killed + 2 * TAKEOVER_S:
            if _send(relay, "coverage")["one"] == count:
                f["reread_s"] = time.monotonic() - killed
                break
            time.sleep(0.25)
        survivors = [i for i in instances if i is not victim]
        f["rebalanced_after_kill_s"], f["after_kill_state"] = wait_balanced(
            survivors, relay, killed, 2 * TAKEOVER_S + 30
        )
        f["kill_gaps"] = _send(relay, "gaps")["gaps"]

        # a fourth joins: it gets its share by hand-offs
        joiner = _Instance("d", env)
        joined = time.monotonic()
        current = [*survivors, joiner]
        f["join_s"], f["after_join_state"] = wait_balanced(current, relay, joined, 1.5 * JOIN_S)
        time.sleep(5.0)  # settled: nothing else moves
        f["still_balanced"] = balanced(current, relay)[0]
        f["join_gaps"] = _send(relay, "gaps")["gaps"]
        f["calls"] = _send(relay, "calls_stop", 60)
        moves_s = time.monotonic() - moves_started
        f["samples"] = _send(relay, "samples")
        f["busy_cpu_pct"] = {
            i.name: (cpu_seconds(i.proc.pid) - i.cpu_start) / moves_s * 100 for i in survivors
        }
        f["busy_window_s"] = moves_s
        f["rss_mib_end"] = {i.name: rss_mib(i.proc.pid) for i in current}
        instances.append(joiner)
    finally:
        _stop_all(instances, relay)
        store.close()
    return _rows(f), f, _notes(f)


def _rows(f: dict[str, Any]) -> list[Row]:
    count = f["relays"]
    calls = f["calls"]
    samples = f["samples"]
    join_gaps = f["join_gaps"]
    idle = f["idle_cpu_pct"]
    rss = {**f["rss_mib_idle"], **f["rss_mib_end"]}

    def loads(state: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(state.get("loads", {}).items()))

    def within(value: float | None, limit: float) -> bool:
        return value is not None and value <= limit

    rows = [
        Row(
            f"3 instances, {count:,} relays: balanced within 10%",
            f["start_s"],
            "s",
            f"<= {BALANCE_S:.0f}",
            within(f["start_s"], BALANCE_S),
            note=f"loads {loads(f['start_state'])}",
        ),
        Row(
            "one killed: every relay read again",
            f["reread_s"],
            "s",
            f"<= {TAKEOVER_S:.0f}",
            within(f["reread_s"], TAKEOVER_S),
            note=f"unread gaps max {max(f['kill_gaps'], default=0):.1f} s",
        ),
        Row(
            "one killed: rebalanced (2 instances)",
            f["rebalanced_after_kill_s"],
            "s after the kill",
            "balanced",
            f["rebalanced_after_kill_s"] is not None,
            note=f"loads {loads(f['after_kill_state'])}",
        ),
        Row(
            "a fourth joins: rebalanced",
            f["join_s"],
            "s",
            f"<= {JOIN_S:.0f}",
            within(f["join_s"], JOIN_S) and bool(f["still_balanced"]),
            note=f"loads {loads(f['after_join_state'])}; {len(join_gaps)} relays moved",
        ),
        Row(
            "moved relay unread (release → new reader), max",
            max(join_gaps) * 1000 if join_gaps else None,
            "ms",
            note=(
                f"p50 {(percentile(join_gaps, 50) or 0) * 1000:.0f} ms, "
                f"p99 {(percentile(join_gaps, 99) or 0) * 1000:.0f} ms"
            ),
        ),
        Row(
            f"double readers, max per sample ({samples['n']} samples every {SAMPLE_S} s)",
            samples["doubles_max"],
            "relays",
            "= 0",
            samples["doubles_max"] == 0 and samples["overlaps"] == 0,
            note=f"a client connecting while another was connected: {samples['overlaps']}",
        ),
        Row(
            f"calls during the kill and the join ({f['call_rate']:.0f}/s): rang more than once",
            calls["rang_more"],
            "calls",
            "= 0",
            calls["rang_more"] == 0,
            note=f"{calls['sent']} sent",
        ),
        Row(
            "calls sent to a relay with a reader: rang exactly once",
            calls["sent"] - calls["sent_unread"] - calls["read_not_rung"],
            "calls",
            f"= {calls['sent'] - calls['sent_unread']}",
            calls["read_not_rung"] == 0,
            note=(
                f"{calls['sent_unread']} sent while the relay had no reader (the killed "
                f"instance's, before the takeover) did not ring"
                + (f", {calls['unread_rung']} of them did" if calls["unread_rung"] else "")
                + (
                    f"; of those lost, {calls['lost_while_leaving']} were sent as their "
                    "relay's reader was leaving (a move)"
                    if calls["read_not_rung"]
                    else ""
                )
            ),
        ),
    ]
    rows.append(
        Row(
            f"calls that rang: end published exactly once (caller hangs up after {RING_S:.0f} s)",
            calls["ended_once"],
            "calls",
            f"= {calls['rang_once']}",
            calls["ended_once"] == calls["rang_once"] and calls["ended_more"] == 0,
            note=(
                f"{calls['end_lost']} ends not published (their relay moved while they rang: "
                f"the new reader never saw them start), {calls['ended_more']} published twice"
            ),
        )
    )
    for name in sorted(idle):
        rows.append(
            Row(
                f"instance {name}: idle CPU ({f['idle_window_s']:.0f} s, ~{count // 3} relays)",
                idle[name],
                "% of a core",
                "<= 5",
                at_most(idle[name], 5.0),
            )
        )
    for name, pct in sorted(f["busy_cpu_pct"].items()):
        rows.append(
            Row(
                f"instance {name}: CPU through the kill and the join",
                pct,
                "% of a core",
                note=f"over {f['busy_window_s']:.0f} s, takeovers and hand-offs included",
            )
        )
    for name, mib in sorted(rss.items()):
        rows.append(Row(f"instance {name}: RSS", mib, "MiB", "<= 250", at_most(mib, 250.0)))
    return rows


def _notes(f: dict[str, Any]) -> list[str]:
    rss = [v for v in {**f["rss_mib_idle"], **f["rss_mib_end"]}.values() if v]
    return [
        f"Balancing: {f['relays']:,} relays, default lease timing (20 s, renew 5 s, skew 5 s); "
        f"RSS per instance {min(rss):.0f}-{max(rss):.0f} MiB (3 and 4 instances) — sizing in "
        "docs/leases.md.",
    ]


def _stop_all(instances: list[_Instance], relay: subprocess.Popen) -> None:
    for inst in instances:
        stop_process(inst.proc)
    if relay.poll() is None and relay.stdin:
        relay.stdin.write("exit\n")
        relay.stdin.flush()
    stop_process(relay, timeout=30)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "relay":
        asyncio.run(_relay_main(int(sys.argv[2])))
    else:
        raise SystemExit("usage: python -m bench.scale_balance relay COUNT")


if __name__ == "__main__":
    main()
