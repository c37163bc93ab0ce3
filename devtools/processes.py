"""Starting and stopping the local processes (`make dev`, tests, benchmarks) on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Until something listens on the port (bounded); fails early if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def notifier_command(
    port: int,
    *,
    python: str = sys.executable,
    source: str = "",
    target: str = "on_call_event",
    signature: str = "cloudevent",
) -> list[str]:
    """main.py's `on_call_event` under functions-framework, as Cloud Functions serves it (or
    another target of main.py: the app's endpoints are `http` targets)."""
    source_args = ["--source", source] if source else []
    return [
        *[python, "-m", "functions_framework", *source_args],
        *["--target", target, "--signature-type", signature],
        *["--host", "127.0.0.1", "--port", str(port)],
    ]
