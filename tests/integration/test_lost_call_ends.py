"""Issue 13 end to end: a call never rings forever. Real parts: the amiws-like relay (sending what
amiws sends: login replies, responses to other clients, cut frames), the connector, the Pub/Sub
emulator pushing to the notifier under functions-framework, the Firestore emulator, the FCM
endpoint. Each test measures the time from the gap to the cancel and prints it (docs/
reliability.md quotes them)."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from devtools.demo_data import seed_frame
from devtools.demo_relay import DemoRelay
from functions.connector.adapters.event_publishers import PubSubPublisher
from functions.connector.app import Connector
from functions.core.call_tracker import GAP_GRACE_SECONDS, RING_GRACE_SECONDS
from functions.settings import load_settings
from tests.integration.conftest import PROJECT
from tests.integration.scenario import EXPECTED_TOKENS, company, write
from tests.integration.test_connector_ha import LEASES, ConnectorProcess
from tests.support import LOOPBACK_RELAYS, USER_DOCUMENTS, eventually


@pytest.fixture
async def make_connector(db, notifier, call_events) -> AsyncIterator[Callable]:
    """Connectors with chosen settings, publishing through the Pub/Sub emulator."""
    running: list[tuple[asyncio.Event, asyncio.Task]] = []

    async def make(**env: str) -> Connector:
        settings = load_settings(
            {
                "GOOGLE_CLOUD_PROJECT": PROJECT,
                "CALL_EVENTS_TOPIC": call_events,
                "PORT": "0",
                "HEALTH_HOST": "127.0.0.1",
                **LOOPBACK_RELAYS,
                **USER_DOCUMENTS,
                **env,
            }
        )
        conn = Connector(settings, PubSubPublisher(settings.topic_path), db)
        stop = asyncio.Event()
        running.append((stop, asyncio.create_task(conn.run(stop))))
        return conn

    yield make
    for stop, task in running:
        stop.set()
        await asyncio.wait_for(task, 15)


def frame(linkedid: str, **data: str) -> bytes:
    raw = seed_frame(linkedid, f"{time.time():.6f}")
    raw["data"] |= data
    return orjson.dumps(raw)


async def rung(relay: DemoRelay, fcm, linkedid: str, **data: str) -> list[dict]:
    """Ring a call and wait until its three phones got the incoming push."""
    await relay.broadcast(frame(linkedid, **data))
    await asyncio.to_thread(
        eventually, lambda: len(pushes(fcm, linkedid, "incoming_call")) == 3, 20
    )
    return pushes(fcm, linkedid, "incoming_call")


def pushes(fcm, linkedid: str, kind: str) -> list[dict]:
    def of_call(m: dict) -> bool:
        data = m.get("data", {})
        return data.get("linkedid", data.get("missed_linkedid")) == linkedid

    return [m for m in fcm.sent_messages() if of_call(m) and m["data"]["type"] == kind]


async def cancelled(fcm, linkedid: str, timeout: float) -> tuple[list[dict], float]:
    started = time.monotonic()
    await asyncio.to_thread(
        eventually, lambda: len(pushes(fcm, linkedid, "incoming_call_cancelled")) >= 3, timeout
    )
    return pushes(fcm, linkedid, "incoming_call_cancelled"), time.monotonic() - started


def history(db, linkedid: str) -> list[dict]:
    return [
        s.to_dict()
        for s in db.collection("call_history")
        .where(filter=FieldFilter("linkedid", "==", linkedid))
        .stream()
    ]


async def setup(relay: DemoRelay, db, make, **env: str) -> Connector:
    write(db, company(relay.port, 1))
    conn = await make(**env)
    await relay.wait_for_clients(1, timeout=15)
    return conn


async def test_a_call_whose_hangup_never_comes_is_cancelled_after_the_ring_window(
    relay, db, fcm, make_connector
):
    window = 2
    await setup(relay, db, make_connector, RING_WINDOW_SECONDS=str(window))
    incoming = await rung(relay, fcm, "lost.1")
    rang_at = time.monotonic()
    cancels, _ = await cancelled(fcm, "lost.1", window + RING_GRACE_SECONDS + 10)
    after = time.monotonic() - rang_at
    print(f"ring timeout: cancel {after:.1f} s after the ring (window {window} s)")
    assert window + RING_GRACE_SECONDS - 0.5 <= after <= window + 10 + 2
    assert sorted(m["token"] for m in cancels) == sorted(m["token"] for m in incoming)
    assert {m["data"]["action"] for m in cancels} == {"ring_timeout"}
    # the phones rang out the whole window: a missed-call notice follows (docs/lifecycle.md)
    await asyncio.to_thread(eventually, lambda: len(pushes(fcm, "lost.1", "missed_call")) == 3, 10)
    docs = await asyncio.to_thread(
        eventually, lambda: [d for d in history(db, "lost.1") if d.get("endedAt")] or None, 10
    )
    assert {(d["outcome"], d["endReason"], d["cancelledBy"]) for d in docs} == {
        ("unknown", "ring_timeout", "ring_timeout")
    }


async def test_a_relay_restart_mid_call_ends_the_call_after_a_short_grace(
    relay, db, fcm, make_connector
):
    conn = await setup(relay, db, make_connector)  # ring window 60 s: the gap ends it first
    await rung(relay, fcm, "restart.1")
    port = relay.port
    await relay.stop()
    await relay.drop_clients()
    restarted = time.monotonic()
    again = await DemoRelay(port=port).start()
    try:
        await again.wait_for_clients(1, timeout=15)
        cancels, _ = await cancelled(fcm, "restart.1", GAP_GRACE_SECONDS + 15)
        worst = time.monotonic() - restarted
        print(f"relay restart: cancel {worst:.1f} s after the restart")
        assert {m["data"]["action"] for m in cancels} == {"call_lost"}
        assert worst <= GAP_GRACE_SECONDS + 10  # reconnect backoff + grace + sweep + pipeline
        assert pushes(fcm, "restart.1", "missed_call") == []  # it may have been answered
        report = conn.relay_report(conn.relays[f"127.0.0.1:{port}"])
        assert report["gaps"] >= 1 and report["connects"] >= 2
    finally:
        await again.stop()


async def test_a_pbx_relogin_ends_calls_that_rang_during_the_gap(relay, db, fcm, make_connector):
    conn = await setup(relay, db, make_connector)
    await rung(relay, fcm, "relogin.1")
    await relay.login_reply(accepted=False)  # amiws: the PBX refuses the login, every second
    await relay.login_reply(accepted=False)
    gap = time.monotonic()
    cancels, _ = await cancelled(fcm, "relogin.1", GAP_GRACE_SECONDS + 10)
    print(f"PBX link loss: cancel {time.monotonic() - gap:.1f} s after amiws's first refusal")
    assert {m["data"]["action"] for m in cancels} == {"call_lost"}
    report = conn.relay_report(conn.relays[f"127.0.0.1:{relay.port}"])
    assert report["pbx_link"] == "auth_failed"
    # the link back: a call rung after it is followed normally
    await relay.login_reply(accepted=True)
    await rung(relay, fcm, "relogin.2")
    await relay.broadcast(
        orjson.dumps(
            {
                "type": 3,
                "server_id": 1,
                "data": {"Event": "Hangup", "Uniqueid": "relogin.2", "Linkedid": "relogin.2"},
            }
        )
    )
    cancels, _ = await cancelled(fcm, "relogin.2", 10)
    assert {m["data"]["action"] for m in cancels} == {"no_answer"}  # as the PBX said


async def test_pbx_link_is_unchanged_by_responses_to_other_clients(relay, db, make_connector):
    conn = await setup(relay, db, make_connector)
    await relay.login_reply(accepted=True)
    runtime = conn.relays[f"127.0.0.1:{relay.port}"]
    await asyncio.to_thread(eventually, lambda: runtime.ingest.stats.pbx_link == "up", 5)
    since = runtime.ingest.stats.pbx_link_since
    for data in (
        {"Response": "Success", "ActionID": "1", "Ping": "Pong", "Timestamp": "1.0"},
        {"Response": "Success", "ActionID": "2", "Message": "Originate successfully queued"},
        {"Response": "Error", "ActionID": "3", "Message": "Authentication failed"},
    ):
        await relay.foreign_response(data)
    await relay.broadcast(frame("marker.1", Context="from-internal"))  # after them, in order
    await asyncio.to_thread(eventually, lambda: runtime.ingest.stats.frames >= 5, 5)
    report = conn.relay_report(runtime)
    assert (report["pbx_link"], report["pbx_link_since"]) == ("up", since)


async def test_truncated_frames_and_control_characters_over_the_relay(
    relay, db, fcm, notifier, make_connector
):
    conn = await setup(relay, db, make_connector)
    cut = orjson.loads(frame("cut.1", CallerIDName="홍길동"))["data"]
    await relay.cut_frame(cut)
    incoming = await rung(relay, fcm, "ctl.1", CallerIDName="Hong\u000bGil\u202edong\x85")
    assert {m["notification"]["body"] for m in incoming} == {"Hong Gil dong"}
    assert {m["data"]["caller_name"] for m in incoming} == {"Hong Gil dong"}
    assert pushes(fcm, "cut.1", "incoming_call") == []
    runtime = conn.relays[f"127.0.0.1:{relay.port}"]
    assert dict(runtime.ingest.stats.bad_frames) == {"truncated": 1}
    docs = await asyncio.to_thread(eventually, lambda: history(db, "ctl.1") or None, 10)
    assert all("\x0b" not in str(d) and "\u202e" not in str(d) for d in docs)
    bad = [line for line in notifier.log_lines() if '"reason":"truncated"' in line]
    assert bad == []  # the connector logs it, not the notifier


async def test_an_ami_1_3_call_is_ended_by_its_hangup(relay, db, fcm, make_connector):
    await setup(relay, db, make_connector)
    raw = orjson.loads(frame("1400000000.5"))
    del raw["data"]["Linkedid"]
    await relay.broadcast(orjson.dumps(raw))
    await asyncio.to_thread(
        eventually, lambda: len(pushes(fcm, "1400000000.5", "incoming_call")) == 3, 20
    )
    hangup = {"Event": "Hangup", "Uniqueid": "1400000000.5", "Cause": "16"}
    await relay.broadcast(orjson.dumps({"type": 3, "server_id": 1, "data": hangup}))
    cancels, waited = await cancelled(fcm, "1400000000.5", 10)
    assert waited < 5 and {m["data"]["action"] for m in cancels} != {"ring_timeout"}


async def test_a_backlogged_ring_rings_nobody_and_a_skewed_pbx_clock_still_rings(
    relay, db, fcm, make_connector
):
    conn = await setup(relay, db, make_connector)
    now = time.time()
    # frames stamped by a PBX in step with us, then a ring stamped 10 minutes before them
    for n in range(3):
        await relay.broadcast(frame(f"internal.{n}", Context="from-internal"))
        await asyncio.sleep(1.05)  # one clock sample a second
    stale = seed_frame("backlog.1", f"{now - 600:.6f}")
    await relay.broadcast(orjson.dumps(stale))
    await rung(relay, fcm, "fresh.1")  # delivered after it: proof the stale one was handled
    assert pushes(fcm, "backlog.1", "incoming_call") == []
    assert conn.relay_report(conn.relays[f"127.0.0.1:{relay.port}"])["stale_rings"] == 1

    skewed = await DemoRelay().start()  # a PBX five hours behind, consistently
    try:
        write(db, company(skewed.port, 1))
        await skewed.wait_for_clients(1, timeout=15)
        behind = orjson.loads(frame("skew.1"))
        behind["data"]["Timestamp"] = f"{time.time() - 5 * 3600:.6f}"
        await skewed.broadcast(orjson.dumps(behind))
        await asyncio.to_thread(
            eventually, lambda: len(pushes(fcm, "skew.1", "incoming_call")) == 3, 20
        )
    finally:
        await skewed.stop()


async def test_a_holder_killed_mid_call_has_the_call_ended_by_the_taker(
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
        await asyncio.to_thread(eventually, lambda: a.holds() or b.holds(), 20)
        await rung(relay, fcm, "kill.1")
        holder, taker = (a, b) if a.holds() else (b, a)
        holder.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        cancels, _ = await cancelled(fcm, "kill.1", 3 + GAP_GRACE_SECONDS + 15)
        worst = time.monotonic() - killed
        print(f"holder killed: cancel {worst:.1f} s after the kill")
        assert sorted(m["token"] for m in cancels) == sorted(EXPECTED_TOKENS)
        assert {m["data"]["action"] for m in cancels} == {"call_lost"}
        assert worst <= 3 + 1 + GAP_GRACE_SECONDS + 5  # lease bound + reconnect + grace
        log = (tmp_path / f"{'a' if taker is a else 'b'}.log").read_text()
        assert '"calls carried over"' in log
    finally:
        a.stop()
        b.stop()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


async def test_the_health_server_binds_the_address_its_setting_names(make_connector, db):
    local = await make_connector(HEALTH_HOST="127.0.0.1")
    every = await make_connector(HEALTH_HOST="0.0.0.0")
    await asyncio.to_thread(eventually, lambda: local.health_port and every.health_port, 10)
    # 127.0.0.2 is loopback too: it reaches a socket bound to every interface, not one bound
    # to 127.0.0.1 only
    assert _accepts("127.0.0.1", local.health_port)
    assert not _accepts("127.0.0.2", local.health_port)
    assert _accepts("127.0.0.2", every.health_port)


def test_a_new_reader_learns_only_the_calls_that_may_still_ring(db):
    from dataclasses import replace

    from functions.connector.adapters.rung_calls import rung_calls
    from functions.core.call_event import CallEvent, Kind
    from functions.core.ledger import DeviceRef
    from functions.notifier.adapters.ledger_store import LedgerStore

    ledger, now = LedgerStore(db), time.time()
    base = CallEvent(Kind.RINGING, "127.0.0.1:7999", 1, "x", "010", "", "070", "P/x", now, now)
    device = [DeviceRef("tok-1", "u_1_Android", "u")]
    fresh, old = replace(base, linkedid="fresh.1"), replace(base, linkedid="old.1")
    old = replace(old, detected_at=now - 600, occurred_at=now - 600)
    over = replace(base, linkedid="over.1")
    other_relay = replace(base, linkedid="other.1", relay="127.0.0.1:7998")
    for event in (fresh, old, over, other_relay):
        ledger.claim_ring(event, device, now)
        ledger.finish_ring(event, device, [], now)
    ledger.close_call(replace(over, kind=Kind.ENDED, outcome="no_answer"), "no_answer", now)
    found = rung_calls(db, "127.0.0.1:7999", now, 60 + RING_GRACE_SECONDS)
    assert [e.linkedid for e in found] == ["fresh.1"]
    # the ringing event as the notifier saw it (times kept to the microsecond of ISO 8601)
    assert replace(found[0], occurred_at=now, detected_at=now) == fresh
    assert abs(found[0].detected_at - now) < 1e-5
