"""Google's own Firestore and Pub/Sub emulators (Cloud SDK), on 127.0.0.1, for tests, benchmarks
and `make dev`.

Both ship with the Google Cloud SDK as Debian packages (`google-cloud-cli-firestore-emulator`,
`google-cloud-cli-pubsub-emulator`) and run on Java 17. They are started here from their jars
directly, not through `gcloud emulators ... start`: the JVM is then our child process (SIGTERM
stops it; gcloud's wrapper scripts leave it running) and a start costs no gcloud Python start-up.

The Firestore emulator isolates transactions as Firestore does and evaluates security rules for
requests that carry an emulator ID token (an unsigned JWT naming the uid); the server client
libraries send `Bearer owner`, which, like the Admin SDK's service account in production, is not
subject to rules. `reset()` deletes every document of a project through the emulator's REST
endpoint. The Pub/Sub emulator serves topics, ordered publishes, pull and push subscriptions;
`reset()` drops every topic and subscription.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from devtools.processes import free_port, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "infra" / "firestore.rules"
FIRESTORE_JAR = "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
PUBSUB_JARS = "platform/pubsub-emulator/lib"
INSTALL_HINT = (
    "install Google Cloud SDK's emulators and Java 17: apt-get install google-cloud-cli "
    "google-cloud-cli-firestore-emulator google-cloud-cli-pubsub-emulator openjdk-17-jre-headless "
    "(Google's apt repository packages.cloud.google.com/apt, suite cloud-sdk)"
)


class EmulatorMissing(RuntimeError):
    pass


def sdk_root() -> Path | None:
    """The Cloud SDK's install folder: $CLOUDSDK_ROOT_DIR, else where `gcloud` lives."""
    if explicit := os.environ.get("CLOUDSDK_ROOT_DIR"):
        return Path(explicit)
    gcloud = shutil.which("gcloud")
    if gcloud:
        return Path(gcloud).resolve().parent.parent  # <root>/bin/gcloud
    default = Path("/usr/lib/google-cloud-sdk")
    return default if default.exists() else None


def firestore_jar() -> Path | None:
    root = sdk_root()
    jar = root / FIRESTORE_JAR if root else None
    return jar if jar and jar.is_file() else None


def pubsub_jar() -> Path | None:
    root = sdk_root()
    if not root or not (root / PUBSUB_JARS).is_dir():
        return None
    jars = sorted((root / PUBSUB_JARS).glob("cloud-pubsub-emulator-*.jar"))
    return jars[-1] if jars else None


def missing() -> list[str]:
    """What is not installed, as names a person can act on; empty when both emulators can run."""
    gaps = []
    if shutil.which("java") is None:
        gaps.append("java (Java 17 runtime)")
    if firestore_jar() is None:
        gaps.append("google-cloud-cli-firestore-emulator")
    if pubsub_jar() is None:
        gaps.append("google-cloud-cli-pubsub-emulator")
    return gaps


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise EmulatorMissing(f"java not found: {INSTALL_HINT}")
    return java


# Short-lived test JVMs: no JIT tiers past C1 (start-up counts more than peak speed here).
_JVM_FLAGS = ["-Duser.language=en"]


class _Emulator:
    name = "emulator"

    def __init__(self, port: int = 0, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> Self:
        out: Any = subprocess.DEVNULL
        if self.log_path is not None:
            self._log = out = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        wait_for_port(self.port, timeout=timeout, proc=self.proc)
        self.ready(timeout)
        return self

    def ready(self, timeout: float = 60.0) -> None:
        """Until the HTTP side answers (the port opens a little before it serves)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as response:
                    response.read()
                return
            except urllib.error.HTTPError:
                return  # it answered
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} on {self.host} does not answer") from None
                time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _request(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()


class FirestoreEmulator(_Emulator):
    """Google's Firestore emulator, with `rules` (default: infra/firestore.rules) loaded."""

    name = "Firestore emulator"

    def __init__(
        self,
        port: int = 0,
        *,
        project: str = "",
        rules: Path | None = RULES,
        log_path: Path | None = None,
    ) -> None:
        super().__init__(port, log_path)
        self.project = project
        self.rules = rules if rules is not None and rules.is_file() else None

    def command(self) -> list[str]:
        jar = firestore_jar()
        if jar is None:
            raise EmulatorMissing(f"Firestore emulator not found: {INSTALL_HINT}")
        args = [_java(), *_JVM_FLAGS, "-cp", str(jar)]
        args += ["com.google.cloud.datastore.emulator.firestore.CloudFirestore", "start"]
        args += ["--host", "127.0.0.1", "--port", str(self.port)]
        # The emulator also opens a WebSocket port for its UI; keep it on loopback, on a port of
        # ours (its default is a random one on the bind host, which is loopback too).
        args += ["--websocket_port", str(free_port())]
        if self.rules is not None:
            args += ["--rules", str(self.rules)]
        return args

    def reset(self, project: str = "") -> None:
        """Delete every document of the project (all databases' default one)."""
        project = project or self.project
        if not project:
            raise ValueError("reset() needs a project")
        self._request("DELETE", f"/emulator/v1/projects/{project}/databases/(default)/documents")

    def load_rules(self, source: str, project: str = "") -> None:
        """Replace the security rules the emulator applies to one project (as the Firebase CLI
        does when the rules file changes)."""
        project = project or self.project
        body = {"rules": {"files": [{"name": "firestore.rules", "content": source}]}}
        self._request("PUT", f"/emulator/v1/projects/{project}:securityRules", body)


class PubSubEmulator(_Emulator):
    """Google's Pub/Sub emulator. google-cloud-pubsub finds it through PUBSUB_EMULATOR_HOST."""

    name = "Pub/Sub emulator"

    def command(self) -> list[str]:
        jar = pubsub_jar()
        if jar is None:
            raise EmulatorMissing(f"Pub/Sub emulator not found: {INSTALL_HINT}")
        return [_java(), *_JVM_FLAGS, "-jar", str(jar), "--host=127.0.0.1", f"--port={self.port}"]

    def reset(self) -> None:
        """Drop every topic and subscription of every project."""
        self._request("POST", "/reset")

    def env(self) -> dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": self.host}

    def create_topic(self, project: str, topic: str) -> str:
        name = f"projects/{project}/topics/{topic}"
        self._request("PUT", f"/v1/{name}", {})
        return name

    def create_push_subscription(
        self,
        project: str,
        subscription: str,
        topic: str,
        endpoint: str,
        *,
        ack_deadline_seconds: int = 10,
        ordering: bool = True,
        min_backoff_seconds: float | None = None,
        max_backoff_seconds: float | None = None,
        dead_letter_topic: str | None = None,
        max_delivery_attempts: int = 5,
    ) -> str:
        """A push subscription as Eventarc makes for a Pub/Sub trigger: ordered, with the ack
        deadline as the push request's timeout; a 2xx answer acknowledges, anything else (or no
        answer in time) is delivered again."""
        name = f"projects/{project}/subscriptions/{subscription}"
        body: dict[str, Any] = {
            "topic": _full(project, "topics", topic),
            "pushConfig": {"pushEndpoint": endpoint},
            "ackDeadlineSeconds": ack_deadline_seconds,
            "enableMessageOrdering": ordering,
        }
        if min_backoff_seconds is not None or max_backoff_seconds is not None:
            body["retryPolicy"] = {
                "minimumBackoff": f"{min_backoff_seconds or 10}s",
                "maximumBackoff": f"{max_backoff_seconds or 600}s",
            }
        if dead_letter_topic:
            body["deadLetterPolicy"] = {
                "deadLetterTopic": dead_letter_topic,
                "maxDeliveryAttempts": max_delivery_attempts,
            }
        self._request("PUT", f"/v1/{name}", body)
        return name

    def delete_subscription(self, name: str) -> None:
        try:
            self._request("DELETE", f"/v1/{name}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise

    def pull(self, subscription: str, max_messages: int = 100) -> list[dict[str, Any]]:
        """Pull and acknowledge what a pull subscription holds (for tests that read a topic)."""
        body = {"maxMessages": max_messages, "returnImmediately": True}
        answer = json.loads(self._request("POST", f"/v1/{subscription}:pull", body) or b"{}")
        received = answer.get("receivedMessages", [])
        if received:
            ack = {"ackIds": [m["ackId"] for m in received]}
            self._request("POST", f"/v1/{subscription}:acknowledge", ack)
        return [m["message"] for m in received]

    def create_pull_subscription(
        self, project: str, subscription: str, topic: str, *, ordering: bool = True
    ) -> str:
        name = f"projects/{project}/subscriptions/{subscription}"
        body = {
            "topic": _full(project, "topics", topic),
            "enableMessageOrdering": ordering,
        }
        self._request("PUT", f"/v1/{name}", body)
        return name


def _full(project: str, kind: str, name: str) -> str:
    return name if name.startswith("projects/") else f"projects/{project}/{kind}/{name}"


def push_endpoint(notifier_url: str, topic_name: str) -> str:
    """Where a push subscription delivers to the notifier: functions-framework turns a raw
    Pub/Sub push into the `messagePublished` CloudEvent Eventarc would send, and names the
    topic in the event's source when the URL path names it."""
    return notifier_url.rstrip("/") + "/" + topic_name
