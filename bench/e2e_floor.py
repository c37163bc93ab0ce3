"""The end-to-end benchmark's baseline notifier: the same functions-framework CloudEvent target
shape as main.py, doing only the hops: decode the Pub/Sub envelope, then one FCM HTTP v1 POST per
demo device (the three the seed rings) over a kept-alive connection. No Firestore, no ledger, no
firebase-admin. The difference to the real notifier is the notifier's own work.

    functions-framework --source bench/e2e_floor.py --target on_call_event \
        --signature-type cloudevent
"""

from __future__ import annotations

import base64
import json
import os
import threading

import functions_framework
import httpx

TOKENS = ("demo-token-kim-android", "demo-token-kim-ios", "demo-token-lee")
_local = threading.local()


def _client() -> httpx.Client:
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = httpx.Client(timeout=10, trust_env=False)
    return client


@functions_framework.cloud_event
def on_call_event(cloud_event) -> None:  # type: ignore[no-untyped-def]
    raw = base64.b64decode(cloud_event.data["message"]["data"])
    event = json.loads(raw)
    if event.get("kind") != "ringing":
        return
    url = f"{os.environ['FCM_ENDPOINT']}/v1/projects/bench/messages:send"
    for token in TOKENS:
        body = {
            "message": {
                "token": token,
                "data": {"type": "incoming_call", "linkedid": event["linkedid"]},
                "android": {"priority": "high", "ttl": "60s"},
            }
        }
        response = _client().post(url, json=body, headers={"Authorization": "Bearer floor"})
        response.raise_for_status()
