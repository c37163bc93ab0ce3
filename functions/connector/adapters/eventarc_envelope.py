"""The HTTP request Eventarc makes for a Pub/Sub trigger, built from one message.

Eventarc wraps each message of its push subscription in a binary-mode CloudEvent
(``ce-*`` headers, JSON body in the push-subscription format). The connector POSTs
exactly this to CALL_EVENTS_PUSH_URL in local runs and the fake Pub/Sub delivers it,
so the notifier always sees the production shape.

Faithfulness notes:
- The body follows proto3 JSON, as real push delivery does: ``data`` and
  ``attributes`` are left out when empty, ``orderingKey`` when unset.
- Eventarc sends both the camelCase and the snake_case spellings of the id and the
  publish time; consumers of either keep working.
- Eventarc's real subscription is named ``eventarc-{region}-{trigger}-sub-{n}``; the
  default here (``eventarc-{topic}``) only needs to look plausible.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime

PUBSUB_MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"


def rfc3339(moment: datetime) -> str:
    """Format like a proto Timestamp in JSON: UTC, ``Z``, 0/3/6 fractional digits."""
    if moment.tzinfo is None:
        raise ValueError("publish_time must be timezone-aware")
    moment = moment.astimezone(UTC)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    micros = moment.microsecond
    if micros == 0:
        return base + "Z"
    if micros % 1000 == 0:
        return f"{base}.{micros // 1000:03d}Z"
    return f"{base}.{micros:06d}Z"


def pubsub_cloudevent(
    data: bytes,
    attributes: Mapping[str, str],
    *,
    project: str,
    topic: str,
    message_id: str,
    publish_time: datetime,
    ordering_key: str = "",
    subscription: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Return ``(headers, body)`` of the binary-mode CloudEvent Eventarc would POST."""
    when = rfc3339(publish_time)
    message: dict[str, object] = {}
    if data:
        message["data"] = base64.b64encode(data).decode("ascii")
    if attributes:
        message["attributes"] = dict(attributes)
    message["messageId"] = message_id
    message["message_id"] = message_id
    message["publishTime"] = when
    message["publish_time"] = when
    if ordering_key:
        message["orderingKey"] = ordering_key
    sub = subscription or f"eventarc-{topic}"
    if not sub.startswith("projects/"):
        sub = f"projects/{project}/subscriptions/{sub}"
    body = {"message": message, "subscription": sub}
    headers = {
        "ce-id": message_id,
        "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic}",
        "ce-type": PUBSUB_MESSAGE_PUBLISHED,
        "ce-specversion": "1.0",
        "ce-time": when,
        "content-type": "application/json",
    }
    return headers, json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
