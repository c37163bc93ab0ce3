"""`GET /healthz` for Cloud Run's probes and for people: each relay and its connection state.

A minimal HTTP/1.1 responder on asyncio streams; the connector needs nothing more and pulling in
a web framework would cost start-up time and memory per instance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

log = logging.getLogger("connector.health")


class HealthServer:
    def __init__(self, report: Callable[[], tuple[int, dict[str, Any]]]) -> None:
        self.report = report
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self.server = await asyncio.start_server(self._handle, host, port)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if parts[:1] == ["GET"] and path.split("?")[0] in ("/healthz", "/"):
                status, body = self.report()
            else:
                status, body = 404, {"error": "not found"}
            payload = orjson.dumps(body, option=orjson.OPT_INDENT_2)
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}.get(status, "OK")
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
