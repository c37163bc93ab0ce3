"""python -m devtools.console [--port 8075] [--fcm http://127.0.0.1:9099]

Reads the Firestore emulator named by FIRESTORE_EMULATOR_HOST (project GOOGLE_CLOUD_PROJECT) and
the local FCM endpoint; prints one JSON line with its URL once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from devtools.console.server import Console, serve
from devtools.console.sources import Sources, run_doctor_once


async def _main(args: argparse.Namespace) -> None:
    from google.cloud import firestore

    client = firestore.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "demo-makecall"))
    console = Console(Sources(client, args.fcm), lambda: run_doctor_once(client))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def ready(port: int) -> None:
        url = f"http://{args.host}:{port}/"
        print(json.dumps({"service": "console", "url": url}), flush=True)

    await serve(console, args.host, args.port, stop, ready)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The live local console of `make dev`.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEV_CONSOLE_PORT", 8075)))
    parser.add_argument("--fcm", default="http://127.0.0.1:9099", help="the local FCM endpoint")
    args = parser.parse_args(argv)
    if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
        print("console: FIRESTORE_EMULATOR_HOST is not set (`make dev` sets it)", file=sys.stderr)
        return 2
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
