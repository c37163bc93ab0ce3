"""`python -m functions.admin relays`: every relay's state from relay_status, as a real
connector (functions.connector.app, the conftest fixture) writes it, plus relays named in
Firestore that no connector has reported."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

from devtools.demo_data import seed_frame
from functions.admin.__main__ import main
from tests.integration.conftest import PROJECT
from tests.support import eventually

ENV = {
    "GOOGLE_CLOUD_PROJECT": PROJECT,
    "TENANCY": "user_documents",  # the connector fixture reads users' documents
    "RELAY_ALLOWED_NETWORKS": "127.0.0.0/8",
}


def relays() -> dict[str, dict[str, Any]]:
    out = io.StringIO()
    assert main(["relays", "--json"], ENV, out) == 0
    return {row["endpoint"]: row for row in json.loads(out.getvalue())["relays"]}


async def test_relays_shows_what_the_connector_reports(connector, relay, db):
    endpoint = f"127.0.0.1:{relay.port}"
    db.collection("users").document("a").set(
        {"websocketServerUrl": "127.0.0.1", "websocketServerPort": relay.port}
    )
    await relay.wait_for_clients(1, timeout=15)
    await relay.broadcast(json.dumps(seed_frame("1762257300.1", "1762257300.1")).encode())

    def connected() -> dict[str, Any] | None:
        row = relays().get(endpoint)
        return row if row and row["state"] == "connected" else None

    row = await asyncio.to_thread(eventually, connected, 15)
    assert row["relay"] == relay.url and row["connected"] is True
    assert row["instance"] == connector.instance and row["since"]

    # a user naming a relay that no connector has reported yet
    db.collection("users").document("b").set(
        {"websocketServerUrl": "127.0.0.1", "websocketServerPort": 1}
    )
    rows = await asyncio.to_thread(relays)
    assert rows["127.0.0.1:1"]["state"] in {"no_status", "connecting", "backoff"}

    await relay.stop()

    def disconnected() -> dict[str, Any] | None:
        row = relays().get(endpoint)
        return row if row and row["connected"] is False else None

    row = await asyncio.to_thread(eventually, disconnected, 15)
    assert row["state"] in {"backoff", "connecting"} and row["lastError"]

    out = io.StringIO()
    assert await asyncio.to_thread(main, ["relays"], ENV, out) == 0
    assert endpoint in out.getvalue() and "relay_status" in out.getvalue()


def test_relays_without_any_status_lists_the_named_relays(db):
    db.collection("pbx_tenants").document("acme").set(
        {"pbx": [{"relay": "ws://127.0.0.1:7099"}], "numbers": [], "members": []}
    )
    out = io.StringIO()
    env = {**ENV, "TENANCY": "directory"}
    assert main(["relays", "--json"], env, out) == 0
    (row,) = json.loads(out.getvalue())["relays"]
    assert row["endpoint"] == "127.0.0.1:7099" and row["state"] == "no_status"
