"""Finds the relays to watch: a live Firestore listener on `users`, plus PBX_RELAYS.

Each users document names the relay its app connects to (see functions.core.relays). The
listener runs on the client library's thread; every change hands the full desired set to the
connector's loop, which starts and stops connections to match: no restart needed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from functions.core.relays import RelayConfigError, RelaySpec, relay_from_user
from functions.log import fields

log = logging.getLogger("connector.relays")

DesiredRelays = dict[str, RelaySpec]  # endpoint -> how to connect


def merge_relays(static: Iterable[RelaySpec], by_user: dict[str, RelaySpec]) -> DesiredRelays:
    """One connection per relay endpoint. When users disagree on how to reach one endpoint
    (scheme or credentials), the static list wins, then the lowest user id: deterministic, so
    every connector instance picks the same."""
    desired: DesiredRelays = {}
    for spec in static:
        desired.setdefault(spec.endpoint, spec)
    for user_id in sorted(by_user):
        spec = by_user[user_id]
        kept = desired.setdefault(spec.endpoint, spec)
        if kept != spec:
            log.debug("relay settings differ between users", extra=fields(relay=spec.endpoint))
    return desired


class UsersRelayWatcher:
    def __init__(
        self,
        client: Any,
        static: Iterable[RelaySpec],
        on_change: Callable[[DesiredRelays], None],
    ) -> None:
        self.client = client
        self.static = tuple(static)
        self.on_change = on_change
        self._by_user: dict[str, RelaySpec] = {}
        self._watch: Any = None
        self._seen_first = False

        self.restarts = 0

    def start(self) -> None:
        self._seen_first = False
        self._watch = self.client.collection("users").on_snapshot(self._on_snapshot)

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.unsubscribe()
            self._watch = None

    def ensure_listening(self) -> bool:
        """Listen again if the client library gave the listener up. It retries a broken Listen
        stream by itself for most errors, but ends the listener for good on others (seen on
        Google's emulator: a ListenResponse that failed to decode), and then no change to
        `users` would ever reach us. True when a new listener was started."""
        watch = self._watch
        if watch is None or not getattr(watch, "_closed", False):
            return False
        self.restarts += 1
        log.warning(
            "users listener had ended; listening again", extra=fields(restarts=self.restarts)
        )
        self.start()
        return True

    def _on_snapshot(self, docs: list[Any], changes: list[Any], read_time: Any) -> None:
        if self._seen_first and not changes:
            return  # nothing changed (a listener that resumed re-sends what it had)
        self._seen_first = True
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
        self._by_user = by_user
        self.on_change(merge_relays(self.static, by_user))
