"""The console's HTTP server (aiohttp, 127.0.0.1 only): the static page, `GET /api/state` (the
current snapshot) and `GET /events` (Server-Sent Events: the snapshot again each time it changes,
so the page is live without a reload).

One poller reads every source every POLL seconds for all browsers; the doctor runs every
DOCTOR_EVERY seconds (it reads whole collections).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from devtools.console import view
from devtools.console.sources import Sources

log = logging.getLogger("console")
STATIC = Path(__file__).resolve().parent / "static"
POLL = 0.5
DOCTOR_EVERY = 5.0
KEEPALIVE = 15.0

Doctor = Callable[[], dict[str, Any]]


class Console:
    def __init__(self, sources: Sources, doctor: Doctor) -> None:
        self.sources = sources
        self.doctor = doctor
        self.state: dict[str, Any] = {}
        self.version = 0
        self._body = b"{}"
        self._changed = asyncio.Condition()
        self._doctor_result: dict[str, Any] = {"available": False, "problems": [], "error": None}

    async def refresh(self) -> bool:
        """Read every source once; True when what the page shows changed."""
        data, errors = await self.sources.read()
        state = view.snapshot(doctor=self._doctor_result, errors=errors, **data)
        body = json.dumps(state, ensure_ascii=False, sort_keys=True).encode()
        if body == self._body:
            return False
        async with self._changed:
            self.state, self._body = state, body
            self.version += 1
            self._changed.notify_all()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        next_doctor = 0.0
        while not stop.is_set():
            if time.monotonic() >= next_doctor:
                self._doctor_result = await asyncio.to_thread(self.doctor)
                next_doctor = time.monotonic() + DOCTOR_EVERY
            try:
                await self.refresh()
            except Exception:
                log.exception("console refresh failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL)

    async def wait_newer(self, version: int, timeout: float) -> int:
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.version > version), timeout
                )
            return self.version

    # HTTP ------------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def api_state(self, request: web.Request) -> web.Response:
        return web.Response(body=self._body, content_type="application/json", charset="utf-8")

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        sent = -1
        try:
            while True:
                if self.version != sent:
                    sent = self.version
                    await response.write(b"event: state\ndata: " + self._body + b"\n\n")
                elif await self.wait_newer(sent, KEEPALIVE) == sent:
                    await response.write(b": keepalive\n\n")  # proxies drop silent streams
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response


def make_app(console: Console) -> web.Application:
    app = web.Application()
    app.router.add_get("/", console.index)
    app.router.add_get("/api/state", console.api_state)
    app.router.add_get("/events", console.events)
    app.router.add_static("/static/", STATIC)
    return app


async def serve(
    console: Console,
    host: str,
    port: int,
    stop: asyncio.Event,
    ready: Callable[[int], Awaitable[None] | None] | None = None,
) -> None:
    """Serve until `stop` is set; `ready` gets the bound port."""
    runner = web.AppRunner(make_app(console), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    if ready is not None:
        maybe = ready(bound)
        if maybe is not None:
            await maybe
    poller = asyncio.create_task(console.run(stop))
    try:
        await stop.wait()
    finally:
        await poller
        await runner.cleanup()
