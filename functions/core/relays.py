"""Relay endpoints: where a PBX's amiws relay listens, from a `users` document or a URL.

The relay's identity (the PBX identity together with amiws' server_id) is its lower-cased
`host:port`; scheme and credentials are how to connect, not who it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 7099


class RelayConfigError(ValueError):
    """A users document or URL whose relay fields cannot be used."""


@dataclass(frozen=True, slots=True)
class RelaySpec:
    host: str
    port: int = DEFAULT_PORT
    tls: bool = False
    path: str = ""
    auth_id: str = ""
    auth_password: str = field(default="", repr=False)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Connect URL without credentials (safe to log)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}{self.path}"


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _port(value: Any) -> int | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, int | float) and int(value) == value:
        port = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        port = int(value.strip())
    else:
        raise RelayConfigError(f"port must be a number, got {type(value).__name__}")
    if not 0 < port < 65536:
        raise RelayConfigError(f"port {port} out of range")
    return port


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    if value is None:
        return None
    raise RelayConfigError(f"SSL flag must be a boolean, got {type(value).__name__}")


def relay_from_url(url: str, *, auth_id: str = "", auth_password: str = "") -> RelaySpec:
    parts = urlsplit(url.strip())
    if parts.scheme not in {"ws", "wss"} or not parts.hostname:
        raise RelayConfigError("relay URL must be ws:// or wss:// with a host")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise RelayConfigError("relay URL has a bad port") from None
    return RelaySpec(
        host=parts.hostname.lower(),
        port=port,
        tls=parts.scheme == "wss",
        path=parts.path if parts.path not in {"", "/"} else "",
        auth_id=unquote(parts.username or "") or auth_id,
        auth_password=unquote(parts.password or "") or auth_password,
    )


def relay_from_user(doc: Mapping[str, Any]) -> RelaySpec | None:
    """The relay a user's app connects to: the app's current field names, else the seed's older
    ones; None when the user has no relay. Raises RelayConfigError on unusable values."""
    host = _text(doc.get("websocketServerUrl")) or _text(doc.get("serverAddress"))
    if not host:
        return None
    port = _port(doc.get("websocketServerPort"))
    if port is None:
        port = _port(doc.get("serverPort"))
    tls = _flag(doc.get("websocketUseSSL"))
    if tls is None:
        tls = _flag(doc.get("serverSSL"))
    auth_id = _text(doc.get("websocketHttpAuthId"))
    auth_password = _text(doc.get("websocketHttpAuthPassword"))
    if "://" not in host:
        host = f"{'wss' if tls else 'ws'}://{host}"
    spec = relay_from_url(host, auth_id=auth_id, auth_password=auth_password)
    # Explicit port and SSL fields win over what a full URL in the host field spells.
    return RelaySpec(
        host=spec.host,
        port=port or spec.port,
        tls=spec.tls if tls is None else tls,
        path=spec.path,
        auth_id=spec.auth_id,
        auth_password=spec.auth_password,
    )


def server_id_of_user(doc: Mapping[str, Any]) -> int:
    """`amiServerId`: which PBX behind the relay (amiws' server_id); 1 when absent."""
    value = doc.get("amiServerId")
    if value is None or value == "":
        return 1
    if isinstance(value, bool):
        raise RelayConfigError("amiServerId must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise RelayConfigError(f"amiServerId must be an integer, got {value!r}"[:80])
