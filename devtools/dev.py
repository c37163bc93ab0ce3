"""`make dev`: the whole product on this machine, on 127.0.0.1, until Ctrl-C.

Starts Google's Firestore emulator (with infra/firestore.rules) and seeds the demo company
(devtools/demo_data.py), a demo amiws relay, the local FCM endpoint, the notifier under
functions-framework, Google's Pub/Sub emulator with the topic and a push subscription to the
notifier (as Eventarc makes for the trigger), the connector publishing to it with
google-cloud-pubsub, and the live console (devtools/console, http://127.0.0.1:8075/). Then
`make call` sends the seed's sample call and prints the pushes; the console shows them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from devtools.emulators import FirestoreEmulator, PubSubEmulator, push_endpoint
from devtools.processes import notifier_command, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "demo-makecall"
PORTS = {
    "firestore": int(os.environ.get("DEV_FIRESTORE_PORT", 8080)),
    "pubsub": int(os.environ.get("DEV_PUBSUB_PORT", 8085)),
    "notifier": int(os.environ.get("DEV_NOTIFIER_PORT", 8090)),
    "connector": int(os.environ.get("DEV_CONNECTOR_PORT", 8070)),
    "fcm": int(os.environ.get("DEV_FCM_PORT", 9099)),
    "relay": int(os.environ.get("DEV_RELAY_PORT", 7099)),
    "console": int(os.environ.get("DEV_CONSOLE_PORT", 8075)),
}
# Lines of the emulators' and gRPC's chatter that say nothing to a person watching the stack:
# java.util.logging's header lines, the Pub/Sub emulator's per-request header notes, ...
NOISE = re.compile(
    r"chttp2_transport|HTTP/2 connection|SLF4J|orwarding key:|^\w{3} \d{1,2}, \d{4} \d"
)
TOPIC = "call-events"
COLORS = {
    "firestore": 90, "relay": 36, "fcm": 32, "notifier": 35, "pubsub": 34, "connector": 33,
    "console": 94,
}  # fmt: skip
# the demo relay listens on loopback, which the address policy refuses by default
ALLOWED_NETWORKS = "127.0.0.0/8,::1/128"


def _pretty(line: str) -> str:
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict) or "message" not in entry:
        return line
    skip = {"message", "severity", "time", "logger", "logging.googleapis.com/labels"}
    extras = " ".join(
        f"{k}={json.dumps(v, ensure_ascii=False)}"
        for k, v in entry.items()
        if k not in skip and v not in (None, {}, "")
    )
    return f"{entry.get('severity', ''):7} {entry['message']}  {extras}"


class Stack:
    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{PORTS['firestore']}",
        }

    def start(self, name: str, args: list[str], port: int | None, **env: str) -> None:
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self.procs.append((name, proc))
        threading.Thread(target=self._echo, args=(name, proc), daemon=True).start()
        if port is not None:
            wait_for_port(port, timeout=60, proc=proc)

    @staticmethod
    def _echo(name: str, proc: subprocess.Popen) -> None:
        color = COLORS.get(name, 0)
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if not line or NOISE.search(line):
                continue
            print(f"\033[{color}m{name:>9}\033[0m | {_pretty(line)}", flush=True)

    def stop(self) -> None:
        """Newest first, one at a time: the connector releases its leases while the Firestore
        emulator still runs."""
        for _, proc in reversed(self.procs):
            stop_process(proc)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    py = sys.executable
    # Ctrl-C, and also SIGTERM/SIGINT from a supervisor (a background job ignores SIGINT).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    stack = Stack()
    try:
        firestore_emulator = FirestoreEmulator(PORTS["firestore"], project=PROJECT)
        stack.start("firestore", firestore_emulator.command(), PORTS["firestore"])
        firestore_emulator.ready()
        os.environ["FIRESTORE_EMULATOR_HOST"] = stack.env["FIRESTORE_EMULATOR_HOST"]
        from google.cloud import firestore

        from devtools.demo_data import seed

        count = seed(firestore.Client(project=PROJECT), "127.0.0.1", PORTS["relay"])
        print(f"     seed | {count} demo documents written (users, my_extensions, fcm_tokens, ...)")
        stack.start(
            "relay",
            [py, "-m", "devtools.demo_relay", "--port", str(PORTS["relay"])],
            PORTS["relay"],
        )
        stack.start(
            "fcm", [py, "-m", "devtools.fake_fcm", "--port", str(PORTS["fcm"])], PORTS["fcm"]
        )
        stack.start(
            "notifier",
            notifier_command(PORTS["notifier"], python=py),
            PORTS["notifier"],
            FCM_ENDPOINT=f"http://127.0.0.1:{PORTS['fcm']}",
        )
        notifier_url = f"http://127.0.0.1:{PORTS['notifier']}/"
        fcm_url = f"http://127.0.0.1:{PORTS['fcm']}"
        pubsub = PubSubEmulator(PORTS["pubsub"])
        stack.start("pubsub", pubsub.command(), PORTS["pubsub"])
        pubsub.ready()
        topic = pubsub.create_topic(PROJECT, TOPIC)
        pubsub.create_push_subscription(
            PROJECT, "notifier", topic, push_endpoint(notifier_url, topic)
        )
        stack.start(
            "connector",
            [py, "-m", "functions.connector"],
            PORTS["connector"],
            PORT=str(PORTS["connector"]),
            CALL_EVENTS_TOPIC=TOPIC,
            RELAY_ALLOWED_NETWORKS=ALLOWED_NETWORKS,
            PUBSUB_EMULATOR_HOST=f"127.0.0.1:{PORTS['pubsub']}",
            HEALTH_HOST="127.0.0.1",  # a laptop's health server is not for the network
        )
        stack.start(
            "console",
            [py, "-m", "devtools.console", "--port", str(PORTS["console"]), "--fcm", fcm_url],
            PORTS["console"],
            # the doctor judges relay addresses as the connector does
            RELAY_ALLOWED_NETWORKS=ALLOWED_NETWORKS,
        )
        time.sleep(1.0)
        print(
            "\n  The stack is up (all on 127.0.0.1):\n"
            f"    relay (amiws stand-in)  ws://127.0.0.1:{PORTS['relay']}\n"
            f"    connector health        http://127.0.0.1:{PORTS['connector']}/healthz\n"
            f"    notifier (on_call_event) {notifier_url}\n"
            f"    local FCM endpoint      http://127.0.0.1:{PORTS['fcm']}/__fake/messages\n"
            f"    console (live)          http://127.0.0.1:{PORTS['console']}/\n"
            f"    Firestore emulator      127.0.0.1:{PORTS['firestore']}\n"
            f"    Pub/Sub emulator        127.0.0.1:{PORTS['pubsub']} (topic {TOPIC})\n"
            "\n  In another terminal:  make call    (the seed's sample call; prints its pushes)\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        while all(proc.poll() is None for _, proc in stack.procs):
            time.sleep(0.5)
        dead = [name for name, proc in stack.procs if proc.poll() is not None]
        print(f"stopping: {', '.join(dead)} exited", flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
