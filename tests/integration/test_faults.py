"""Fault injection through the real parts, each asserting what the phones receive."""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
import pytest

from functions.connector.adapters import relay_client
from functions.connector.adapters.relay_status import RELAY_STATUS, status_doc_id
from tests.corpus import load_events, namespaced
from tests.integration.scenario import device, user, write
from tests.integration.test_incoming_call_e2e import runtime_for, settle, wait_pushes
from tests.support import eventually

QUEUE_CALL = "cacofonisk__queue__queue_simple"  # +31150010004, answered at frame 47


def queue_call(prefix: str) -> list[dict[str, str]]:
    """The capture with ids of its own, so no two tests share a call (the notifier outlives a
    test, and a late event of one must not touch another's documents)."""
    return [namespaced(event, prefix) for event in load_events(QUEUE_CALL)]


def owner_of_queue_number(db, relay_port: int) -> None:
    write(
        db,
        {
            "users": {"nl": user(relay_port)},
            "my_extensions": {
                "e-nl": {"userId": "nl", "extension": "201", "accountCode": "+31150010004"}
            },
            "fcm_tokens": {"nl_a_Android": device("nl", "tok-nl")},
        },
    )


async def test_relay_restart_mid_call_still_cancels_the_ring(connector, relay, db, fcm, notifier):
    owner_of_queue_number(db, relay.port)
    await relay.wait_for_clients(1, timeout=15)
    events = queue_call("restart-")
    await relay.replay(events[:20], server_name="voipgrid")  # rung, not yet answered
    [ring] = await wait_pushes(fcm, 1)
    assert ring["data"]["type"] == "incoming_call"

    await relay.drop_clients()  # the relay restarts: every client connection is cut
    runtime = runtime_for(connector, relay)
    await asyncio.to_thread(eventually, lambda: runtime.client.status.connects == 2, 15)
    await relay.wait_for_clients(1, timeout=15)  # back, with its call state
    await relay.replay(events[20:], server_name="voipgrid")
    messages = await wait_pushes(fcm, 2)
    assert [m["data"]["type"] for m in messages] == ["incoming_call", "incoming_call_cancelled"]
    assert messages[1]["data"]["action"] == "answered_elsewhere"


async def test_garbage_between_real_events_changes_nothing(connector, relay, db, fcm, notifier):
    owner_of_queue_number(db, relay.port)
    await relay.wait_for_clients(1, timeout=15)
    garbage = [b"\xff\xfe", b"{", b"[]", b'{"type":3,"data":7}', b"null", "헬로".encode("cp949")]
    for index, event in enumerate(queue_call("garbage-")):
        await relay.broadcast(garbage[index % len(garbage)])
        await relay.broadcast(
            orjson.dumps({"type": 3, "server_id": 1, "server_name": "v", "data": event})
        )
    messages = await wait_pushes(fcm, 2)
    assert [m["data"]["type"] for m in messages] == ["incoming_call", "incoming_call_cancelled"]
    await settle(notifier, messages[0]["data"]["linkedid"], kind="ended")
    assert len(fcm.sent_messages()) == 2
    stats = runtime_for(connector, relay).ingest.stats
    assert sum(stats.bad_frames.values()) == len(load_events(QUEUE_CALL))
    assert runtime_for(connector, relay).client.status.connects == 1


async def test_relay_status_is_written_for_admins(connector, relay, db):
    db.collection("users").document("a").set(
        {"websocketServerUrl": "127.0.0.1", "websocketServerPort": relay.port}
    )
    await relay.wait_for_clients(1, timeout=15)
    await relay.broadcast(b"garbage")
    ref = db.collection(RELAY_STATUS).document(status_doc_id(f"127.0.0.1:{relay.port}"))
    doc = await asyncio.to_thread(
        eventually, lambda: (ref.get().to_dict() or {}).get("connected") and ref.get().to_dict(), 10
    )
    assert doc["relay"] == relay.url and doc["state"] == "connected"
    assert doc["instance"] == connector.instance

    await relay.stop()  # the relay goes away: the status says so within seconds
    doc = await asyncio.to_thread(
        eventually,
        lambda: (ref.get().to_dict() or {}).get("connected") is False and ref.get().to_dict(),
        10,
    )
    assert doc["state"] in {"backoff", "connecting"} and doc["lastError"]


async def test_relay_status_counters_follow_frames_and_an_idle_relay_is_left_alone(
    connector, relay, db, monkeypatch
):
    from functions.connector import app

    monkeypatch.setattr(app, "STATUS_CHECK_EVERY", 0.2)
    monkeypatch.setattr(app, "STATUS_REFRESH_EVERY", 0.5)
    db.collection("users").document("a").set(
        {"websocketServerUrl": "127.0.0.1", "websocketServerPort": relay.port}
    )
    await relay.wait_for_clients(1, timeout=15)
    ref = db.collection(RELAY_STATUS).document(status_doc_id(f"127.0.0.1:{relay.port}"))
    for _ in range(3):
        await relay.broadcast(b"garbage")

    def counted() -> dict | None:
        doc = ref.get().to_dict() or {}
        return doc if doc.get("counters", {}).get("frames") == 3 else None

    doc = await asyncio.to_thread(eventually, counted, 15)
    assert doc["counters"]["badFrames"] == {"invalid_json": 3}
    # nothing changes now: several checks and refresh periods pass without a rewrite
    await asyncio.sleep(2.0)
    assert ref.get().to_dict()["updatedAt"] == doc["updatedAt"]


class Blackhole:
    """A TCP proxy to the relay that can go silent without closing: a dead link (NAT timeout,
    crashed host) that only keepalive pings reveal."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.silent = False
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src, dst) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    while self.silent:  # swallow nothing, deliver nothing: just hang
                        await asyncio.sleep(0.05)
                    dst.write(data)
                    await dst.drain()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_dead_link_is_noticed_by_keepalive_and_reconnected(connector, relay, db, monkeypatch):
    # Scaled down from the production 10 s + 10 s so the test takes a second.
    monkeypatch.setattr(relay_client, "PING_INTERVAL", 0.2)
    monkeypatch.setattr(relay_client, "PING_TIMEOUT", 0.3)
    monkeypatch.setattr(relay_client, "CLOSE_TIMEOUT", 0.3)
    proxy = Blackhole(relay.port)
    port = await proxy.start()
    try:
        db.collection("users").document("a").set(
            {"websocketServerUrl": "127.0.0.1", "websocketServerPort": port}
        )
        runtime = await asyncio.to_thread(
            eventually, lambda: connector.relays.get(f"127.0.0.1:{port}"), 10
        )
        await asyncio.to_thread(eventually, lambda: runtime.client.status.state == "connected", 10)
        proxy.silent = True
        went_silent = time.monotonic()
        await asyncio.to_thread(
            eventually, lambda: runtime.client.status.state != "connected", 5, 0.01
        )
        noticed = time.monotonic() - went_silent
        assert noticed <= 1.5  # ping interval + ping timeout + close timeout, plus scheduling
        proxy.silent = False
        await asyncio.to_thread(eventually, lambda: runtime.client.status.connects >= 2, 10)
    finally:
        await proxy.stop()


@pytest.mark.parametrize("code", ["QUOTA_EXCEEDED", "SENDER_ID_MISMATCH", "THIRD_PARTY_AUTH_ERROR"])
def test_configuration_errors_are_reported_not_retried(db, notifier, fcm, code):
    from devtools.fake_fcm import Fault
    from tests.integration.scenario import company
    from tests.integration.test_lifecycle_notifier import deliver, ringing

    write(db, company(7001, 1))
    status = {"QUOTA_EXCEEDED": 429, "SENDER_ID_MISMATCH": 403, "THIRD_PARTY_AUTH_ERROR": 401}
    # Scripted three times: a client that retried any of these would show it below.
    fcm.script("tok-lee", [Fault(status=status[code], error_code=code)] * 3)
    line = deliver(notifier, ringing(f"config.{code}"))
    assert line["results"] == {"incoming_sent": 2, "incoming_rejected": 1}
    assert line["attempts"] == 1 and line["pruned"] == 0
    answers = [r["status"] for r in fcm.requests() if r["target"] == "tok-lee"]
    # THIRD_PARTY_AUTH_ERROR is a 401 about the project's APNs credentials: no token refresh.
    assert answers == [status[code]]
    assert db.collection("fcm_tokens").document("lee_a_Android").get().exists
    assert any(code in entry and "push not delivered" in entry for entry in notifier.log_lines())
