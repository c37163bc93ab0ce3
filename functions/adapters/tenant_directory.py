"""Reads the PBX directory (`pbx_tenants`) from Firestore; the rules are functions.core.tenancy's.

`TenantParser` turns documents into a `TenantIndex`, logging each unusable document once per
version of it (its update time) with its path: a bad tenant is skipped, the others ring on.

`TenantDirectory` is the notifier's view: the whole collection (one document per company),
re-read in the background once the copy is `refresh_after` seconds old, and read before the call
when it is older than `max_age` (an instance that was idle). An admin's change (a member removed
or suspended, a tenant turned off, a number removed) therefore applies to calls within `max_age`
(15 s) at most; `version` changes whenever the directory did, so caches built on it can tell.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from functions.core.tenancy import TENANTS, Tenant, TenantError, TenantIndex, parse_tenant
from functions.log import fields
from functions.settings import Settings

log = logging.getLogger("tenants")

REFRESH_AFTER = 5.0
MAX_AGE = 15.0


class TenantParser:
    def __init__(self, region: str) -> None:
        self.region = region
        self._reported: dict[str, Any] = {}  # doc id -> the version last logged as unusable

    def index(self, snapshots: Iterable[Any]) -> TenantIndex:
        tenants: list[Tenant] = []
        seen: set[str] = set()
        for snap in snapshots:
            seen.add(snap.id)
            tenant = self._parse(snap)
            if tenant is not None:
                tenants.append(tenant)
        for gone in set(self._reported) - seen:
            del self._reported[gone]
        return TenantIndex.build(tenants)

    def _parse(self, snap: Any) -> Tenant | None:
        version = getattr(snap, "update_time", None)
        path = f"{TENANTS}/{snap.id}"
        try:
            tenant = parse_tenant(snap.id, snap.to_dict() or {}, self.region)
        except TenantError as exc:
            if self._reported.get(snap.id) != ("bad", version):
                self._reported[snap.id] = ("bad", version)
                log.error("pbx_tenants document skipped", extra=fields(path=path, reason=str(exc)))
            return None
        if tenant.bad_numbers and self._reported.get(snap.id) != ("numbers", version):
            self._reported[snap.id] = ("numbers", version)
            log.warning(
                "pbx_tenants numbers that are not phone numbers were left out",
                extra=fields(path=path, count=len(tenant.bad_numbers)),
            )
        elif not tenant.bad_numbers:
            self._reported.pop(snap.id, None)
        return tenant


class TenantDirectory:
    def __init__(
        self,
        client: Any,
        region: str,
        pool: ThreadPoolExecutor,
        *,
        refresh_after: float = REFRESH_AFTER,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.pool = pool
        self.parser = TenantParser(region)
        self.refresh_after = refresh_after
        self.max_age = max_age
        self.clock = clock
        self.version = 0
        self._index: TenantIndex | None = None
        self._read_at = float("-inf")
        self._fingerprint: tuple[tuple[str, Any], ...] = ()
        self._refreshing = False
        self._lock = threading.Lock()

    @classmethod
    def for_settings(
        cls, client: Any, settings: Settings, pool: ThreadPoolExecutor
    ) -> TenantDirectory | None:
        """The services' copy of the directory (TENANT_CACHE_SECONDS old at most); None in
        user-documents mode."""
        if settings.tenancy != "directory":
            return None
        return cls(
            client,
            settings.default_region,
            pool,
            refresh_after=settings.tenant_cache_seconds / 3,
            max_age=settings.tenant_cache_seconds,
        )

    def index(self) -> TenantIndex:
        age = self.clock() - self._read_at
        if self._index is None or age >= self.max_age:
            return self.refresh()
        if age >= self.refresh_after:
            with self._lock:
                start = not self._refreshing
                self._refreshing = True
            if start:
                self.pool.submit(self._refresh_in_background)
        return self._index

    def _refresh_in_background(self) -> None:
        try:
            self.refresh()
        except Exception:
            log.exception("pbx_tenants refresh failed; the last copy stays in use")
        finally:
            with self._lock:
                self._refreshing = False

    def refresh(self) -> TenantIndex:
        started = self.clock()
        snapshots = list(self.client.collection(TENANTS).stream())
        fingerprint = tuple(sorted((s.id, getattr(s, "update_time", None)) for s in snapshots))
        index = self.parser.index(snapshots)
        with self._lock:
            if fingerprint != self._fingerprint or self._index is None:
                self._fingerprint = fingerprint
                self.version += 1
            self._index = index
            self._read_at = started
        return index
