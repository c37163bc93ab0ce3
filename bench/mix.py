"""A realistic relay frame stream: one ringing call per 200 frames, built from real AMI captures.

Each block of `BLOCK` frames holds one inbound (ringing) call, spread over the block, and fills the
rest with frames of the non-ringing captures (internal, click-to-dial, transfers): what a busy PBX
sends between two outside calls. The ringing call is, in turn, one of the corpus' inbound captures
or the seed's sample Newchannel followed later by its Hangup. Every call gets its own ids
(`tests.corpus.namespaced`), so the tracker sees new calls, never replays.

Frames are the bytes amiws sends (`tests.corpus.amiws_bytes`: its envelope and `"Key": "Value"`
spacing, Event first, UTF-8), encoded once up front.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import orjson

from devtools.demo_data import seed_frame
from functions.core.call_event import Kind
from functions.core.call_tracker import CallTracker
from functions.core.frames import decode_frame
from tests.corpus import (
    amiws_bytes,
    capture_names,
    envelope,
    inbound_names,
    load_events,
    namespaced,
)

BLOCK = 200
PREFIXES = ("trk", "voipgrid_in")  # the seed's trunks and the cacofonisk captures' trunk
RELAY = "127.0.0.1:7099"


def _rings(events: list[dict[str, str]]) -> int:
    tracker = CallTracker(RELAY, PREFIXES)
    count = 0
    for index, event in enumerate(events):
        frame = decode_frame(orjson.dumps(envelope(event)))
        assert not hasattr(frame, "reason"), frame
        count += sum(e.kind is Kind.RINGING for e in tracker.feed(frame, 1e9 + index))  # type: ignore[arg-type]
    return count


def _sources() -> tuple[list[str], list[str]]:
    ringing, filler = [], []
    for name in capture_names():
        if name.startswith("fromdocs__"):
            continue
        events = load_events(name)
        rings = _rings(events)
        if name in inbound_names() and rings == 1:
            ringing.append(name)
        elif rings == 0:
            filler.append(name)
    return ringing, filler


def _seed_call(linkedid: str) -> list[dict[str, str]]:
    start = seed_frame(linkedid, f"{time.time():.6f}")["data"]
    hangup = {
        "Event": "Hangup",
        "Privilege": "call,all",
        "Channel": start["Channel"],
        "Uniqueid": linkedid,
        "Linkedid": linkedid,
        "CallerIDNum": start["CallerIDNum"],
        "Context": start["Context"],
        "Exten": start["Exten"],
        "Cause": "16",
        "Cause-txt": "Normal Clearing",
    }
    return [start, hangup]


def _spread(ring: list[dict[str, str]], filler: Iterator[dict[str, str]]) -> list[dict[str, str]]:
    """`BLOCK` events: the ring call's events at even intervals, filler in between."""
    slots = BLOCK
    positions = {round(i * (slots - 1) / max(1, len(ring) - 1)) for i in range(len(ring))}
    while len(positions) < len(ring):  # a ring call longer than the spacing allows: pack it
        positions.add(min(set(range(slots)) - positions))
    ring_iter = iter(ring)
    return [next(ring_iter) if i in positions else next(filler) for i in range(slots)]


def _filler_stream(names: list[str]) -> Iterator[dict[str, str]]:
    for loop in itertools.count():
        for name in names:
            prefix = f"f{loop}-{name[-12:]}-"
            for event in load_events(name):
                yield namespaced(event, prefix)


def build_events(frames: int) -> list[dict[str, str]]:
    ringing, filler_names = _sources()
    filler = _filler_stream(filler_names)
    blocks = max(1, frames // BLOCK)
    out: list[dict[str, str]] = []
    for block in range(blocks):
        if block % 2 == 0:
            ring = _seed_call(f"seed{block}.1")
        else:
            name = ringing[(block // 2) % len(ringing)]
            ring = [namespaced(e, f"b{block}-") for e in load_events(name)]
            ring = ring[:BLOCK]
        out += _spread(ring, filler)
    return out


def build_frames(frames: int, layout: str = "amiws") -> list[bytes]:
    """`frames` (rounded to whole blocks) relay frames as the bytes amiws puts on the wire
    (`layout="amiws"`), or as compact JSON in the captures' own key order (`"compact"`: most
    captures have their keys sorted, which puts Event mid-frame)."""
    events = build_events(frames)
    if layout == "compact":
        return [orjson.dumps(envelope(event)) for event in events]
    return [amiws_bytes(envelope(event)) for event in events]


def describe(frames: list[bytes]) -> dict[str, float | int]:
    """Measured composition: how many calls ring and end, bytes per frame."""
    tracker = CallTracker(RELAY, PREFIXES)
    kinds: dict[str, int] = {}
    for index, raw in enumerate(frames):
        frame = decode_frame(raw)
        for event in tracker.feed(frame, 1e9 + index * 0.001):  # type: ignore[arg-type]
            kinds[event.kind.value] = kinds.get(event.kind.value, 0) + 1
    size = sum(len(f) for f in frames)
    return {
        "frames": len(frames),
        "ringing": kinds.get("ringing", 0),
        "answered": kinds.get("answered", 0),
        "ended": kinds.get("ended", 0),
        "frames_per_ringing": round(len(frames) / max(1, kinds.get("ringing", 0)), 1),
        "mean_bytes": round(size / max(1, len(frames)), 1),
    }


def _pending_call(linkedid: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """A trunk call that waits for its number (Exten `s`) and, at the end of its block, learns
    it from FreePBX's `FROM_DID` VarSet, rings and hangs up."""
    start = seed_frame(linkedid, f"{time.time():.6f}")["data"] | {"Exten": "s"}
    did = {
        "Event": "VarSet",
        "Privilege": "dialplan,all",
        "Channel": start["Channel"],
        "Uniqueid": linkedid,
        "Linkedid": linkedid,
        "Variable": "__FROM_DID",
        "Value": seed_frame(linkedid, "0")["data"]["Exten"],
    }
    return start, [did, *_seed_call(linkedid)[1:]]


def build_all_parse_events(frames: int) -> list[dict[str, str]]:
    """The hardest stream for a reader that skips by event name: while one trunk call waits for
    its number, every VarSet may be the one that gives it, so none can be skipped by its name.
    Each block: that call's Newchannel, VarSet frames of other calls (real ones from the
    captures, which nobody follows), then its number, ring and hangup."""
    _, filler_names = _sources()
    stream = itertools.islice(_filler_stream(filler_names), 100_000)
    varsets = [e for e in stream if e.get("Event") == "VarSet"][:5000]
    pool = itertools.cycle(varsets)
    out: list[dict[str, str]] = []
    for block in range(max(1, frames // BLOCK)):
        start, end = _pending_call(f"pending{block}.1")
        out.append(start)
        out += [next(pool) for _ in range(BLOCK - 1 - len(end))]
        out += end
    return out


def build_all_parse_frames(frames: int) -> list[bytes]:
    return [amiws_bytes(envelope(event)) for event in build_all_parse_events(frames)]
