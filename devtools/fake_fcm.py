"""A local stand-in for FCM's HTTP v1 send endpoint (tests, ``make dev``, benchmarks).

firebase-admin has no public endpoint override; point it here with::

    svc = messaging._get_messaging_service(app)
    svc._fcm_url = f"{fake.url}/v1/projects/{project}/messages:send"

The app's credential must put ``Authorization: Bearer <anything>`` on requests (only
presence is checked). AnonymousCredentials do not: firebase-admin then gets a 401 and
fails trying to refresh them. Any 401 makes firebase-admin refresh the credential, so a
refreshable static-token credential is the safest choice.

Behaviour (FCM-shaped bodies, so firebase-admin maps them to the same exceptions):
- 401 UNAUTHENTICATED without a Bearer token.
- 400 INVALID_ARGUMENT for: not exactly one target (token, fid, topic, condition),
  unknown top-level fields, non-string ``data`` values or reserved data keys, a bad
  Android ``ttl`` or priority, and a payload over 4096 bytes. The size rule is stricter
  than FCM on purpose: it counts the compact JSON of the whole message but its target.
- Tokens (or fids) ``dead-*`` -> 404 UNREGISTERED; ``bad-*`` -> 400 INVALID_ARGUMENT.
- ``validate_only`` answers like FCM (``.../messages/fake_message_id``) and is not
  counted by :meth:`FakeFcmServer.sent_messages`.
- Per-target scripted :class:`Fault` queues, then normal answers; a global delay.

HTTP control API (for other processes): ``GET/DELETE /__fake/messages``,
``POST /__fake/script`` ``{"token": T, "faults": [{"status": 503, "error_code":
"UNAVAILABLE", "retry_after": 1}]}``, ``POST /__fake/delay`` ``{"seconds": 0.05}``,
``GET /__fake/health``.

CLI: ``python -m devtools.fake_fcm --port 9099``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import re
import secrets
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Self

__all__ = ["MAX_PAYLOAD_BYTES", "FakeFcmServer", "Fault"]

MAX_PAYLOAD_BYTES = 4096
_SEND_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")
_DURATION = re.compile(r"^\d+(\.\d{1,9})?s$")
_TOPIC = re.compile(r"^[a-zA-Z0-9\-_.~%]+$")
_MAX_TTL_SECONDS = 28 * 24 * 3600  # FCM's maximum: four weeks
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_REQUEST_FIELDS = {"message", "validate_only", "validateOnly"}
_MESSAGE_FIELDS = {
    "name", "data", "notification", "android", "webpush", "apns",
    "fcm_options", "fcmOptions", "token", "fid", "topic", "condition",
}  # fmt: skip
# firebase-admin 7.7 deprecates Message.token for Message.fid (installation IDs).
_TARGETS = ("token", "fid", "topic", "condition")
_RESERVED_DATA_KEYS = {"from", "notification", "message_type"}
_RECORDED_HEADERS = (
    "content-type", "user-agent", "x-goog-api-client",
    "x-goog-api-format-version", "x-firebase-client",
)  # fmt: skip
# google.rpc.Code names Google APIs put in error.status, by HTTP status.
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
    501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip
_DEFAULT_MESSAGES = {
    "UNREGISTERED": "Requested entity was not found.",
    "UNAVAILABLE": "The service is currently unavailable.",
    "INTERNAL": "Internal error encountered.",
    "QUOTA_EXCEEDED": "Quota exceeded for quota metric 'Messages sent'.",
    "SENDER_ID_MISMATCH": "SenderId mismatch",
    "THIRD_PARTY_AUTH_ERROR": "Auth error from APNS or Web Push Service",
    "INVALID_ARGUMENT": "Request contains an invalid argument.",
}


@dataclass(frozen=True)
class Fault:
    """One scripted error answer.

    ``error_code`` is the FCM errorCode put in the FcmError detail (None: no detail);
    ``retry_after`` becomes a ``Retry-After`` header in whole seconds; ``delay`` holds
    this one answer back (on top of the global delay), e.g. to provoke client timeouts.
    """

    status: int = 503
    error_code: str | None = "UNAVAILABLE"
    retry_after: int | None = None
    message: str | None = None
    delay: float = 0.0

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Fault:
        return cls(
            status=int(raw.get("status", 503)),
            error_code=raw.get("error_code", "UNAVAILABLE"),
            retry_after=None if raw.get("retry_after") is None else int(raw["retry_after"]),
            message=raw.get("message"),
            delay=float(raw.get("delay", 0.0)),
        )


class _Reply(Exception):
    """Raised inside validation to answer with an FCM error."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = "INVALID_ARGUMENT",
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.retry_after = retry_after


def _error_body(status: int, message: str, error_code: str | None) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if error_code:
        error["details"] = [{"@type": _FCM_ERROR_TYPE, "errorCode": error_code}]
    return {"error": error}


def _check_string_map(value: Any, field: str) -> None:
    if not isinstance(value, dict):
        raise _Reply(400, f"Invalid value at '{field}': expected an object of strings.")
    for key, item in value.items():
        if not isinstance(item, str):
            raise _Reply(
                400,
                f"Invalid value at '{field}[{key}].value' (TYPE_STRING), {json.dumps(item)}",
            )


def _validate(body: Any) -> tuple[dict[str, Any], str]:
    """Check a send request like FCM; return ``(message, target)`` or raise _Reply."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        raise _Reply(400, "Request must be a JSON object with a 'message' object.")
    unknown = sorted(body.keys() - _REQUEST_FIELDS)
    if unknown:
        raise _Reply(400, f'Invalid JSON payload received. Unknown name "{unknown[0]}".')
    message: dict[str, Any] = body["message"]
    unknown = sorted(message.keys() - _MESSAGE_FIELDS)
    if unknown:
        raise _Reply(
            400,
            f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'message'.",
        )
    targets = [k for k in _TARGETS if message.get(k) not in (None, "")]
    if len(targets) != 1:
        raise _Reply(400, "Exactly one of token, fid, topic or condition must be specified.")
    target = message[targets[0]]
    if not isinstance(target, str):
        raise _Reply(400, f"Invalid value at 'message.{targets[0]}' (TYPE_STRING)")
    if targets[0] == "topic" and not _TOPIC.match(target):
        raise _Reply(400, "Invalid topic name.")
    if "data" in message:
        _check_string_map(message["data"], "message.data")
        for key in message["data"]:
            if key in _RESERVED_DATA_KEYS or key.startswith(("google.", "gcm.")):
                raise _Reply(400, f"Invalid data payload key: {key}")
    notification = message.get("notification")
    if notification is not None:
        _check_string_map(notification, "message.notification")
    android = message.get("android")
    if android is not None:
        if not isinstance(android, dict):
            raise _Reply(400, "Invalid value at 'message.android'.")
        ttl = android.get("ttl")
        if ttl is not None:
            if not isinstance(ttl, str) or not _DURATION.match(ttl):
                raise _Reply(
                    400,
                    f"Invalid value at 'message.android.ttl' (type.googleapis.com/"
                    f"google.protobuf.Duration), Field 'ttl', Illegal duration format;"
                    f" {ttl!r}",
                )
            if float(ttl[:-1]) > _MAX_TTL_SECONDS:
                raise _Reply(400, "message.android.ttl must not exceed 4 weeks.")
        priority = android.get("priority")
        if priority is not None and str(priority).lower() not in ("normal", "high"):
            raise _Reply(400, f"Invalid value at 'message.android.priority', {priority!r}")
        if "data" in android:
            _check_string_map(android["data"], "message.android.data")
    apns = message.get("apns")
    if isinstance(apns, dict) and "headers" in apns:
        _check_string_map(apns["headers"], "message.apns.headers")
    payload = {k: v for k, v in message.items() if k not in _TARGETS}
    size = len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise _Reply(400, f"Message is too big: {size} bytes (limit {MAX_PAYLOAD_BYTES}).")
    if targets[0] in ("token", "fid"):
        if target.startswith("dead-"):
            raise _Reply(404, _DEFAULT_MESSAGES["UNREGISTERED"], "UNREGISTERED")
        if target.startswith("bad-"):
            raise _Reply(400, "The registration token is not a valid FCM registration token")
    return message, target


class _Request:
    """One parsed HTTP/1.1 request; header names lower-cased."""

    __slots__ = ("body", "headers", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body


_Answer = tuple[int, Any, dict[str, str]]


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """Read one request off a keep-alive connection; None at a clean EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise ConnectionError("truncated request head") from None
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += await reader.readexactly(size + 2)
            if size == 0:
                break
            del body[-2:]
        return _Request(method, path, headers, bytes(body[:-2]))
    length = int(headers.get("content-length") or 0)
    return _Request(method, path, headers, await reader.readexactly(length))


def _encode_response(status: int, body: Any, headers: dict[str, str]) -> bytes:
    raw = json.dumps(body, ensure_ascii=False).encode()
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json; charset=UTF-8",
        f"Content-Length: {len(raw)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + raw


def _not_found(path: str) -> _Answer:
    return 404, _error_body(404, f"Not found: {path}", None), {}


class FakeFcmServer:
    """FCM HTTP v1 ``messages:send`` on a local port; thread-safe; see the module doc.

    Each recorded request is a dict: ``time`` (``time.time()`` at receipt), ``method``,
    ``path``, ``project``, ``authorized`` (a Bearer token was present), ``headers`` (a
    lower-cased subset), ``body`` (parsed JSON or None), ``target`` (token, fid, topic,
    condition or None), ``validate_only``, ``status`` and ``response`` (JSON answered).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        on_request: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._address = (host, port)
        self._on_request = on_request
        self._cond = threading.Condition()
        self._records: list[dict[str, Any]] = []
        self._sent: list[dict[str, Any]] = []
        self._scripts: dict[str, deque[Fault]] = {}
        self._delay = 0.0
        self._bound: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    # lifecycle -----------------------------------------------------------------
    # One asyncio loop in one thread serves every connection: a thread per
    # connection made 500 concurrent requests take seconds, all spent fighting for
    # the GIL to start threads, when the client runs in the same process.
    def start(self) -> Self:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name="fake-fcm", daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise TimeoutError("fake FCM did not start within 10 s")
        if failure:
            self._thread.join(5)
            self._thread = None
            raise failure[0]
        return self

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        asyncio.run(self._serve(ready, failure))

    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await self._connection(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, ValueError):
                pass  # a client hung up or spoke garbage: drop just that connection
            except asyncio.CancelledError:
                pass  # stopping; ending normally keeps asyncio 3.11 from logging it
            finally:
                tasks.discard(task)
                writer.close()

        try:
            server = await asyncio.start_server(
                on_connection, *self._address, backlog=1024, reuse_address=True
            )
        except OSError as exc:
            failure.append(exc)
            ready.set()
            return
        self._bound = server.sockets[0].getsockname()[:2]
        ready.set()
        await self._stopping.wait()
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._bound is None or self._thread is None:
            raise RuntimeError("FakeFcmServer is not started")
        return f"http://{self._bound[0]}:{self._bound[1]}"

    def send_url(self, project: str) -> str:
        """The URL to put in firebase-admin's ``_fcm_url`` for ``project``."""
        return f"{self.url}/v1/projects/{project}/messages:send"

    # control -------------------------------------------------------------------
    def script(self, token: str, faults: Iterable[Fault]) -> None:
        """Queue error answers for requests to ``token`` (or a topic or condition)."""
        with self._cond:
            self._scripts.setdefault(token, deque()).extend(faults)

    def set_delay(self, seconds: float) -> None:
        """Hold every send answer back this long (per request, concurrently)."""
        with self._cond:
            self._delay = max(0.0, float(seconds))

    def clear(self) -> None:
        """Forget recorded requests, scripts and the delay."""
        with self._cond:
            self._records.clear()
            self._sent.clear()
            self._scripts.clear()
            self._delay = 0.0

    # inspection ----------------------------------------------------------------
    def requests(self) -> list[dict[str, Any]]:
        with self._cond:
            return copy.deepcopy(self._records)

    def sent_messages(self) -> list[dict[str, Any]]:
        """The ``message`` objects FCM delivered: 200 answers, not validate_only."""
        with self._cond:
            return copy.deepcopy(self._sent)

    def wait_for(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until ``n`` messages were sent and return them; else TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._sent) >= n, timeout=timeout):
                raise TimeoutError(f"{len(self._sent)} of {n} FCM messages after {timeout}s")
            return copy.deepcopy(self._sent)

    # request handling ----------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await _read_request(reader)
            if request is None:
                return
            received = time.time()
            if request.headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if request.path.startswith("/__fake/"):
                status, body, headers = self._control(request)
            elif request.method == "POST":
                status, body, headers = await self._send(received, request)
            else:
                status, body, headers = _not_found(request.path)
            closing = request.headers.get("connection", "").lower() == "close"
            if closing:
                headers["Connection"] = "close"
            writer.write(_encode_response(status, body, headers))
            await writer.drain()
            if closing:
                return

    def _control(self, request: _Request) -> _Answer:
        route = (request.method, request.path.split("?", 1)[0])
        try:
            if route == ("GET", "/__fake/messages"):
                return 200, self.requests(), {}
            if route == ("DELETE", "/__fake/messages"):
                self.clear()
                return 200, {}, {}
            if route == ("GET", "/__fake/health"):
                return 200, {"ok": True}, {}
            if route == ("POST", "/__fake/script"):
                body = json.loads(request.body)
                faults = [Fault.from_json(raw) for raw in body["faults"]]
                self.script(body["token"], faults)
                return 200, {}, {}
            if route == ("POST", "/__fake/delay"):
                self.set_delay(float(json.loads(request.body)["seconds"]))
                return 200, {}, {}
        except (ValueError, KeyError, TypeError) as exc:
            return 400, _error_body(400, f"Bad control request: {exc!r}", None), {}
        return _not_found(request.path)

    async def _send(self, received: float, request: _Request) -> _Answer:
        auth = request.headers.get("authorization", "")
        record: dict[str, Any] = {
            "time": received,
            "method": request.method,
            "path": request.path,
            "project": None,
            "authorized": auth.startswith("Bearer ") and len(auth) > len("Bearer "),
            "bearer": auth.removeprefix("Bearer "),  # a fake's token: lets tests see refreshes
            "headers": {h: request.headers[h] for h in _RECORDED_HEADERS if h in request.headers},
            "body": None,
            "target": None,
            "validate_only": False,
        }
        reply_headers: dict[str, str] = {}
        message: dict[str, Any] | None = None
        with self._cond:
            delay = self._delay
        try:
            match = _SEND_PATH.match(request.path.split("?", 1)[0])
            if match is None:
                raise _Reply(404, f"Not found: {request.path}", None)
            record["project"] = match["project"]
            try:
                body = json.loads(request.body)
            except ValueError as exc:
                body, bad_json = None, exc
            else:
                bad_json = None
            record["body"] = body
            if not record["authorized"]:
                reply_headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
                raise _Reply(
                    401,
                    "Request is missing required authentication credential. Expected "
                    "OAuth 2 access token, login cookie or other valid authentication "
                    "credential.",
                    None,
                )
            if bad_json is not None:
                raise _Reply(400, f"Invalid JSON payload received. {bad_json}", None)
            if isinstance(body, dict) and isinstance(body.get("message"), dict):
                msg = body["message"]
                record["target"] = next((msg[k] for k in _TARGETS if msg.get(k)), None)
                record["validate_only"] = bool(
                    body.get("validate_only", body.get("validateOnly", False))
                )
            fault = self._next_fault(record["target"])
            if fault is not None:
                delay += fault.delay
                raise _Reply(
                    fault.status,
                    fault.message or _DEFAULT_MESSAGES.get(fault.error_code or "", "Error."),
                    fault.error_code,
                    fault.retry_after,
                )
            message, _ = _validate(body)
            if record["validate_only"]:
                name = f"projects/{record['project']}/messages/fake_message_id"
            else:
                name = (
                    f"projects/{record['project']}/messages/"
                    f"0:{int(received * 1e6)}%{secrets.token_hex(8)}"
                )
            status, response = 200, {"name": name}
        except _Reply as reply:
            if reply.retry_after is not None:
                reply_headers["Retry-After"] = str(reply.retry_after)
            status = reply.status
            response = _error_body(reply.status, reply.message, reply.error_code)
        if delay:
            await asyncio.sleep(delay)
        record["status"] = status
        record["response"] = response
        with self._cond:
            self._records.append(record)
            if status == 200 and message is not None and not record["validate_only"]:
                self._sent.append(message)
            self._cond.notify_all()
        if self._on_request is not None:
            self._on_request(record)
        return status, response, reply_headers

    def _next_fault(self, target: str | None) -> Fault | None:
        if not isinstance(target, str):
            return None
        with self._cond:
            queue = self._scripts.get(target)
            if not queue:
                return None
            fault = queue.popleft()
            if not queue:
                del self._scripts[target]
            return fault


# CLI -------------------------------------------------------------------------------
def _abbrev(token: Any) -> str:
    text = str(token)
    return text if len(text) <= 16 else f"{text[:8]}…{text[-4:]}"


def _print_request(record: dict[str, Any]) -> None:
    body = record.get("body") if isinstance(record.get("body"), dict) else {}
    msg = body.get("message") if isinstance(body.get("message"), dict) else {}
    note = msg.get("notification") if isinstance(msg.get("notification"), dict) else {}
    data = msg.get("data") if isinstance(msg.get("data"), dict) else {}
    parts = [f"push {record['status']}", f"to={_abbrev(record.get('target'))}"]
    if record["status"] != 200:
        details = record["response"]["error"].get("details") or [{}]
        parts.append(str(details[0].get("errorCode") or record["response"]["error"]["status"]))
    if record.get("validate_only"):
        parts.append("validate_only")
    if note:
        parts.append(f"{note.get('title', '')!r}/{note.get('body', '')!r}")
    parts.append(f"type={data.get('type', '-')} linkedid={data.get('linkedid', '-')}")
    print(" ".join(parts), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local fake of FCM's HTTP v1 send API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9099)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with FakeFcmServer(args.host, args.port, on_request=_print_request) as server:
        ready = {
            "service": "fake-fcm",
            "url": server.url,
            "send_url": server.send_url("{project}"),
        }
        print(json.dumps(ready), flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
