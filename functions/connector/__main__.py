"""`python -m functions.connector`: run the connector until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

from functions.connector.app import build_connector
from functions.log import configure_logging
from functions.settings import load_settings


async def _main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, component="connector")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await build_connector(settings).run(stop)


if __name__ == "__main__":
    asyncio.run(_main())
