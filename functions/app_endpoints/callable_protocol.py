"""Firebase's callable protocol over HTTPS, and the app's plain HTTPS replies, as plain values.

Callable (firebase.google.com/docs/functions/callable-reference): a POST with a JSON body
`{"data": ...}`, the caller's ID token in `Authorization: Bearer`, optionally the calling app
instance's FCM token in `Firebase-Instance-ID-Token`; the reply is 200 `{"result": ...}` or an
error `{"error": {"status": "PERMISSION_DENIED", "message": "..."}}` with its HTTP status. CORS
preflights are answered for the app's web build (bearer tokens, no cookies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

# Callable status (as firebase-functions names them) -> HTTP status, the protocol's table.
STATUS_HTTP = {
    "invalid-argument": 400,
    "failed-precondition": 400,
    "unauthenticated": 401,
    "permission-denied": 403,
    "not-found": 404,
    "already-exists": 409,
    "resource-exhausted": 429,
    "internal": 500,
    "unavailable": 503,
}
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": (
        "Authorization, Content-Type, Firebase-Instance-ID-Token, X-Firebase-AppCheck, "
        "X-Firebase-API-Key"
    ),
    "Access-Control-Max-Age": "3600",
}


class HttpRequest(Protocol):
    """What the endpoints read of functions-framework's (Flask's) request."""

    method: str
    headers: Mapping[str, str]
    content_type: str | None

    def get_data(self) -> bytes: ...


# What functions-framework (Flask) takes back: body, status, headers.
HttpReply = tuple[bytes, int, dict[str, str]]


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(CORS_HEADERS))

    def content(self) -> bytes:
        return b"" if self.body is None else orjson.dumps(self.body)

    def http(self) -> HttpReply:
        headers = dict(self.headers)
        if self.body is not None:
            headers["Content-Type"] = "application/json"
        return self.content(), self.status, headers


class BadCall(ValueError):
    """Not a callable request (method, content type or body)."""


@dataclass(frozen=True, slots=True)
class CallableRequest:
    data: Any
    id_token: str | None  # None: no Authorization header
    instance_token: str | None


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of `Authorization: Bearer <token>`, "" for any other Authorization value, None
    without the header."""
    value = headers.get("Authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def json_body(content_type: str, body: bytes) -> Any:
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise BadCall("Content-Type must be application/json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadCall("body is not JSON") from None


def decode_callable(
    method: str, headers: Mapping[str, str], content_type: str, body: bytes
) -> CallableRequest:
    if method != "POST":
        raise BadCall("callable functions take POST")
    payload = json_body(content_type, body)
    if not isinstance(payload, dict) or "data" not in payload:
        raise BadCall('body must be {"data": ...}')
    return CallableRequest(
        data=payload["data"],
        id_token=bearer(headers),
        instance_token=headers.get("Firebase-Instance-ID-Token") or None,
    )


def result(value: Any) -> Reply:
    return Reply(200, {"result": value})


def error(code: str, message: str) -> Reply:
    status = code.upper().replace("-", "_")
    return Reply(STATUS_HTTP.get(code, 500), {"error": {"status": status, "message": message}})


def preflight() -> Reply:
    return Reply(204)
