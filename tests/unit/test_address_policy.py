"""The address policy (functions.core.address_policy): which resolved addresses the connector
may open a relay connection to, and the small pieces around it that report a refusal."""

from __future__ import annotations

import ipaddress
import random
import socket

import pytest

from functions.connector.adapters import relay_client
from functions.connector.adapters.relay_address import (
    Checked,
    check_relay_address,
    connect_kwargs,
    refusal_error,
)
from functions.connector.adapters.relay_client import REFUSED_FIRST, REFUSED_MAX, refused_delay
from functions.connector.adapters.relay_status import status_document
from functions.core.address_policy import (
    IPV4_BLOCKED,
    IPV6_BLOCKED,
    REASONS,
    Refusal,
    first_refusal,
    refusal,
)


def nets(*cidrs: str) -> tuple:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


BLOCKED = [
    # IPv4
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link_local"),  # the metadata server
    ("169.254.0.1", "link_local"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.255", "cgnat"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this_network"),
    ("0.255.255.255", "this_network"),
    ("192.0.0.8", "ietf_protocol"),
    ("192.0.0.170", "ietf_protocol"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("192.88.99.1", "6to4"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("254.255.255.255", "reserved"),
    ("255.255.255.255", "broadcast"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("[::1]", "loopback"),
    ("fe80::1", "link_local"),
    ("fe80::1%eth0", "link_local"),
    ("febf:ffff::1", "link_local"),
    ("fec0::1", "site_local"),
    ("fc00::1", "unique_local"),
    ("fd12:3456:789a::1", "unique_local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("64:ff9b::808:808", "nat64"),  # NAT64 of a public address: still refused
    ("64:ff9b::7f00:1", "nat64"),
    ("64:ff9b:1::1", "nat64"),
    ("100::1", "discard"),
    ("2001::1", "teredo"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo"),
    ("2001:2::1", "benchmarking"),
    ("2001:10::1", "ietf_protocol"),
    ("2001:20::1", "ietf_protocol"),
    ("2002:7f00:1::", "6to4"),
    ("2002:808:808::1", "6to4"),
    ("1::1", "reserved"),  # outside 2000::/3, the only IPv6 space given out
    ("4000::1", "reserved"),
    # IPv4-mapped: judged as the IPv4 address they reach
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:7f00:1", "loopback"),
    ("::ffff:7f00:2", "loopback"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("::ffff:a9fe:a9fe", "link_local"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:100.64.0.1", "cgnat"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("::ffff:224.0.0.1", "multicast"),
    ("::ffff:255.255.255.255", "broadcast"),
    # IPv4-compatible (deprecated): the embedded address' reason, else reserved
    ("::127.0.0.1", "loopback"),
    ("::7f00:1", "loopback"),
    ("::10.0.0.1", "private"),
    ("::169.254.169.254", "link_local"),
    ("::8.8.8.8", "reserved"),
    # not an address at all: the policy judges resolved addresses, never names
    ("localhost", "invalid_address"),
    ("127.1", "invalid_address"),
    ("2130706433", "invalid_address"),
    ("", "invalid_address"),
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above
    "172.15.255.255",
    "172.32.0.0",
    "192.0.1.255",
    "192.88.98.255",
    "198.17.255.255",
    "198.20.0.0",
    "203.0.114.1",
    "223.255.255.255",  # last unicast before multicast
    "169.253.255.255",
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "2a00:1450:4001:82b::200e",
    "::ffff:8.8.8.8",  # mapped public: reaches 8.8.8.8
    "2001:1::1",  # not Teredo (2001:0::/32)
]


@pytest.mark.parametrize(("address", "reason"), BLOCKED)
def test_blocked_addresses_are_refused_with_a_stable_reason(address, reason):
    assert refusal(address) == reason
    assert reason in REASONS


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address):
    assert refusal(address) is None


def test_ip_objects_are_judged_like_strings():
    assert refusal(ipaddress.ip_address("10.1.2.3")) == "private"
    assert refusal(ipaddress.ip_address("2001:4860:4860::8888")) is None


def test_every_blocked_range_refuses_its_addresses_and_their_mapped_forms():
    for network, reason in IPV4_BLOCKED + IPV6_BLOCKED:
        inside = network[1] if network.num_addresses > 2 else network[0]
        assert refusal(inside) == reason, network
        if network.num_addresses > 2:
            assert refusal(network[-2]) == reason, network
        if network.version == 4:
            assert refusal(f"::ffff:{inside}") == reason, network


@pytest.mark.parametrize(
    ("address", "allowed", "reason"),
    [
        ("127.0.0.2", ["127.0.0.2/32"], None),
        ("127.0.0.1", ["127.0.0.2/32"], "loopback"),
        ("::ffff:127.0.0.2", ["127.0.0.2/32"], None),  # the address a mapped form reaches
        ("::ffff:127.0.0.1", ["127.0.0.2/32"], "loopback"),
        ("::ffff:7f00:1", ["127.0.0.2/32"], "loopback"),
        ("::1", ["127.0.0.0/8"], "loopback"),  # an IPv4 network allows no IPv6 address
        ("::1", ["::1/128"], None),
        ("127.0.0.1", ["::1/128"], "loopback"),
        ("127.0.0.1", ["127.0.0.0/8", "::1/128"], None),  # tests and `make dev`
        ("10.8.0.5", ["10.8.0.0/24"], None),  # a relay behind a VPC connector
        ("10.8.1.5", ["10.8.0.0/24"], "private"),
        ("169.254.169.254", ["10.0.0.0/8"], "link_local"),
        ("fd00::5", ["fd00::/64"], None),
        ("fd00:0:0:1::5", ["fd00::/64"], "unique_local"),
        ("8.8.8.8", ["10.0.0.0/8"], None),  # an allow list never narrows the public Internet
    ],
)
def test_allowed_networks_override_only_their_own_range(address, allowed, reason):
    assert refusal(address, nets(*allowed)) == reason


def test_a_host_is_refused_when_any_of_its_addresses_is():
    assert first_refusal(["8.8.8.8", "10.0.0.1"]) == Refusal("private", "10.0.0.1")
    assert first_refusal(["2001:4860:4860::8888", "::1"]) == Refusal("loopback", "::1")
    assert first_refusal(["8.8.8.8", "2001:4860:4860::8888"]) is None
    allowed = nets("127.0.0.2/32")
    assert first_refusal(["127.0.0.2"], allowed) is None
    assert first_refusal(["127.0.0.2", "127.0.0.1"], allowed) == Refusal("loopback", "127.0.0.1")


def test_a_host_that_resolves_to_nothing_is_refused_as_unresolvable():
    assert first_refusal([]) == Refusal("unresolvable", "")


# --- around the policy: resolving, reporting, pacing ----------------------------------------


async def test_the_check_resolves_once_and_applies_the_policy_to_every_address():
    calls = []

    async def resolver(host, port):
        calls.append((host, port))
        return ["127.0.0.2", "127.0.0.3"]

    allowed = nets("127.0.0.2/32")
    assert await check_relay_address("pbx.example", 7099, allowed, resolver) == Refusal(
        "loopback", "127.0.0.3"
    )
    assert await check_relay_address(
        "pbx.example", 7099, nets("127.0.0.0/24"), resolver
    ) == Checked(("127.0.0.2", "127.0.0.3"))
    assert calls == [("pbx.example", 7099)] * 2


async def test_a_failed_lookup_is_an_unresolvable_refusal():
    async def fails(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def bad_name(host, port):
        raise UnicodeError("label too long")

    for resolver in (fails, bad_name):
        refused = await check_relay_address("nowhere.invalid", 7099, (), resolver)
        assert isinstance(refused, Refusal) and refused.reason == "unresolvable"


def test_connections_go_to_the_literal_address_without_any_lookup():
    assert connect_kwargs("127.0.0.2") == {
        "host": "127.0.0.2",
        "family": socket.AF_INET,
        "flags": socket.AI_NUMERICHOST,
    }
    assert connect_kwargs("::1")["family"] == socket.AF_INET6


def report(state: str, last_error: str) -> dict:
    return {
        "relay": "ws://pbx:7099",
        "state": state,
        "since": 1.0,
        "connects": 0,
        "last_error": last_error,
        "active_calls": 0,
        "frames": 0,
        "events": 0,
        "repaired": 0,
        "bad_frames": 0,
        "last_frame_at": None,
        "last_event_at": None,
        "pbx_link": None,
    }


def test_a_refused_relay_reports_its_reason_in_relay_status():
    refused = report("refused", refusal_error(Refusal("link_local", "169.254.169.254")))
    assert refused["last_error"] == "refused: link_local (169.254.169.254)"
    refused["refused_reason"] = "link_local"  # as Connector.relay_report gives it
    assert status_document(refused, "i-1")["refusedReason"] == "link_local"
    assert status_document(report("backoff", "OSError: x"), "i-1")["refusedReason"] is None


def test_a_refused_relay_is_retried_slowly_doubling_to_a_cap():
    rng = random.Random(3)
    assert REFUSED_FIRST >= 30 and REFUSED_MAX <= 300
    for refusals in range(1, 12):
        ceiling = min(REFUSED_MAX, REFUSED_FIRST * 2 ** (refusals - 1))
        delays = [refused_delay(refusals, rng) for _ in range(100)]
        assert all(0.8 * ceiling <= d <= ceiling for d in delays)
    assert refused_delay(1, rng) >= 0.8 * 30
    assert refused_delay(100, rng) <= 300
    # far slower than a network failure's backoff: never a connection storm
    assert refused_delay(1, rng) > relay_client.BACKOFF_FIRST * 40
