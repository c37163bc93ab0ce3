"""Relay frame -> connector -> (Eventarc-shaped CloudEvent) -> notifier -> FCM, all real parts:
the Firestore emulator, a WebSocket relay, functions-framework over HTTP, firebase-admin sending
to a local FCM HTTP v1 endpoint."""

from __future__ import annotations

import asyncio
import copy
import json

import orjson

from devtools.demo_data import seed_frame
from devtools.demo_relay import DemoRelay
from tests.integration.scenario import EXPECTED_TOKENS, company, write
from tests.support import eventually

SEED_LINKEDID = "1762257300.677"


async def wait_pushes(fcm, count: int, timeout: float = 15.0) -> list[dict]:
    return await asyncio.to_thread(fcm.wait_for, count, timeout)


async def settle(notifier, linkedid: str, kind: str = "ringing", timeout: float = 15.0) -> dict:
    """The notifier's one summary log line for the event: proof it finished handling it."""

    suffix = f'/{linkedid}/{kind}"'  # the end of the event_id: exact, not a substring match

    def find() -> dict | None:
        for line in notifier.log_lines():
            if '"call event handled"' in line and suffix in line:
                return json.loads(line)
        return None

    return await asyncio.to_thread(eventually, find, timeout)


def runtime_for(connector, relay: DemoRelay):
    return connector.relays[f"127.0.0.1:{relay.port}"]


async def ready(relay: DemoRelay, db, other_port: int = 1) -> None:
    write(db, company(relay.port, other_port))
    await relay.wait_for_clients(1, timeout=15)


async def test_seed_frame_rings_each_eligible_device_exactly_once(
    connector, relay, db, fcm, notifier
):
    await ready(relay, db)
    await relay.broadcast(orjson.dumps(seed_frame(SEED_LINKEDID, "1762257300.238151")))

    pushes = await wait_pushes(fcm, 3)
    summary = await settle(notifier, SEED_LINKEDID)
    assert sorted(m["token"] for m in fcm.sent_messages()) == sorted(EXPECTED_TOKENS)
    assert summary["results"] == {"incoming_sent": 3} and summary["recipients"] == 2
    assert summary["skipped"] == {
        "suspended": 1,
        "push_disabled": 1,
        # choi (server 2 behind this relay); han names another relay, so the notifier, which
        # knows this relay's users from relay_access, never reads han's documents at all
        "other_pbx": 1,
        "dcmiws_enabled": 1,
        "web_dummy_token": 1,
        "device_not_approved": 1,
    }
    assert "01026132471" not in json.dumps(summary)  # numbers are masked in logs

    kim = next(m for m in pushes if m["token"] == "tok-kim-android")
    assert kim["notification"] == {"title": "수신전화", "body": "김철수"}
    assert kim["data"] == {
        "type": "incoming_call",
        "caller_number": "01026132471",
        "caller_name": "김철수",
        "receiver_number": "07045144801",
        "linkedid": SEED_LINKEDID,
        "channel": "PJSIP/DKCT-000001b1",
        "call_type": "external",
        "timestamp": "2025-11-04T11:55:00.238151Z",
        "user_id": "kim",
        "my_extension": "1010",
        "my_company_name": "데모상사",
        "my_external_cid_name": "대표번호",
        "my_external_cid_number": "070-4514-4801",
        "is_call_forward_enabled": "true",
        "call_forward_destination": "010-9876-5432",
    }
    android = kim["android"]
    assert android["priority"] == "high"
    assert android["notification"]["channel_id"] == "incoming_call_channel"
    assert android["notification"]["tag"] == android["collapse_key"]
    assert 55 <= float(android["ttl"].rstrip("s")) <= 60
    apns = kim["apns"]
    assert apns["headers"]["apns-priority"] == "10"
    assert apns["headers"]["apns-collapse-id"] == android["collapse_key"]
    assert apns["payload"]["aps"]["sound"] == "default"
    lee = next(m for m in pushes if m["token"] == "tok-lee")
    assert lee["data"]["user_id"] == "lee" and lee["data"]["is_call_forward_enabled"] == "false"

    history = {s.id: s.to_dict() for s in db.collection("call_history").stream()}
    assert set(history) == {SEED_LINKEDID, f"{SEED_LINKEDID}_lee"}
    own = history[SEED_LINKEDID]
    assert own["userId"] == "kim" and own["status"] == "missed" and own["cancelled"] is False
    assert own["callType"] == "incoming" and own["callSubType"] == "external"
    assert own["linkedid"] == SEED_LINKEDID and own["receiverNumber"] == "07045144801"
    assert history[f"{SEED_LINKEDID}_lee"]["userId"] == "lee"

    # The same frame again (a relay replay) is one call: nothing more is sent.
    await relay.broadcast(orjson.dumps(seed_frame(SEED_LINKEDID, "1762257300.238151")))
    second = seed_frame("1762257999.1", "1762257999.0")
    await relay.broadcast(orjson.dumps(second))
    await wait_pushes(fcm, 6)
    await settle(notifier, "1762257999.1")
    linkedids = [m["data"]["linkedid"] for m in fcm.sent_messages()]
    assert linkedids.count(SEED_LINKEDID) == 3 and linkedids.count("1762257999.1") == 3


async def test_seed_short_wscat_frame_without_ids_still_rings(connector, relay, db, fcm, notifier):
    await ready(relay, db)
    frame = {
        "type": 3,
        "server_id": 1,
        "server_name": "dcrm.makecall.io",
        "ssl": False,
        "data": {
            "Event": "Newchannel",
            "Context": "trk-11-in",
            "CallerIDNum": "01026132471",
            "CallerIDName": "김철수",
            "Exten": "07045144801",
            "ChannelStateDesc": "Ring",
        },
    }
    await relay.broadcast(json.dumps(frame, ensure_ascii=False).encode())
    pushes = await wait_pushes(fcm, 3)
    linkedids = {m["data"]["linkedid"] for m in pushes}
    assert len(linkedids) == 1 and linkedids.pop().startswith("frame-")


async def test_frames_that_must_not_ring_send_nothing(connector, relay, db, fcm, notifier):
    await ready(relay, db)
    base = seed_frame("1762257400.10", "1762257400.0")
    not_ringing = []
    for change in (
        {"type": 1},  # the seed's three examples
        {"data": {"Event": "Hangup"}},
        {"data": {"Context": "from-internal"}},
        {"data": {"Exten": "s", "ChannelStateDesc": "Down", "Uniqueid": "1762257400.11"}},
        {"data": {"Channel": "Local/1010@from-queue-00000001;1"}},
        {"data": {"Uniqueid": "1762257400.12"}},  # a leg of an existing call, not its root
        {"data": {"Exten": None}},
    ):
        frame = copy.deepcopy(base)
        frame.update({k: v for k, v in change.items() if k != "data"})
        frame["data"].update(change.get("data", {}))
        not_ringing.append(frame)
    for frame in not_ringing:
        await relay.broadcast(orjson.dumps(frame))
    sentinel = "1762257400.99"
    await relay.broadcast(orjson.dumps(seed_frame(sentinel, "1762257400.5")))
    await wait_pushes(fcm, 3)
    await settle(notifier, sentinel)
    assert {m["data"]["linkedid"] for m in fcm.sent_messages()} == {sentinel}
    stats = runtime_for(connector, relay).ingest.stats
    assert stats.events == 1


async def test_bad_frames_are_counted_and_the_connection_carries_on(
    connector, relay, db, fcm, notifier
):
    await ready(relay, db)
    cp949 = orjson.dumps(seed_frame("1762257500.1", "1762257500.0")).replace(
        "김철수".encode(), "김철수".encode("cp949")
    )
    for raw in (
        b"\x00\xff garbage",
        b"[1,2]",
        b'{"type":3,"data":null}',
        b'{"type":3,"data":{"Event":"Newchannel","Context":"trk-1","Exten":',
        b'{"type":3,"data":{"X":"' + b"a" * 300_000 + b'"}}',
        cp949,
    ):
        await relay.broadcast(raw)
    pushes = await wait_pushes(fcm, 3)
    assert {m["notification"]["body"] for m in pushes} == {"김철수"}
    runtime = runtime_for(connector, relay)
    assert runtime.ingest.stats.bad_frames == {
        "invalid_json": 1,
        "truncated": 1,  # the frame that stops after `"Exten":`
        "not_an_object": 1,
        "bad_data_field": 1,
        "oversize": 1,
    }
    assert runtime.client.status.connects == 1 and runtime.client.status.state == "connected"
    status, body = connector.health_report()
    # han's relay (127.0.0.1:1) is down: reported, and the service stays healthy.
    assert status == 200 and (body["relays_total"], body["relays_connected"]) == (2, 1)
    ours = next(r for r in body["relays"] if r["relay"] == relay.url)
    assert ours["bad_frames"]["oversize"] == 1 and ours["state"] == "connected"


async def test_relays_follow_users_documents_without_restart(connector, relay, db):
    second = await DemoRelay().start()
    try:
        db.collection("users").document("a").set(
            {"websocketServerUrl": "127.0.0.1", "websocketServerPort": relay.port}
        )
        await relay.wait_for_clients(1, timeout=15)
        db.collection("users").document("b").set(
            {"serverAddress": "127.0.0.1", "serverPort": second.port}
        )
        await second.wait_for_clients(1, timeout=15)
        assert len(connector.relays) == 2
        db.collection("users").document("b").delete()
        await asyncio.to_thread(eventually, lambda: not second.clients, 15)
        assert list(connector.relays) == [f"127.0.0.1:{relay.port}"]
    finally:
        await second.stop()


async def test_real_queue_capture_rings_then_cancels_with_the_answer(
    connector, relay, db, fcm, notifier
):
    """cacofonisk's queue_simple: a trunk call to +31150010004 is answered by queue member
    150010002. The owner's phone rings, then gets a cancel; history says who answered."""
    from tests.corpus import load_events
    from tests.integration.scenario import device, user

    write(
        db,
        {
            "users": {"nl": user(relay.port)},
            "my_extensions": {
                "e-nl": {"userId": "nl", "extension": "201", "accountCode": "+31 15 001 0004"}
            },
            "fcm_tokens": {"nl_a_Android": device("nl", "tok-nl")},
        },
    )
    await relay.wait_for_clients(1, timeout=15)
    await relay.replay(load_events("cacofonisk__queue__queue_simple"), server_name="voipgrid")
    messages = await wait_pushes(fcm, 2)
    kinds = [m["data"]["type"] for m in messages]
    assert kinds == ["incoming_call", "incoming_call_cancelled"]
    assert messages[1]["data"]["action"] == "answered_elsewhere"
    linkedid = messages[0]["data"]["linkedid"]
    await settle(notifier, linkedid, kind="ended")
    doc = db.collection("call_history").document(linkedid).get().to_dict()
    assert doc["status"] == "device_answered" and doc["answeredBy"] == "150010002"
    assert doc["outcome"] == "answered" and doc["cancelled"] is True
    assert len(fcm.sent_messages()) == 2  # no missed-call notice for an answered call


async def test_relay_credentials_are_sent_as_basic_auth(connector, relay, db):
    import base64

    db.collection("users").document("a").set(
        {
            "websocketServerUrl": "127.0.0.1",
            "websocketServerPort": relay.port,
            "websocketUseSSL": False,
            "websocketHttpAuthId": "relay-user",
            "websocketHttpAuthPassword": "s3cret:pw",
        }
    )
    await relay.wait_for_clients(1, timeout=15)
    auth = relay.handshakes[-1].get("Authorization", "")
    assert auth == "Basic " + base64.b64encode(b"relay-user:s3cret:pw").decode()
    _, body = connector.health_report()
    assert "s3cret" not in json.dumps(body)  # credentials never in health or logs
