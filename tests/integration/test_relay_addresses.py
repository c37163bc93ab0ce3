"""The connector never opens a connection to an address the policy refuses (server-side request
forgery through a relay host a user may write), whatever the spelling, whatever DNS answers
later, whatever the relay redirects to; a refused relay says why in /healthz and relay_status,
is logged once, and is re-checked slowly.

Only loopback is ever reached: listeners on 127.0.0.1, 127.0.0.2 and ::1, and every connection
the connector's event loop opens goes through a guard that refuses (and records) anything else,
so even with the policy switched off these tests would not send a packet to 10.0.0.1 or to the
metadata server. 127.0.0.2 is another loopback address (Linux routes all of 127/8 to lo); it
stands for "a relay in an allowed network" with RELAY_ALLOWED_NETWORKS=127.0.0.2/32."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from devtools.demo_relay import DemoRelay
from functions.connector.adapters import relay_client
from functions.connector.adapters.relay_status import status_document
from functions.connector.app import Connector
from functions.core.call_event import Kind
from functions.core.relays import relay_from_url
from functions.log import JsonFormatter
from functions.settings import load_settings
from tests.corpus import load_events
from tests.integration.test_corpus_over_websocket import RecordingPublisher

ALLOWED = "127.0.0.2/32"  # another loopback address: everything else of 127/8 stays refused
SECRET = "s3cret-relay-pw"
CAPTURE = "cacofonisk__mobile__acceptance_simple"  # an inbound call: one RINGING at least

# Relay hosts as a users document could spell them -> the reason they are refused.
SPELLINGS = {
    "localhost": "loopback",
    "127.0.0.1": "loopback",
    "127.1": "loopback",
    "2130706433": "loopback",  # decimal
    "0x7f000001": "loopback",  # hexadecimal
    "0x7f.1": "loopback",
    "0177.0.0.1": "loopback",  # octal
    "[::1]": "loopback",
    "[::ffff:127.0.0.1]": "loopback",  # IPv4-mapped
    "[::ffff:7f00:1]": "loopback",
    "0.0.0.0": "unspecified",
    "0": "unspecified",
    "169.254.169.254": "link_local",  # the metadata server
    "[fe80::1]": "link_local",
    "100.64.0.1": "cgnat",
    "10.0.0.1": "private",
    "nowhere.invalid": "unresolvable",
}


class CountingListener:
    """A TCP listener that counts every connection it accepts and closes it at once."""

    def __init__(self) -> None:
        self.accepted = 0
        self.servers: list[asyncio.Server] = []

    async def listen(self, host: str, port: int = 0) -> int:
        server = await asyncio.start_server(self._accept, host, port)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()

    async def close(self) -> None:
        for server in self.servers:
            server.close()
            await server.wait_closed()


class FakeDns:
    """Stands in for the event loop's getaddrinfo for the test's own names: each name answers
    from a script (one list of addresses per call, the last one repeated) and every call is
    counted. Any other host goes to the real getaddrinfo; `.invalid` names fail at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.real = loop.getaddrinfo
        self.scripts: dict[str, list[list[str]]] = {}
        self.calls: Counter[str] = Counter()

    def answer(self, name: str, *answers: list[str]) -> None:
        self.scripts[name] = list(answers)

    def peek(self, name: str) -> list[str] | None:
        script = self.scripts.get(name)
        return script[0] if script else None

    async def getaddrinfo(
        self, host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0, flags=0
    ) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else host
        if name in self.scripts:
            self.calls[name] += 1
            script = self.scripts[name]
            addresses = script.pop(0) if len(script) > 1 else script[0]
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, port, 0, 0))
                if ":" in a
                else (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, port))
                for a in addresses
            ]
        if isinstance(name, str) and name.endswith(".invalid"):
            self.calls[name] += 1
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return await self.real(host, port, family=family, type=type, proto=proto, flags=flags)


def _is_loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@pytest.fixture
async def dns(monkeypatch) -> FakeDns:
    loop = asyncio.get_running_loop()
    fake = FakeDns(loop)
    monkeypatch.setattr(loop, "getaddrinfo", fake.getaddrinfo)
    return fake


@pytest.fixture
async def stray(monkeypatch, dns) -> list[str]:
    """Every connection the loop opens must go to loopback: anything else is refused here and
    recorded (the list must stay empty). Names are judged by what the test's DNS answers,
    literals by the system's numeric parsing (which is what a connection would use)."""
    loop = asyncio.get_running_loop()
    real = loop.create_connection
    attempts: list[str] = []

    def targets(host: str) -> list[str] | None:
        if host == "localhost":
            return ["127.0.0.1"]
        if (answer := dns.peek(host)) is not None:
            return answer
        try:
            infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
        except (socket.gaierror, UnicodeError):
            return None
        return [str(info[4][0]) for info in infos]

    async def guarded(protocol_factory, host=None, port=None, **kwargs):
        addresses = targets(host) if host is not None else None
        if not addresses or not all(_is_loopback(a) for a in addresses):
            attempts.append(f"{host}:{port}")
            raise OSError(errno.ENETUNREACH, "test guard: only loopback may be reached")
        return await real(protocol_factory, host, port, **kwargs)

    monkeypatch.setattr(loop, "create_connection", guarded)
    return attempts


@pytest.fixture
def quick_refusals(monkeypatch) -> None:
    """Re-check refused relays every 0.2-0.4 s instead of 30 s-5 min: several re-checks happen
    within the test, each an INFO line, never another WARNING."""
    monkeypatch.setattr(relay_client, "REFUSED_FIRST", 0.2)
    monkeypatch.setattr(relay_client, "REFUSED_MAX", 0.4)


async def until(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not within {timeout}s: {what or check} (last: {value!r})")
        await asyncio.sleep(0.05)


async def healthz(port: int) -> tuple[str, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: connector\r\n\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    text = raw.decode()
    return text, json.loads(text.partition("\r\n\r\n")[2])


@contextlib.asynccontextmanager
async def running_connector(
    relays: list[str], allowed: str = ALLOWED
) -> AsyncIterator[tuple[Connector, RecordingPublisher]]:
    settings = load_settings(
        {
            "GOOGLE_CLOUD_PROJECT": "relay-addresses",
            "PORT": "0",
            "PBX_RELAYS": ",".join(relays),
            "TRUNK_CONTEXT_PREFIXES": "voipgrid_in,trk",
            "RELAY_ALLOWED_NETWORKS": allowed,
        }
    )
    publisher = RecordingPublisher()
    connector = Connector(settings, publisher, firestore_client=None)
    stop = asyncio.Event()
    task = asyncio.create_task(connector.run(stop, host="127.0.0.1"))
    try:
        await until(lambda: connector.health_port, 10, "health server up")
        yield connector, publisher
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def same_port_on(first: str, second: str) -> tuple[DemoRelay, CountingListener, int]:
    """A demo relay on `first` and a counting listener on `second`, on one port number."""
    for _ in range(20):
        relay = await DemoRelay(host=first).start()
        counter = CountingListener()
        try:
            await counter.listen(second, relay.port)
        except OSError:
            await relay.stop()
            await counter.close()
            continue
        return relay, counter, relay.port
    raise RuntimeError(f"no port free on both {first} and {second}")


async def counting_loopback() -> tuple[CountingListener, int]:
    """A counting listener on 127.0.0.1 and on ::1, on one port number."""
    for _ in range(20):
        counter = CountingListener()
        port = await counter.listen("127.0.0.1")
        try:
            await counter.listen("::1", port)
        except OSError:
            await counter.close()
            continue
        return counter, port
    raise RuntimeError("no port free on both 127.0.0.1 and ::1")


def refusal_lines(caplog) -> dict[str, list[logging.LogRecord]]:
    lines: dict[str, list[logging.LogRecord]] = {}
    for record in caplog.records:
        if record.name == "connector.relay" and record.getMessage() == "relay refused":
            lines.setdefault(record.fields["relay"], []).append(record)  # type: ignore[attr-defined]
    return lines


async def test_every_spelling_of_a_refused_address_is_refused_and_never_reached(
    dns, stray, quick_refusals, caplog
):
    caplog.set_level(logging.INFO)
    counter, port = await counting_loopback()
    urls = {host: f"ws://{host}:{port}" for host in SPELLINGS}
    urls["0x7f.1"] = f"ws://alice:{SECRET}@0x7f.1:{port}"  # credentials never show anywhere
    by_url = {relay_from_url(url).url: host for host, url in urls.items()}
    try:
        async with running_connector(list(urls.values())) as (connector, _):
            clients = [rt.client for rt in connector.relays.values()]
            assert len(clients) == len(SPELLINGS)
            # each re-checked several times meanwhile (still refused, still silent); the
            # assertions below say what went wrong if that never happens
            with contextlib.suppress(TimeoutError):
                await until(lambda: all(c.status.refusals >= 4 for c in clients), 5, "re-checks")
            raw, body = await healthz(connector.health_port)
            reports = [connector.relay_report(rt) for rt in connector.relays.values()]
    finally:
        await counter.close()

    assert counter.accepted == 0
    assert stray == []
    assert all(c.status.refusals >= 4 for c in clients)
    assert body["relays_total"] == len(SPELLINGS) and body["relays_connected"] == 0
    seen = {by_url[r["relay"]]: (r["state"], r["refused_reason"]) for r in body["relays"]}
    assert seen == {host: ("refused", reason) for host, reason in SPELLINGS.items()}
    docs = {by_url[r["relay"]]: status_document(r, "i-1") for r in reports}
    assert {h: d["refusedReason"] for h, d in docs.items()} == SPELLINGS
    assert all(d["state"] == "refused" and not d["connected"] for d in docs.values())

    lines = refusal_lines(caplog)
    # one WARNING per relay (its reason did not change), then one INFO line per re-check that
    # says for how long it has been refused (the relay-down alert reads it)
    warnings = {
        url: [r for r in records if r.levelno == logging.WARNING] for url, records in lines.items()
    }
    assert {by_url[url]: len(records) for url, records in warnings.items()} == dict.fromkeys(
        SPELLINGS, 1
    )
    for records in lines.values():
        assert len(records) >= 2  # quick_refusals: several re-checks happened
        ages = [r.fields["refused_for_s"] for r in records]  # type: ignore[attr-defined]
        assert ages[0] == 0 and ages == sorted(ages)
    formatter = JsonFormatter()
    for url, (record,) in warnings.items():
        entry = json.loads(formatter.format(record))
        assert entry["severity"] == "WARNING"
        assert (entry["relay"], entry["reason"]) == (url, SPELLINGS[by_url[url]])
    everything = "\n".join(formatter.format(r) for r in caplog.records)
    assert SECRET not in everything and "alice" not in everything
    assert SECRET not in raw and SECRET not in repr(docs)


async def test_a_relay_in_an_allowed_network_connects_and_delivers_under_its_name(
    dns, stray, caplog
):
    caplog.set_level(logging.INFO)
    relay = await DemoRelay(host="127.0.0.2").start()
    counter = CountingListener()
    refused_port = await counter.listen("127.0.0.1")
    dns.answer("pbx.allowed.test", ["127.0.0.2"])
    named = f"ws://pbx.allowed.test:{relay.port}"
    refused = f"ws://127.0.0.1:{refused_port}"  # loopback, but not in 127.0.0.2/32
    try:
        async with running_connector([relay.url, named, refused]) as (connector, publisher):
            await relay.wait_for_clients(2, timeout=10)
            await relay.replay(load_events(CAPTURE), server_name="corpus-pbx")
            endpoints = {f"127.0.0.2:{relay.port}", f"pbx.allowed.test:{relay.port}"}
            await until(
                lambda: {e.relay for e in publisher.events if e.kind is Kind.RINGING} == endpoints,
                10,
                "a ring through each allowed relay",
            )
            _, body = await healthz(connector.health_port)
    finally:
        await relay.stop()
        await counter.close()

    states = {r["relay"]: (r["state"], r["refused_reason"]) for r in body["relays"]}
    assert states == {
        relay.url: ("connected", None),
        named: ("connected", None),
        refused: ("refused", "loopback"),
    }
    # the connection went to the checked address, the handshake still names the relay
    hosts = sorted(h.get("Host", "") for h in relay.handshakes)
    assert hosts == sorted([f"127.0.0.2:{relay.port}", f"pbx.allowed.test:{relay.port}"])
    assert counter.accepted == 0 and stray == []
    assert list(refusal_lines(caplog)) == [refused]


async def test_dns_rebinding_cannot_move_a_checked_connection_and_every_reconnect_is_rechecked(
    dns, stray, quick_refusals, caplog
):
    """The name answers an allowed address first, loopback 127.0.0.1 afterwards: the connection
    lands on the address that was checked (a second lookup would have gone to 127.0.0.1), the
    reconnect resolves again and is refused, and once the name points back somewhere allowed
    the relay connects again."""
    caplog.set_level(logging.INFO)
    relay, counter, port = await same_port_on("127.0.0.2", "127.0.0.1")
    dns.answer("rebind.test", ["127.0.0.2"], ["127.0.0.1"])
    url = f"ws://rebind.test:{port}"
    try:
        async with running_connector([url]) as (connector, _):
            client = connector.relays[f"rebind.test:{port}"].client
            await until(
                lambda: client.status.state == "connected" or counter.accepted, 10, "connected"
            )
            assert counter.accepted == 0, "a second lookup took the connection to 127.0.0.1"
            assert dns.calls["rebind.test"] == 1  # one lookup, no second one by the connection
            assert len(relay.clients) == 1
            assert relay.handshakes[0]["Host"] == f"rebind.test:{port}"

            await relay.drop_clients()  # the relay restarts; DNS now says 127.0.0.1
            await until(
                lambda: client.status.state == "refused" or counter.accepted, 10, "re-checked"
            )
            assert counter.accepted == 0, "the reconnect went to 127.0.0.1 unchecked"
            assert dns.calls["rebind.test"] == 2
            _, body = await healthz(connector.health_port)
            assert body["relays"][0]["refused_reason"] == "loopback"

            await until(lambda: client.status.refusals >= 3, 10, "re-checked")
            dns.answer("rebind.test", ["127.0.0.2"])  # DNS fixed: allowed again
            await until(lambda: client.status.state == "connected", 10, "connected again")
            await relay.wait_for_clients(1, timeout=10)
            assert client.status.connects == 2
    finally:
        await relay.stop()
        await counter.close()

    assert counter.accepted == 0 and stray == []
    refusals = refusal_lines(caplog)[url]
    assert [r.levelno for r in refusals].count(logging.WARNING) == 1  # re-checks are INFO
    assert any(r.getMessage() == "relay address allowed" for r in caplog.records)


async def test_a_relay_cannot_redirect_the_connector_to_another_address(dns, stray):
    """A checked relay answers the upgrade with a redirect to 127.0.0.1: never followed."""
    counter = CountingListener()
    target = await counter.listen("127.0.0.1")
    requests = 0

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        requests += 1
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(
            f"HTTP/1.1 302 Found\r\nLocation: ws://127.0.0.1:{target}/\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()

    redirector = await asyncio.start_server(redirect, "127.0.0.2", 0)
    port = redirector.sockets[0].getsockname()[1]
    try:
        async with running_connector([f"ws://127.0.0.2:{port}"]) as (connector, _):
            client = connector.relays[f"127.0.0.2:{port}"].client
            await until(lambda: requests >= 2, 10, "the relay retried")
            await asyncio.sleep(0.3)
            error = client.status.last_error
    finally:
        redirector.close()
        await redirector.wait_closed()
        await counter.close()
    assert counter.accepted == 0 and stray == []
    assert "not followed" in error


def _tls_files(tmp_path, name: str) -> tuple[str, str, str]:
    """A test CA and a server certificate for `name` (files: ca, cert, key)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def write(path, data: bytes) -> str:
        path.write_bytes(data)
        return str(path)

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "makecall test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return (
        write(tmp_path / "ca.pem", ca.public_bytes(pem)),
        write(tmp_path / f"{name}.pem", cert.public_bytes(pem)),
        write(tmp_path / f"{name}.key", key_pem),
    )


@pytest.mark.parametrize(
    ("certificate_for", "connects"), [("pbx.tls.test", True), ("someone-else.test", False)]
)
async def test_tls_still_verifies_the_relays_name_on_the_checked_address(
    dns, stray, tmp_path, monkeypatch, certificate_for, connects
):
    """The connection goes to the checked IP, but TLS verifies the certificate against the
    relay's NAME: a relay (or whoever answers on that address) without a certificate for it
    is not spoken to."""
    import ssl

    ca, cert, key = _tls_files(tmp_path, certificate_for)
    monkeypatch.setenv("SSL_CERT_FILE", ca)  # the client's default context trusts the test CA
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    relay = await DemoRelay(host="127.0.0.2", ssl_context=server).start()
    dns.answer("pbx.tls.test", ["127.0.0.2"])
    url = f"wss://pbx.tls.test:{relay.port}"
    try:
        async with running_connector([url]) as (connector, _publisher):
            runtime = await until(lambda: connector.relays.get(f"pbx.tls.test:{relay.port}"), 10)
            if connects:
                await relay.wait_for_clients(1, timeout=10)
                await until(lambda: runtime.client.status.state == "connected", 10)
                assert relay.handshakes[-1].get("Host") == f"pbx.tls.test:{relay.port}"
            else:
                await until(lambda: runtime.client.status.last_error, 10)
                await asyncio.sleep(1.0)
                assert relay.clients == set() and relay.handshakes == []
                assert "CERTIFICATE_VERIFY_FAILED" in runtime.client.status.last_error or (
                    "certificate" in runtime.client.status.last_error.lower()
                )
    finally:
        await relay.stop()
    assert stray == []
