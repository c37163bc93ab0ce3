"""Which addresses the connector may open a relay connection to (pure: no I/O).

A relay host comes from a document a user may write, so it must not be able to point the
connector at anything inside the cloud project: loopback, private networks, the metadata server
(169.254.169.254), carrier-grade NAT and every other range that is not the public Internet. The
blocked ranges follow what Synapse refuses for its outbound requests (its default IP range
blocklist, plus the IPv4-mapped, IPv4-compatible and 6to4 forms it derives from the IPv4 ones),
completed with the other special-purpose ranges of the IANA registries.

`refusal(address, allowed)` says why one address is refused (a short stable reason) or None;
an address inside one of `allowed` (RELAY_ALLOWED_NETWORKS) is allowed whatever its range.
`first_refusal(addresses, allowed)` applies that to everything a host resolved to: one refused
address refuses the host, and no address at all is a refusal too ("unresolvable").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

UNRESOLVABLE = "unresolvable"
INVALID = "invalid_address"


def _table(rows: Iterable[tuple[str, str]]) -> tuple[tuple[IPNetwork, str], ...]:
    """Most specific first, so a /32 inside a /4 gives its own reason."""
    parsed = [(ipaddress.ip_network(cidr), reason) for cidr, reason in rows]
    return tuple(sorted(parsed, key=lambda row: -row[0].prefixlen))


IPV4_BLOCKED = _table(
    [
        ("0.0.0.0/32", "unspecified"),
        ("0.0.0.0/8", "this_network"),  # RFC 791: "this host on this network"
        ("10.0.0.0/8", "private"),  # RFC 1918
        ("100.64.0.0/10", "cgnat"),  # RFC 6598, shared address space
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link_local"),  # the metadata server is 169.254.169.254
        ("172.16.0.0/12", "private"),  # RFC 1918
        ("192.0.0.0/24", "ietf_protocol"),  # RFC 6890 IETF protocol assignments
        ("192.0.2.0/24", "documentation"),  # TEST-NET-1
        ("192.88.99.0/24", "6to4"),  # RFC 7526, former 6to4 relay anycast
        ("192.168.0.0/16", "private"),  # RFC 1918
        ("198.18.0.0/15", "benchmarking"),  # RFC 2544
        ("198.51.100.0/24", "documentation"),  # TEST-NET-2
        ("203.0.113.0/24", "documentation"),  # TEST-NET-3
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # RFC 1112 "future use"
        ("255.255.255.255/32", "broadcast"),
    ]
)

IPV6_BLOCKED = _table(
    [
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b::/96", "nat64"),  # RFC 6052 well-known prefix
        ("64:ff9b:1::/48", "nat64"),  # RFC 8215 local-use translation
        ("100::/64", "discard"),  # RFC 6666 discard-only
        ("2001::/32", "teredo"),  # RFC 4380
        ("2001:2::/48", "benchmarking"),  # RFC 5180
        ("2001:10::/28", "ietf_protocol"),  # ORCHID (deprecated)
        ("2001:20::/28", "ietf_protocol"),  # ORCHIDv2
        ("2001:db8::/32", "documentation"),  # RFC 3849
        ("3fff::/20", "documentation"),  # RFC 9637
        ("2002::/16", "6to4"),  # RFC 3056: tunnels to an embedded IPv4 address
        ("fc00::/7", "unique_local"),  # RFC 4193 ULA, the IPv6 private networks
        ("fe80::/10", "link_local"),
        ("fec0::/10", "site_local"),  # RFC 3879, deprecated, still routed privately
        ("ff00::/8", "multicast"),
    ]
)

IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # ::ffff:a.b.c.d reaches a.b.c.d
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # ::a.b.c.d, deprecated by RFC 4291
GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")  # everything else is reserved by IANA

# Every reason `refusal` and `first_refusal` can give.
REASONS = frozenset(
    {reason for _, reason in IPV4_BLOCKED + IPV6_BLOCKED} | {"reserved", UNRESOLVABLE, INVALID}
)


def _parse(address: str | IPAddress) -> IPAddress | None:
    if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return address
    try:
        return ipaddress.ip_address(address.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def _allowed(ip: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in allowed)


def _blocked(ip: IPAddress, table: tuple[tuple[IPNetwork, str], ...]) -> str | None:
    for network, reason in table:
        if ip in network:
            return reason
    return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def refusal(address: str | IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why the connector must not connect to `address`, or None when it may.

    `address` is one resolved address (a string as getaddrinfo gives it, an IPv6 scope such as
    `fe80::1%eth0` accepted) or an ipaddress object. An IPv4-mapped IPv6 address is judged as
    the IPv4 address it reaches; an IPv4-compatible one is refused with the reason of its
    embedded IPv4 address, or as reserved."""
    ip = _parse(address)
    if ip is None:
        return INVALID
    if _allowed(ip, allowed):
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        return _blocked(ip, IPV4_BLOCKED)
    if ip in IPV4_MAPPED:
        return refusal(_embedded_v4(ip), allowed)
    reason = _blocked(ip, IPV6_BLOCKED)
    if reason is not None:
        return reason
    if ip in IPV4_COMPATIBLE:  # :: and ::1 were matched above
        return _blocked(_embedded_v4(ip), IPV4_BLOCKED) or "reserved"
    if ip not in GLOBAL_UNICAST:
        return "reserved"
    return None


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    detail: str  # the refused address; why nothing resolved; "" when nothing did


def first_refusal(
    addresses: Iterable[str | IPAddress], allowed: Sequence[IPNetwork] = ()
) -> Refusal | None:
    """None when every address may be connected to (and there is at least one); otherwise the
    first refused one: a host is refused when ANY of its addresses is, since which one a
    connection would end up on is not ours to choose."""
    seen = False
    for address in addresses:
        seen = True
        reason = refusal(address, allowed)
        if reason is not None:
            return Refusal(reason, str(address))
    return None if seen else Refusal(UNRESOLVABLE, "")
