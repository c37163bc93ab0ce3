"""`make call`: send the seed's sample Newchannel to the demo relay, then show the pushes.

python -m devtools.send_call [--relay ws://127.0.0.1:7099] [--fcm http://127.0.0.1:9099]
    [--then answered|missed [--after SECONDS] [--answer-by EXT]]

`--then` plays the rest of the call after the ring: a desk phone answers it and hangs up, or the
caller gives up unanswered (the missed-call notice); the console (devtools/console) shows both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request

from websockets.asyncio.client import connect

from devtools.demo_data import seed_frame


def fetch_pushes(fcm: str, linkedid: str) -> list[dict]:
    """The accepted pushes for the call, each with `_received` (when the endpoint got it)."""
    with urllib.request.urlopen(f"{fcm}/__fake/messages", timeout=5) as response:
        records = json.load(response)
    return [
        {**r["body"]["message"], "_received": r["time"]}
        for r in records
        if r.get("status") == 200
        and r.get("body", {}).get("message", {}).get("data", {}).get("linkedid") == linkedid
    ]


async def send(relay: str, frame: dict) -> None:
    async with connect(relay) as ws:
        await ws.send(json.dumps(frame, ensure_ascii=False))


def _later_frame(ring: dict, event: dict[str, str], when: float) -> dict:
    data = ring["data"]
    root = {k: data[k] for k in ("Channel", "Uniqueid", "Linkedid")}
    return {**ring, "data": {**root, **event, "Timestamp": f"{when:.6f}"}}


def lifecycle_frames(ring: dict, then: str, *, answer_by: str = "1010") -> list[dict]:
    """What follows the seed's Newchannel on the root channel: `answered` = a desk phone
    (`PJSIP/<answer_by>`) picks up, then the call ends normally; `missed` = the caller hangs up
    while the phones ring (no answer)."""
    now = time.time()
    if then == "answered":
        answer = {
            "Event": "DialEnd",
            "DestChannel": f"PJSIP/{answer_by}-0000001c",
            "DestCallerIDNum": answer_by,
            "DialStatus": "ANSWER",
        }
        hangup = {"Event": "Hangup", "Cause": "16", "Cause-txt": "Normal Clearing"}
        return [_later_frame(ring, answer, now), _later_frame(ring, hangup, now + 1)]
    if then == "missed":
        request = {"Event": "HangupRequest", "Cause": "16"}
        hangup = {"Event": "Hangup", "Cause": "16", "Cause-txt": "Normal Clearing"}
        return [_later_frame(ring, request, now), _later_frame(ring, hangup, now)]
    raise ValueError(f"unknown --then {then!r}")


async def send_later(relay: str, ring: dict, then: str, after: float, answer_by: str) -> None:
    await asyncio.sleep(after)
    async with connect(relay) as ws:
        for frame in lifecycle_frames(ring, then, answer_by=answer_by):
            await ws.send(json.dumps(frame, ensure_ascii=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relay", default="ws://127.0.0.1:7099")
    parser.add_argument("--fcm", default="http://127.0.0.1:9099")
    parser.add_argument("--wait", type=float, default=5.0, help="seconds to wait for pushes")
    parser.add_argument(
        "--then", choices=("answered", "missed"), help="after the ring: answer and end, or miss"
    )
    parser.add_argument("--after", type=float, default=2.0, help="seconds of ringing before it")
    parser.add_argument("--answer-by", default="1010", help="the desk extension that answers")
    args = parser.parse_args()
    now = time.time()
    linkedid = f"{now:.3f}"
    frame = seed_frame(linkedid, f"{now:.6f}")
    asyncio.run(send(args.relay, frame))
    print(f"sent the seed's Newchannel (linkedid {linkedid}) to {args.relay}")
    deadline = time.monotonic() + args.wait
    pushes: list[dict] = []
    while time.monotonic() < deadline:
        pushes = fetch_pushes(args.fcm, linkedid)
        if len(pushes) >= 3:
            time.sleep(0.3)  # let any straggler (there should be none) show up too
            pushes = fetch_pushes(args.fcm, linkedid)
            break
        time.sleep(0.1)
    if not pushes:
        print("no push arrived: is `make dev` running?", file=sys.stderr)
        return 1
    last = max(p.pop("_received") for p in pushes)
    print(
        f"\n{len(pushes)} push(es) reached the local FCM endpoint, the last one "
        f"{(last - now) * 1000:.0f} ms after the frame was sent:"
    )
    for message in pushes:
        print(
            f"  -> {message['token']}: {message['notification']['title']} / "
            f"{message['notification']['body']}"
        )
    print("\nthe first one, as firebase-admin sent it:")
    print(json.dumps(pushes[0], ensure_ascii=False, indent=2))
    if args.then:
        asyncio.run(send_later(args.relay, frame, args.then, args.after, args.answer_by))
        print(f"\nthen: {args.then} (the cancel and history follow; see the console)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
