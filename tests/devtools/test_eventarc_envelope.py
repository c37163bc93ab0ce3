"""The Eventarc CloudEvent built for a Pub/Sub message."""

from __future__ import annotations

import base64
import json
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cloudevents.http import from_http

from functions.connector.adapters.eventarc_envelope import (
    PUBSUB_MESSAGE_PUBLISHED,
    pubsub_cloudevent,
    rfc3339,
)

WHEN = datetime(2024, 3, 1, 9, 30, 15, 123000, tzinfo=UTC)
DATA = json.dumps({"event": "ring", "linkedid": "1700000000.42"}).encode()


def _build(
    data: bytes = DATA,
    attributes: dict[str, str] | None = None,
    *,
    ordering_key: str = "",
    subscription: str | None = None,
    publish_time: datetime = WHEN,
) -> tuple[dict[str, str], bytes]:
    return pubsub_cloudevent(
        data,
        {"kind": "ring"} if attributes is None else attributes,
        project="demo",
        topic="call-events",
        message_id="8135530718653903",
        publish_time=publish_time,
        ordering_key=ordering_key,
        subscription=subscription,
    )


def test_headers_and_body_are_what_eventarc_posts():
    headers, body = _build(ordering_key="call-1700000000.42")
    assert headers == {
        "ce-id": "8135530718653903",
        "ce-source": "//pubsub.googleapis.com/projects/demo/topics/call-events",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-specversion": "1.0",
        "ce-time": "2024-03-01T09:30:15.123Z",
        "content-type": "application/json",
    }
    assert json.loads(body) == {
        "message": {
            "data": base64.b64encode(DATA).decode(),
            "attributes": {"kind": "ring"},
            "messageId": "8135530718653903",
            "message_id": "8135530718653903",
            "publishTime": "2024-03-01T09:30:15.123Z",
            "publish_time": "2024-03-01T09:30:15.123Z",
            "orderingKey": "call-1700000000.42",
        },
        "subscription": "projects/demo/subscriptions/eventarc-call-events",
    }


def test_empty_fields_are_left_out_like_proto3_json():
    _, body = _build(data=b"", attributes={"only": "attr"})
    message = json.loads(body)["message"]
    assert "data" not in message and "orderingKey" not in message
    _, body = _build(attributes={})
    assert "attributes" not in json.loads(body)["message"]


def test_subscription_name_or_path():
    _, body = _build(subscription="push-sub")
    assert json.loads(body)["subscription"] == "projects/demo/subscriptions/push-sub"
    _, body = _build(subscription="projects/other/subscriptions/s")
    assert json.loads(body)["subscription"] == "projects/other/subscriptions/s"


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2024, 3, 1, 9, 30, 15, tzinfo=UTC), "2024-03-01T09:30:15Z"),
        (datetime(2024, 3, 1, 9, 30, 15, 120000, tzinfo=UTC), "2024-03-01T09:30:15.120Z"),
        (datetime(2024, 3, 1, 9, 30, 15, 123456, tzinfo=UTC), "2024-03-01T09:30:15.123456Z"),
        (
            datetime(2024, 3, 1, 18, 30, 15, tzinfo=timezone(timedelta(hours=9))),
            "2024-03-01T09:30:15Z",
        ),
    ],
)
def test_rfc3339_is_utc_with_z(moment: datetime, text: str):
    assert rfc3339(moment) == text


def test_naive_times_are_refused():
    with pytest.raises(ValueError):
        _build(publish_time=datetime(2024, 3, 1, 9, 30))


def test_cloudevents_sdk_parses_it():
    headers, body = _build(ordering_key="k")
    event = from_http(headers, body)
    assert event["type"] == PUBSUB_MESSAGE_PUBLISHED
    assert event["source"] == "//pubsub.googleapis.com/projects/demo/topics/call-events"
    assert event["id"] == "8135530718653903"
    assert event["time"] == "2024-03-01T09:30:15.123Z"
    assert base64.b64decode(event.data["message"]["data"]) == DATA
    assert event.data["message"]["attributes"] == {"kind": "ring"}


def test_functions_framework_delivers_it_to_a_cloud_event_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import functions_framework

    module = f"ff_probe_{uuid.uuid4().hex}"
    source = tmp_path / f"{module}.py"
    source.write_text(
        "import functions_framework\n"
        "RECEIVED = []\n"
        "@functions_framework.cloud_event\n"
        "def handle(event):\n"
        "    RECEIVED.append(event)\n"
    )
    monkeypatch.setattr(sys, "path", list(sys.path))  # create_app appends tmp_path
    app = functions_framework.create_app(target="handle", source=str(source))
    probe = sys.modules[module]  # create_app registers the module under its file name
    monkeypatch.delitem(sys.modules, module)

    headers, body = _build(ordering_key="k")
    response = app.test_client().post("/", headers=headers, data=body)

    assert response.status_code == 200
    [event] = probe.RECEIVED
    assert event["type"] == PUBSUB_MESSAGE_PUBLISHED
    assert event["id"] == "8135530718653903"
    assert event.data == json.loads(body)
