"""A minimal FCM `messages:send` endpoint over HTTP/2 cleartext (prior knowledge), for the fan-out
prototype only: devtools.fake_fcm speaks HTTP/1.1, while production FCM is HTTP/2 (TLS + ALPN),
where firebase-admin's client multiplexes every request on one connection.

Answers every POST with 200 `{"name": ...}` after `--delay` seconds, concurrently per stream,
advertising `--max-streams` concurrent streams (Google front ends announce 100). Counts requests.

    python -m bench.h2c_fcm --port P --delay 0.05 --max-streams 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

import h2.config
import h2.connection
import h2.events
import h2.settings


class _Conn(asyncio.Protocol):
    def __init__(self, delay: float, max_streams: int, stats: dict[str, int]) -> None:
        self.delay = delay
        self.stats = stats
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams},
        )
        self.bodies: dict[int, bytearray] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        self._flush()

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except Exception:  # a broken client: drop it
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.bodies[event.stream_id] = bytearray()
            elif isinstance(event, h2.events.DataReceived):
                self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                asyncio.get_running_loop().call_later(self.delay, self._answer, event.stream_id)
        self._flush()

    def _answer(self, stream_id: int) -> None:
        body = self.bodies.pop(stream_id, b"")
        json.loads(body or b"{}")
        self.stats["requests"] += 1
        payload = json.dumps({"name": f"projects/bench/messages/0:{time.time_ns()}"}).encode()
        try:
            self.h2.send_headers(
                stream_id,
                [
                    (":status", "200"),
                    ("content-type", "application/json"),
                    ("content-length", str(len(payload))),
                ],
            )
            self.h2.send_data(stream_id, payload, end_stream=True)
        except Exception:  # stream reset by the client
            return
        self._flush()


async def serve(port: int, delay: float, max_streams: int) -> None:
    stats = {"requests": 0}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Conn(delay, max_streams, stats), "127.0.0.1", port, backlog=1024
    )
    print(json.dumps({"ready": True, "url": f"http://127.0.0.1:{port}"}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--max-streams", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.delay, args.max_streams))


if __name__ == "__main__":
    main()
