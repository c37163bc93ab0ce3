"""A stand-in for an amiws relay (DCMIWS) on 127.0.0.1: a WebSocket server that sends frames to
every connected client, byte for byte, as amiws does (text frames, possibly invalid UTF-8).

Like the seed's test method, any frame a client sends is broadcast to the other clients, so the
seed's `test_websocket_newchannel.py` works against it unchanged. Tests drive it in-process and
replay real AMI captures through it.

With `credentials=(id, password)` it refuses an upgrade without that HTTP Basic auth (401), as the
proxy in front of a real amiws does (amiws itself does not authenticate), and counts refusals.

    python -m devtools.demo_relay --port 7099 [--auth id:password]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import signal
import ssl
from collections.abc import Iterable, Mapping
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Response


def envelope(
    event: Mapping[str, str],
    server_id: int = 1,
    server_name: str = "demo-pbx",
    frame_type: int = 3,
) -> bytes:
    """Wrap one AMI event (type 3) or response (type 4) as amiws does."""
    frame = {
        "type": frame_type,
        "server_id": server_id,
        "server_name": server_name,
        "ssl": False,
        "data": dict(event),
    }
    return json.dumps(frame, ensure_ascii=False).encode()


def basic_auth_of(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """The (id, password) of an `Authorization: Basic` header, or None."""
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    auth_id, sep, password = decoded.partition(":")
    return (auth_id, password) if sep else None


class DemoRelay:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.credentials = credentials
        self.ssl_context = ssl_context  # wss:// (a TLS proxy in front of amiws, as deployed)
        self.refused = 0  # upgrades refused for missing or wrong credentials
        self.clients: set[ServerConnection] = set()
        self.received: list[bytes] = []
        self.handshakes: list[dict[str, str]] = []  # request headers of every client's upgrade
        self._server: Server | None = None
        self._joined = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"{'wss' if self.ssl_context else 'ws'}://{self.host}:{self.port}"

    async def start(self) -> DemoRelay:
        self._server = await serve(
            self._handler,
            self.host,
            self.port,
            max_size=None,
            process_request=self._record,
            ssl=self.ssl_context,
        )
        self.port = self._server.sockets[0].getsockname()[1]  # type: ignore[index]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _record(self, connection: ServerConnection, request: object) -> Response | None:
        headers = dict(request.headers.raw_items())  # type: ignore[attr-defined]
        self.handshakes.append(headers)
        if self.credentials is not None and basic_auth_of(headers) != self.credentials:
            self.refused += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, "relay credentials required\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        async with self._joined:
            self.clients.add(ws)
            self._joined.notify_all()
        try:
            async for message in ws:
                raw = message if isinstance(message, bytes) else message.encode()
                self.received.append(raw)
                await self.broadcast(raw, exclude=ws)
        except Exception:  # a client that breaks off is simply gone
            pass
        finally:
            self.clients.discard(ws)

    async def wait_for_clients(self, count: int = 1, timeout: float = 10.0) -> None:
        async def enough() -> None:
            async with self._joined:
                await self._joined.wait_for(lambda: len(self.clients) >= count)

        await asyncio.wait_for(enough(), timeout)

    async def broadcast(self, raw: bytes, exclude: ServerConnection | None = None) -> int:
        """Send raw bytes as a TEXT frame (amiws' frame type), valid UTF-8 or not."""
        sent = 0
        for client in list(self.clients):
            if client is exclude:
                continue
            try:
                # The protocol layer sends bytes as a text frame without validating UTF-8.
                client.protocol.send_text(raw)
                client.send_data()
                sent += 1
            except Exception:
                self.clients.discard(client)
        await asyncio.sleep(0)
        return sent

    async def replay(
        self,
        events: Iterable[Mapping[str, str]],
        *,
        server_id: int = 1,
        server_name: str = "demo-pbx",
        gap: float = 0.0,
    ) -> int:
        count = 0
        for event in events:
            await self.broadcast(envelope(event, server_id, server_name))
            count += 1
            if gap:
                await asyncio.sleep(gap)
        return count

    # What the real amiws sends besides events (design.md, "The relay (amiws) frames").

    async def login_reply(self, accepted: bool = True, server_id: int = 1) -> int:
        """amiws's own AMI login after its link to the PBX came back (or was refused): sent to
        every client, with no ActionID. Events of the gap before it are lost."""
        data = (
            {"Response": "Success", "Message": "Authentication accepted"}
            if accepted
            else {"Response": "Error", "Message": "Authentication failed"}
        )
        return await self.broadcast(envelope(data, server_id, frame_type=4))

    async def foreign_response(self, data: Mapping[str, str], server_id: int = 1) -> int:
        """A Response to another client's action: amiws sends it to every client."""
        return await self.broadcast(envelope(data, server_id, frame_type=4))

    async def cut_frame(self, event: Mapping[str, str], server_id: int = 1) -> int:
        """What amiws sends when a UTF-8 name is cut mid-character: the frame stops there."""
        raw = envelope(event, server_id)
        name = str(event.get("CallerIDName", "")).encode()
        at = raw.find(name) + len(name) - 1 if name else len(raw) // 2
        return await self.broadcast(raw[:at])

    async def drop_clients(self) -> None:
        """Close every client connection abruptly, as a relay restart would."""
        for client in list(self.clients):
            client.transport.abort()  # type: ignore[attr-defined]
        self.clients.clear()


async def _serve(port: int, credentials: tuple[str, str] | None) -> None:
    relay = await DemoRelay(port=port, credentials=credentials).start()
    print(json.dumps({"ready": True, "url": relay.url}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await relay.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7099)
    parser.add_argument("--auth", default="", help="id:password the upgrade must carry")
    args = parser.parse_args()
    auth_id, _, password = args.auth.partition(":")
    asyncio.run(_serve(args.port, (auth_id, password) if args.auth else None))


if __name__ == "__main__":
    main()
