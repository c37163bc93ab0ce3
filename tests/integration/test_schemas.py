"""docs/schemas/*.json against real outputs: the call events the connector published to Pub/Sub,
the pushes firebase-admin sent to the local FCM endpoint, and the documents the backend wrote to
(and reads from) the Firestore emulator, for an answered call and a missed one. Every schema must
also refuse a wrong shape, so a schema that accepts anything fails here."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from datetime import datetime
from typing import Any

import orjson
import pytest
from google.cloud import firestore
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from devtools.demo_data import demo_documents, seed_frame
from devtools.send_call import lifecycle_frames
from tests.integration.conftest import PROJECT
from tests.integration.scenario import company, write
from tests.support import ROOT, eventually

SCHEMAS = ROOT / "docs" / "schemas"
# Firestore collections whose documents have a schema; all of them are checked when present.
WRITTEN = (
    "call_history",
    "push_dedupe",
    "relay_status",
    "relay_leases",
    "connector_instances",
    "relay_access",
)
READ = (
    "pbx_tenants",
    "users",
    "my_extensions",
    "fcm_tokens",
    "user_notification_settings",
    "call_forward_info",
)
PUSH_SCHEMAS = {
    "incoming_call": "push-incoming.schema.json",
    "incoming_call_cancelled": "push-cancel.schema.json",
    "missed_call": "push-missed.schema.json",
}
_names = itertools.count(1)


def registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        schema = json.loads(path.read_text())
        resources.append((path.name, Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    return Draft202012Validator(schema, registry=registry(), format_checker=FormatChecker())


def problems(name: str, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator(name).iter_errors(instance)
    ]


def as_json(value: Any) -> Any:
    """A Firestore document as docs/schemas.md describes it: timestamps as RFC 3339 strings."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value


def documents(db: firestore.Client, collection: str) -> dict[str, dict]:
    return {s.id: as_json(s.to_dict()) for s in db.collection(collection).stream()}


def test_every_schema_is_valid_json_schema() -> None:
    names = sorted(p.name for p in SCHEMAS.glob("*.schema.json"))
    expected = {f"firestore-{c}.schema.json" for c in WRITTEN + READ}
    expected |= {"call-event.schema.json", *PUSH_SCHEMAS.values()}
    assert expected <= set(names), sorted(expected - set(names))
    for name in names:
        Draft202012Validator.check_schema(json.loads((SCHEMAS / name).read_text()))
        assert name in (ROOT / "docs" / "schemas.md").read_text(), f"{name} not in schemas.md"


async def test_real_events_pushes_and_documents_match_the_schemas(
    connector, relay, db, fcm, notifier, pubsub_emulator, call_events
) -> None:
    pull = pubsub_emulator.create_pull_subscription(
        PROJECT, f"schema-events-{next(_names)}", call_events
    )
    write(db, company(relay.port, 1))
    await relay.wait_for_clients(1, timeout=15)

    # an answered call: 3 incoming pushes, 3 cancels; a missed one: also 3 missed-call notices
    answered = seed_frame("1796000000.101", "1796000000.100000")
    missed = seed_frame("1796000000.202", "1796000000.200000")
    await relay.broadcast(orjson.dumps(answered))
    await relay.broadcast(orjson.dumps(missed))
    await asyncio.to_thread(fcm.wait_for, 6, 20)
    for frame in [
        *lifecycle_frames(answered, "answered"),
        *lifecycle_frames(missed, "missed"),
    ]:
        await relay.broadcast(orjson.dumps(frame))
    sent = await asyncio.to_thread(fcm.wait_for, 15, 20)

    # the call events, as the connector published them
    events: list[dict] = []

    def pulled() -> list[dict]:
        events.extend(pubsub_emulator.pull(pull))
        return events if len(events) >= 5 else []  # ring, answer, end; ring, end

    await asyncio.to_thread(eventually, pulled, 15)
    bodies = [json.loads(base64.b64decode(m["data"])) for m in events]
    assert {b["kind"] for b in bodies} == {"ringing", "answered", "ended"}
    for body in bodies:
        assert problems("call-event.schema.json", body) == [], body
    ended = next(b for b in bodies if b["kind"] == "ended")
    assert problems("call-event.schema.json", {**ended, "outcome": ""})  # ended says how
    assert problems("call-event.schema.json", {**ended, "server_id": "1"})

    # the pushes, as firebase-admin sent them
    assert {m["data"]["type"] for m in sent} == set(PUSH_SCHEMAS)
    for message in sent:
        assert problems(PUSH_SCHEMAS[message["data"]["type"]], message) == [], message
    # and the schemas tell a real push from a near miss
    by_type = {m["data"]["type"]: m for m in sent}
    incoming = by_type["incoming_call"]
    assert problems("push-incoming.schema.json", {**incoming, "notification": {"title": "x"}})
    cancel = by_type["incoming_call_cancelled"]
    assert problems("push-cancel.schema.json", {**cancel, "notification": incoming["notification"]})
    missed = by_type["missed_call"]
    linked = {**missed, "data": {**missed["data"], "linkedid": "1.2", "call_type": "external"}}
    assert problems("push-missed.schema.json", linked)

    # the documents: the backend's own, once the history has both calls' outcomes
    def settled() -> bool:
        history = documents(db, "call_history").values()
        return sum(1 for d in history if "endedAt" in d) >= 4 and bool(
            documents(db, "relay_status")
        )

    await asyncio.to_thread(eventually, settled, 20)
    checked: dict[str, int] = {}
    for collection in WRITTEN + READ:
        docs = documents(db, collection)
        for doc_id, doc in docs.items():
            found = problems(f"firestore-{collection}.schema.json", doc)
            assert found == [], f"{collection}/{doc_id}: {found}\n{doc}"
        checked[collection] = len(docs)
    missing = [c for c in WRITTEN if c != "pbx_tenants" and not checked[c]]
    assert not missing, f"nothing written to {missing}"


def test_demo_company_documents_match_the_schemas(db) -> None:
    """The PBX directory and the app's documents as `make dev` seeds them, read back from the
    emulator (no connector runs here: it would start reading the demo's relay)."""
    for collection, docs in demo_documents("127.0.0.1", 7099).items():
        for doc_id, doc in docs.items():
            ref = db.collection(collection).document(doc_id)
            ref.set(doc)
            found = problems(f"firestore-{collection}.schema.json", as_json(ref.get().to_dict()))
            assert found == [], f"{collection}/{doc_id}: {found}"


WRONG = [
    ("call-event.schema.json", {"kind": "ringing", "version": 1}),
    ("push-incoming.schema.json", {"token": "t", "data": {"type": "incoming_call"}}),
    ("push-cancel.schema.json", {"token": "t", "data": {"type": "incoming_call_cancelled"}}),
    ("push-missed.schema.json", {"token": "t", "data": {"type": "missed_call", "x": 1}}),
    ("firestore-call_history.schema.json", {"userId": "u", "status": 3}),
    ("firestore-push_dedupe.schema.json", {"callKey": "k", "devices": []}),
    ("firestore-relay_status.schema.json", {"relay": "r", "state": "connected"}),
    ("firestore-relay_leases.schema.json", {"holder": 1}),
    ("firestore-connector_instances.schema.json", {"expiresAt": "tomorrow"}),
    ("firestore-relay_access.schema.json", {"users": "kim"}),
    ("firestore-pbx_tenants.schema.json", {"pbx": [{"relay": "ws://h:1", "serverId": "1"}]}),
    ("firestore-users.schema.json", {"websocketServerPort": "7099"}),
    ("firestore-my_extensions.schema.json", {"userId": "u"}),
    ("firestore-fcm_tokens.schema.json", {"userId": "u", "fcmToken": 5}),
    ("firestore-user_notification_settings.schema.json", {"pushEnabled": "no"}),
    ("firestore-call_forward_info.schema.json", {"isEnabled": "yes"}),
]


@pytest.mark.parametrize(("name", "instance"), WRONG, ids=[n for n, _ in WRONG])
def test_schemas_refuse_wrong_shapes(name: str, instance: dict) -> None:
    assert problems(name, instance), f"{name} accepted {instance}"
