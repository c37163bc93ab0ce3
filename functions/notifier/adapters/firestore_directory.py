"""Reads the app's Firestore collections to find who to ring. Fetch only; rules live in
functions.core.recipients and functions.core.tenancy.

Directory mode (the default): the PBX directory (`pbx_tenants`, a cached copy, see
tenant_directory.py) names the members who may be rung for a call from this PBX to this number;
only their `my_extensions` are read (`userId in` the members, 30 per query), and each
`accountCode` is compared to the dialled number as a normalized number, whatever its spelling.
User-documents mode: the relay's `relay_access` record (written by the connector: which users
name the relay, and whose settings it accepted) gives the users; their `my_extensions` are
compared as normalized numbers the same way. A relay without a record rings nobody.
Then the users' documents (users, settings, forwarding; one batched get) and their `fcm_tokens`
(one `in` query per 30 users), in parallel.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from functions.adapters.relay_access import RelayAccessReader
from functions.adapters.tenant_directory import TenantDirectory
from functions.core.call_event import CallEvent
from functions.core.numbers import e164, normalize
from functions.core.recipients import (
    Doc,
    Selection,
    Skip,
    forward_doc_id,
    matching_extensions,
    select_recipients,
)
from functions.core.relay_candidates import RelayAccess, filter_by_access

USERS = "users"
EXTENSIONS = "my_extensions"
TOKENS = "fcm_tokens"
SETTINGS = "user_notification_settings"
FORWARDS = "call_forward_info"
IN_LIMIT = 30
CACHE_ENTRIES = 10_000


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class FirestoreDirectory:
    """With `cache_seconds` > 0, the recipients of one (number, PBX) are reused for that long:
    a busy company number costs one lookup per window instead of one per call (the lookup is
    the largest part of the notifier's latency, docs/benchmarks.md). An admin's change (a new
    device, pushes turned off) applies within the window; a token found dead is dropped at once.
    """

    def __init__(
        self,
        client: firestore.Client,
        pool: ThreadPoolExecutor,
        region: str,
        *,
        cache_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        tenants: TenantDirectory | None = None,
        relay_access: RelayAccessReader | None = None,
        ring_dcmiws: bool = False,
    ) -> None:
        """With `tenants`, directory mode; without, user-documents mode, where `relay_access`
        (by default a reader caching for `cache_seconds`) says who names each relay and whose
        own relay settings it accepted: only they are rung. `ring_dcmiws`: users who listen to
        the relay in the app are rung too (the app's endpoints; the notifier skips them)."""
        self.client = client
        self.tenants = tenants
        self.ring_dcmiws = ring_dcmiws
        if tenants is None and relay_access is None:
            relay_access = RelayAccessReader(client, cache_seconds)
        self.relay_access = relay_access
        self.pool = pool
        self.region = region
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[tuple[str, str, int, int], tuple[float, Selection]] = {}
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Open the gRPC channel (DNS, TLS, HTTP/2, access token) before the first call needs
        it: one read of a document that does not exist; in directory mode, the directory's
        first copy instead."""
        if self.tenants is not None:
            self.tenants.refresh()
            return
        self.client.collection("my_extensions").document("_warm-up").get(timeout=10)

    def recipients_for(self, event: CallEvent) -> Selection:
        if self.cache_seconds <= 0:
            return self._lookup(event)
        # A change of the directory makes every cached answer stale at once.
        version = self._tenant_version()
        key = (normalize(event.dialled_number, self.region), event.relay, event.server_id, version)
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1]
        selection = self._lookup(event)
        with self._lock:
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()  # bounded; a cold lookup is only a little slower
            self._cache[key] = (now, selection)
        return selection

    def _forget_token_doc(self, doc_id: str) -> None:
        with self._lock:
            for key, (_, selection) in list(self._cache.items()):
                if any(d.doc_id == doc_id for r in selection.recipients for d in r.devices):
                    del self._cache[key]

    def _tenant_version(self) -> int:
        if self.tenants is None:
            return 0
        self.tenants.index()  # refreshes when due
        return self.tenants.version

    def _lookup(self, event: CallEvent) -> Selection:
        selection = Selection()
        access: RelayAccess | None = None
        if self.tenants is not None:
            matched = self._members_claiming(event, selection)
        elif (
            self.relay_access is not None
            and (access := self.relay_access.get(event.relay)) is not None
        ):
            matched = self._relay_users_claiming(event, access, selection)
        else:
            # No connector has said who may use this relay: nobody is rung from it. (The
            # connector records relay_access before it reads a relay's first frame; deploy it
            # before a notifier of this version.)
            selection.skipped.append(Skip(event.call_key, "relay_not_recorded"))
            return selection
        if not matched:
            return selection
        user_ids = sorted(matched)
        forward_ids = [
            forward_doc_id(uid, ext.get("extension"))
            for uid, ext in matched.items()
            if isinstance(ext.get("extension"), str)
        ]
        docs_future = self.pool.submit(self._get_docs, user_ids, forward_ids)
        tokens_by_user = self._tokens(user_ids)
        users, settings, forwards = docs_future.result()
        selection = select_recipients(
            matched,
            users,
            settings,
            forwards,
            tokens_by_user,
            relay=event.relay,
            server_id=event.server_id,
            selection=selection,
            check_relay=self.tenants is None,
            ring_dcmiws=self.ring_dcmiws,
        )
        if access is not None:  # user-documents mode: only those whose settings it accepted
            selection = filter_by_access(selection, access)
        return selection

    def _members_claiming(self, event: CallEvent, selection: Selection) -> dict[str, Doc]:
        """Directory mode: the extensions, claiming the dialled number, of the members a tenant
        lets ring for this PBX and number. Nobody else's documents are even read."""
        assert self.tenants is not None
        number = e164(event.dialled_number, self.region)
        if number is None:
            selection.skipped.append(Skip(event.call_key, "dialled_number_not_a_phone_number"))
            return {}
        candidates = self.tenants.index().candidates(event.relay, event.server_id, number)
        selection.skipped.extend(Skip(subject, why) for subject, why in candidates.skipped)
        if not candidates.users:
            if not candidates.tenants and not candidates.skipped:
                selection.skipped.append(Skip(event.call_key, "no_tenant_for_pbx_and_number"))
            return {}
        extensions = self._extensions_of(candidates.users)
        return matching_extensions(extensions, number, self.region, selection, candidates.users)

    def _relay_users_claiming(
        self, event: CallEvent, access: RelayAccess, selection: Selection
    ) -> dict[str, Doc]:
        """User-documents mode with the relay's relay_access record: the extensions, claiming
        the dialled number (compared as E.164, whatever its spelling), of the users who name
        this relay. Users naming other relays are not even read."""
        number = e164(event.dialled_number, self.region)
        if number is None:
            selection.skipped.append(Skip(event.call_key, "dialled_number_not_a_phone_number"))
            return {}
        # everyone naming the relay: those it did not accept are skipped afterwards, with why
        users = access.users | access.refused | access.unproven
        extensions = self._extensions_of(users)
        return matching_extensions(extensions, number, self.region, selection, frozenset(users))

    def _extensions_of(self, user_ids: Iterable[str]) -> list[tuple[str, Doc]]:
        """Every `my_extensions` document of these users (`userId in`, 30 per query)."""
        extensions: list[tuple[str, Doc]] = []
        for chunk in _chunks(sorted(user_ids), IN_LIMIT):
            query = self.client.collection(EXTENSIONS).where(
                filter=FieldFilter("userId", "in", list(chunk))
            )
            extensions += [(snap.id, snap.to_dict() or {}) for snap in query.stream()]
        return extensions

    def _get_docs(
        self, user_ids: list[str], forward_ids: list[str]
    ) -> tuple[dict[str, Doc | None], dict[str, Doc | None], dict[str, Doc | None]]:
        refs = [self.client.collection(USERS).document(uid) for uid in user_ids]
        refs += [self.client.collection(SETTINGS).document(uid) for uid in user_ids]
        refs += [self.client.collection(FORWARDS).document(fid) for fid in forward_ids]
        found: dict[str, dict[str, Doc | None]] = defaultdict(dict)
        for snap in self.client.get_all(refs):
            collection = snap.reference.parent.id
            found[collection][snap.id] = snap.to_dict() if snap.exists else None
        return dict(found[USERS]), dict(found[SETTINGS]), dict(found[FORWARDS])

    def _tokens(self, user_ids: list[str]) -> dict[str, list[tuple[str, Doc]]]:
        by_user: dict[str, list[tuple[str, Doc]]] = defaultdict(list)
        for chunk in _chunks(user_ids, IN_LIMIT):
            query = self.client.collection(TOKENS).where(
                filter=FieldFilter("userId", "in", list(chunk))
            )
            for snap in query.stream():
                doc: dict[str, Any] = snap.to_dict() or {}
                by_user[doc.get("userId", "")].append((snap.id, doc))
        return by_user

    def delete_token_doc(self, doc_id: str) -> None:
        self._forget_token_doc(doc_id)
        self.client.collection(TOKENS).document(doc_id).delete()
