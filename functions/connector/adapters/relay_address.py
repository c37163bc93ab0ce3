"""Resolving a relay's host and checking every address against the address policy.

The relay client calls `check_relay_address` before each connection and each reconnect, then
connects to the addresses it returned (IP literals, never the name again), so a name whose DNS
answer changes between the check and the connection (DNS rebinding) cannot slip past the policy.
Resolution is the system's (`loop.getaddrinfo`): what glibc makes of `127.1`, `2130706433`,
`0x7f.1` or `0177.0.0.1` is what would be connected to, so that is what gets checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from functions.core.address_policy import UNRESOLVABLE, IPNetwork, Refusal, first_refusal

# (host, port) -> the addresses it resolves to, as IP literal strings
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
RESOLVE_TIMEOUT = 10.0  # a DNS server that never answers must not hold a relay forever
REFUSED_STATE = "refused"
_PREFIX = "refused: "


async def system_resolver(host: str, port: int) -> list[str]:
    """Every TCP address getaddrinfo gives for the host, in its order, without duplicates. A
    canonical IP literal is its own answer (no worker thread for a thousand such relays);
    anything else, `127.1` and `0x7f.1` included, is what the system makes of it."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[str] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = str(sockaddr[0])
        if family == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3] and "%" not in address:
            address = f"{address}%{sockaddr[3]}"  # keep a link-local address' scope
        if address not in addresses:
            addresses.append(address)
    return addresses


@dataclass(frozen=True, slots=True)
class Checked:
    """Addresses the policy allowed, to connect to in this order."""

    addresses: tuple[str, ...]


async def check_relay_address(
    host: str, port: int, allowed: Sequence[IPNetwork], resolver: Resolver
) -> Checked | Refusal:
    """Resolve `host` once and apply the policy to every address: a Refusal when the name does
    not resolve or any address is refused, else the addresses to connect to."""
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            addresses = tuple(await resolver(host, port))
    except (OSError, ValueError, TimeoutError) as exc:  # gaierror: OSError; idna: ValueError
        return Refusal(UNRESOLVABLE, f"{type(exc).__name__}: {exc}"[:120])
    refused = first_refusal(addresses, allowed)
    return refused if refused is not None else Checked(addresses)


def connect_kwargs(address: str) -> dict[str, Any]:
    """`loop.create_connection` arguments that reach exactly `address`: an IP literal with
    AI_NUMERICHOST, so asyncio can never turn it into a DNS query."""
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return {"host": address, "family": family, "flags": socket.AI_NUMERICHOST}


def refusal_error(refused: Refusal) -> str:
    """The `last_error` of a refused relay: `refused: <reason> (<address or detail>)`."""
    detail = f" ({refused.detail})" if refused.detail else ""
    return f"{_PREFIX}{refused.reason}{detail}"
