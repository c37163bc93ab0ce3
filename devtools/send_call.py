"""`make call`: send the seed's sample Newchannel to the demo relay, then show the pushes.

python -m devtools.send_call [--relay ws://127.0.0.1:7099] [--fcm http://127.0.0.1:9099]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relay", default="ws://127.0.0.1:7099")
    parser.add_argument("--fcm", default="http://127.0.0.1:9099")
    parser.add_argument("--wait", type=float, default=5.0, help="seconds to wait for pushes")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
