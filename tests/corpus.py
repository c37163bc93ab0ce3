"""Loading the real AMI captures in tests/fixtures/corpus (provenance and licences: SOURCES.md).

Each `*.jsonl` line is the `data` of one amiws type-3 frame. Helpers wrap them as relay envelopes
or `Frame`s, move a capture into its own id namespace (to run captures side by side as concurrent
calls) and replay frames through a call tracker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from functions.core.call_event import CallEvent
from functions.core.frames import EVENT_FRAME_TYPE, Frame

CORPUS_DIR = Path(__file__).resolve().parent / "fixtures" / "corpus"
SERVER_NAME = "corpus-pbx"
START = 1_700_000_000.0  # connector clock at the first frame of a replay
STEP = 0.01  # connector clock advance per frame


def capture_names() -> list[str]:
    return sorted(path.stem for path in CORPUS_DIR.glob("*.jsonl"))


@cache
def inbound_names() -> frozenset[str]:
    """Captures that SOURCES.md marks as calls coming in on a trunk."""
    text = (CORPUS_DIR / "SOURCES.md").read_text(encoding="utf-8")
    return frozenset(re.findall(r"^\| `([^`]+)\.jsonl` \|.*\[INBOUND", text, re.MULTILINE))


@cache
def _events(name: str) -> tuple[str, ...]:
    path = CORPUS_DIR / f"{name}.jsonl"
    return tuple(line for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def load_events(name: str) -> list[dict[str, str]]:
    """The capture's AMI events in stream order (fresh dicts: callers may mutate them)."""
    return [json.loads(line) for line in _events(name)]


def envelope(event: dict[str, str], server_id: int = 1) -> dict[str, Any]:
    """The relay frame amiws would send for this event."""
    return {
        "type": EVENT_FRAME_TYPE,
        "server_id": server_id,
        "server_name": SERVER_NAME,
        "ssl": False,
        "data": event,
    }


def amiws_bytes(frame: dict[str, Any]) -> bytes:
    """A frame byte for byte as amiws writes it (src/lib/amiws_lib.c `amipack_to_json`):
    frozen's json_printf of `{ type: %d, server_id: %d, server_name: %Q, ssl: %B, data: {`,
    then `%Q: %Q` per AMI header joined by `,`, in the AMI packet's order, which starts with
    Event (AMI's first line). The captures do not keep the other headers' order; they keep
    theirs."""
    data = frame["data"]
    headers = [("Event", data["Event"])] if "Event" in data else []
    headers += [(key, value) for key, value in data.items() if key != "Event"]
    head = b'{ "type": %d, "server_id": %d, "server_name": %s, "ssl": %s, "data": {' % (
        frame["type"],
        frame["server_id"],
        orjson.dumps(frame["server_name"]),
        b"true" if frame["ssl"] else b"false",
    )
    body = b",".join(orjson.dumps(key) + b": " + orjson.dumps(value) for key, value in headers)
    return head + body + b"}}"


def namespaced(event: dict[str, str], prefix: str) -> dict[str, str]:
    """The event with every channel and bridge id prefixed, as if from another call's ids."""
    return {
        key: prefix + value if key.endswith(("Uniqueid", "Linkedid")) and value else value
        for key, value in event.items()
    }


def frames(name: str, server_id: int = 1, id_prefix: str = "") -> list[Frame]:
    events = load_events(name)
    if id_prefix:
        events = [namespaced(event, id_prefix) for event in events]
    return [Frame(EVENT_FRAME_TYPE, server_id, SERVER_NAME, event) for event in events]


def interleave(*streams: list[Frame]) -> Iterator[Frame]:
    """Round-robin: one frame of each stream in turn, as concurrent calls would arrive."""
    longest = max(len(stream) for stream in streams)
    for index in range(longest):
        for stream in streams:
            if index < len(stream):
                yield stream[index]


def replay(tracker: Any, stream: Iterable[Frame]) -> list[tuple[int, CallEvent]]:
    """Feed every frame; return (frame index, event) for each call event, in order."""
    out: list[tuple[int, CallEvent]] = []
    for index, frame in enumerate(stream):
        out.extend((index, event) for event in tracker.feed(frame, START + index * STEP))
    return out
