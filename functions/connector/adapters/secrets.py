"""Relay credentials from Secret Manager: a PBX directory entry names a secret *version*
(`projects/P/secrets/S/versions/V`) holding `id:password`, read with the connector's own
identity (Terraform grants it secretAccessor on those secrets). Values are never logged."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class SecretUnavailable(RuntimeError):
    """The secret could not be read or does not hold `id:password`; the message names the
    secret and the failure, never the value."""


class SecretReader(Protocol):
    def credentials(self, version_name: str) -> tuple[str, str]: ...


def split_credentials(version_name: str, payload: bytes) -> tuple[str, str]:
    text = payload.decode("utf-8", errors="strict").strip()
    auth_id, sep, password = text.partition(":")
    if not sep or not auth_id or not password:
        raise SecretUnavailable(f"{version_name} does not hold id:password")
    return auth_id, password


class SecretManagerReader:
    """google-cloud-secret-manager, created on first use; values cached for `ttl` seconds so a
    rotated secret is picked up without a restart (name `versions/latest` to follow rotations)."""

    def __init__(self, ttl: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._client = None
        self._cache: dict[str, tuple[float, tuple[str, str]]] = {}
        self._lock = threading.Lock()

    def credentials(self, version_name: str) -> tuple[str, str]:
        now = self.clock()
        with self._lock:
            hit = self._cache.get(version_name)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        try:
            if self._client is None:
                from google.cloud import secretmanager

                self._client = secretmanager.SecretManagerServiceClient()
            answer = self._client.access_secret_version(name=version_name, timeout=10)
        except Exception as exc:  # any API or auth failure: report it, never the value
            raise SecretUnavailable(f"{version_name}: {type(exc).__name__}") from None
        value = split_credentials(version_name, answer.payload.data)
        with self._lock:
            self._cache[version_name] = (now, value)
        return value
