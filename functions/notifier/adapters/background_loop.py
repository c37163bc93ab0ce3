"""One asyncio loop on a daemon thread, shared by everything async in a synchronous host.

functions-framework calls handlers synchronously. Async clients (firebase-admin's HTTP/2 FCM
client) bind to the loop they first run on, so they need one long-lived loop to be reused across
invocations instead of `asyncio.run` per event, which would reconnect every time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    def __init__(self, name: str = "async-io") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)
