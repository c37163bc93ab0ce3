"""The doctor's network I/O: resolving relay hosts as the connector does, and (`--live`) trying
each relay's WebSocket upgrade with the credentials the connector would send.

Both go through the connector's own code: `system_resolver` (relay_address.py) resolves,
`check_relay_address` applies the address policy (RELAY_ALLOWED_NETWORKS), and the upgrade is
the relay client's own handshake (`RelayClient._open`, the same headers, TLS name and checked
address), closed at once: control frames only, nothing reaches the PBX.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from websockets.exceptions import InvalidStatus

from functions.connector.adapters.relay_address import (
    RESOLVE_TIMEOUT,
    Checked,
    check_relay_address,
    refusal_error,
    system_resolver,
)
from functions.connector.adapters.relay_client import PROBE_TIMEOUT, RelayClient
from functions.core.address_policy import IPNetwork
from functions.core.relay_candidates import REFUSED_STATUSES
from functions.core.relays import RelaySpec

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, also when the caller is itself
    inside an event loop (the local console): on a thread of its own."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="admin-io") as pool:
        return pool.submit(asyncio.run, coro).result()


def system_resolve(host: str, port: int) -> list[str]:
    """What the connector would connect to for host:port (the system's resolver)."""

    async def resolve() -> list[str]:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            return await system_resolver(host, port)

    return run_sync(resolve())


@dataclass(frozen=True, slots=True)
class UpgradeResult:
    endpoint: str
    url: str  # without credentials
    ok: bool
    answer: str  # "accepted", "HTTP 401", "refused: loopback (127.0.0.1)", "OSError: ..."
    refused_credentials: bool = False  # the relay answered 401/403


async def _try_upgrade(spec: RelaySpec, allowed: Sequence[IPNetwork]) -> UpgradeResult:
    checked = await check_relay_address(spec.host, spec.port, allowed, system_resolver)
    if not isinstance(checked, Checked):
        return UpgradeResult(spec.endpoint, spec.url, False, refusal_error(checked))
    client = RelayClient(spec, lambda _frame: (), _ignore, allowed_networks=allowed)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT + 1):
            ws = await client._open(checked, spec, probe=True)
        await ws.close()
    except InvalidStatus as exc:
        status = exc.response.status_code
        return UpgradeResult(
            spec.endpoint, spec.url, False, f"HTTP {status}", status in REFUSED_STATUSES
        )
    except Exception as exc:  # any transport or TLS failure is the answer to report
        return UpgradeResult(spec.endpoint, spec.url, False, f"{type(exc).__name__}: {exc}"[:160])
    return UpgradeResult(spec.endpoint, spec.url, True, "accepted")


async def _ignore(_results: Sequence[Any]) -> None:
    return None


def try_upgrades(specs: Sequence[RelaySpec], allowed: Sequence[IPNetwork]) -> list[UpgradeResult]:
    """Each spec's upgrade, concurrently (a dead relay costs its timeout once, not per relay)."""

    async def run_all() -> list[UpgradeResult]:
        return list(await asyncio.gather(*(_try_upgrade(s, allowed) for s in specs)))

    return run_sync(run_all()) if specs else []
