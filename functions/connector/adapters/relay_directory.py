"""Finds the relays to watch: a live Firestore listener, plus PBX_RELAYS.

Directory mode (the default): `TenantRelayWatcher` listens on `pbx_tenants`, the backend-owned
PBX directory; each tenant's `pbx` entries name the relays and their credentials (inline, or a
Secret Manager version read with the connector's identity). Users' own relay fields are ignored.
User-documents mode: `UsersRelayWatcher` listens on `users`, whose documents name the relay
their app connects to (see functions.core.relays); every distinct way users name one endpoint is
a candidate the connector may try (functions.core.relay_candidates), so the settings the relay
accepts win, not those of whoever sorts first.

Listeners run on the client library's thread; every change hands the full desired set to the
connector's loop, which starts and stops connections to match: no restart needed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from functions.adapters.tenant_directory import TenantParser
from functions.connector.adapters.secrets import SecretReader, SecretUnavailable
from functions.core.relay_candidates import RelayCandidates, relay_candidates
from functions.core.relays import RelayConfigError, RelaySpec, relay_from_user
from functions.core.tenancy import TENANTS, Pbx
from functions.log import fields

log = logging.getLogger("connector.relays")

# endpoint -> how to connect; in user-documents mode the candidate settings, in order
DesiredRelays = dict[str, RelaySpec | RelayCandidates]


def merge_relays(static: Iterable[RelaySpec], by_user: dict[str, RelaySpec]) -> DesiredRelays:
    """One connection per relay endpoint. When users disagree on how to reach one endpoint
    (scheme or credentials), the static list wins, then the lowest user id: deterministic, so
    every connector instance picks the same. (User-documents mode keeps every user's settings
    as candidates instead: functions.core.relay_candidates.)"""
    desired: DesiredRelays = {}
    for spec in static:
        desired.setdefault(spec.endpoint, spec)
    for user_id in sorted(by_user):
        spec = by_user[user_id]
        kept = desired.setdefault(spec.endpoint, spec)
        if kept != spec:
            log.debug("relay settings differ between users", extra=fields(relay=spec.endpoint))
    return desired


class _Watcher:
    """A live listener on one collection, started again if the client library gives it up."""

    collection = ""

    def __init__(
        self,
        client: Any,
        static: Iterable[RelaySpec],
        on_change: Callable[[DesiredRelays], None],
    ) -> None:
        self.client = client
        self.static = tuple(static)
        self.on_change = on_change
        self._watch: Any = None
        self._seen_first = False
        self.restarts = 0

    def start(self) -> None:
        self._seen_first = False
        self._watch = self.client.collection(self.collection).on_snapshot(self._on_snapshot)

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.unsubscribe()
            self._watch = None

    def ensure_listening(self) -> bool:
        """Listen again if the client library gave the listener up. It retries a broken Listen
        stream by itself for most errors, but ends the listener for good on others (seen on
        Google's emulator: a ListenResponse that failed to decode), and then no change would
        ever reach us. True when a new listener was started."""
        watch = self._watch
        if watch is None or not getattr(watch, "_closed", False):
            return False
        self.restarts += 1
        log.warning(
            "listener had ended; listening again",
            extra=fields(collection=self.collection, restarts=self.restarts),
        )
        self.start()
        return True

    def tick(self) -> None:
        """Called every few seconds by the connector."""
        self.ensure_listening()

    def _on_snapshot(self, docs: list[Any], changes: list[Any], read_time: Any) -> None:
        if self._seen_first and not changes:
            return  # nothing changed (a listener that resumed re-sends what it had)
        self._seen_first = True
        self._apply(docs)

    def _apply(self, docs: list[Any]) -> None:
        raise NotImplementedError


class UsersRelayWatcher(_Watcher):
    """User-documents mode: the relays the users' own documents name, each with its candidate
    settings (RelayCandidates), PBX_RELAYS' first."""

    collection = "users"

    def __init__(
        self,
        client: Any,
        static: Iterable[RelaySpec],
        on_change: Callable[[DesiredRelays], None],
    ) -> None:
        super().__init__(client, static, on_change)
        self._dropped: dict[str, int] = {}  # endpoint -> users beyond MAX_CANDIDATES, logged

    def _apply(self, docs: list[Any]) -> None:
        by_user: dict[str, RelaySpec] = {}
        for snap in docs:
            try:
                spec = relay_from_user(snap.to_dict() or {})
            except RelayConfigError as exc:
                log.warning(
                    "users document has unusable relay fields",
                    extra=fields(user_id=snap.id, reason=str(exc)),
                )
                continue
            if spec is not None:
                by_user[snap.id] = spec
        desired = relay_candidates(self.static, by_user)
        for endpoint, relay in desired.items():
            dropped = len(relay.dropped_users)
            if dropped and dropped != self._dropped.get(endpoint, 0):
                log.warning(
                    "relay named in too many different ways; the rest are never tried",
                    extra=fields(
                        relay=endpoint, tried=len(relay.candidates), unproven_users=dropped
                    ),
                )
            self._dropped[endpoint] = dropped
        self.on_change(desired)


SECRET_RETRY_SECONDS = 60.0
# Relays whose credentials live in Secret Manager are re-read this often, so that a rotated
# secret (named `versions/latest`) reaches the connection without a restart.
SECRET_REFRESH_SECONDS = 300.0


class TenantRelayWatcher(_Watcher):
    """Directory mode: the relays named by `pbx_tenants`, with the credentials given there. A
    relay whose secret cannot be read is left out (logged once per failure) and tried again
    every SECRET_RETRY_SECONDS; the others connect. Secrets are read again every
    SECRET_REFRESH_SECONDS (through the reader's cache): a rotated one reconnects the relay."""

    collection = TENANTS

    def __init__(
        self,
        client: Any,
        static: Iterable[RelaySpec],
        on_change: Callable[[DesiredRelays], None],
        *,
        region: str,
        secrets: SecretReader,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(client, static, on_change)
        self.parser = TenantParser(region)
        self.secrets = secrets
        self.clock = clock
        self._docs: list[Any] = []
        self._secret_failures: dict[str, str] = {}  # secret name -> the failure last logged
        self._retry_at: float | None = None
        self._lock = threading.Lock()

    def _apply(self, docs: list[Any]) -> None:
        with self._lock:
            self._docs = list(docs)
            self._publish()

    def tick(self) -> None:
        super().tick()
        if self._retry_at is not None and self.clock() >= self._retry_at:
            with self._lock:
                self._publish()

    def _publish(self) -> None:
        index = self.parser.index(self._docs)
        for endpoint in index.disagreements():
            log.warning(
                "tenants name one relay with different settings; the lowest tenant id's are used",
                extra=fields(relay=endpoint),
            )
        by_endpoint: dict[str, RelaySpec] = {}
        failed = False
        relays = index.relays()
        for endpoint, pbx in relays.items():
            spec = self._with_credentials(pbx)
            if spec is None:
                failed = True
            else:
                by_endpoint[endpoint] = spec
        uses_secrets = any(pbx.auth_secret for pbx in relays.values())
        if failed:
            self._retry_at = self.clock() + SECRET_RETRY_SECONDS
        elif uses_secrets:
            self._retry_at = self.clock() + SECRET_REFRESH_SECONDS
        else:
            self._retry_at = None
        self.on_change(merge_relays(self.static, by_endpoint))

    def _with_credentials(self, pbx: Pbx) -> RelaySpec | None:
        if not pbx.auth_secret:
            return pbx.relay
        try:
            auth_id, password = self.secrets.credentials(pbx.auth_secret)
        except SecretUnavailable as exc:
            if self._secret_failures.get(pbx.auth_secret) != str(exc):
                self._secret_failures[pbx.auth_secret] = str(exc)
                log.error(
                    "relay credentials unavailable; relay left out until they can be read",
                    extra=fields(relay=pbx.endpoint, reason=str(exc)),
                )
            return None
        if self._secret_failures.pop(pbx.auth_secret, None) is not None:
            log.info("relay credentials readable again", extra=fields(relay=pbx.endpoint))
        return replace(pbx.relay, auth_id=auth_id, auth_password=password)
