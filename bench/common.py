"""What every benchmark shares: result rows with targets, percentiles, the machine's description,
starting and stopping helper processes, CPU pinning.

Nothing here asserts a timing: a benchmark reports figures and whether each target was met; only
the runner's reader (docs/benchmarks.md) judges them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import queue
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devtools.processes import free_port, stop_process  # noqa: F401 (re-exported)

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PROJECT = "demo-makecall-bench"
# Settings every connector and notifier of the harness runs with, as `make dev` does: the relays
# listen on loopback, which the connector's relay address policy refuses unless allowed. Tenancy
# is the default (the PBX directory devtools.demo_data seeds), as in production.
# loopback relays allowed; connectors' health servers on loopback only
LOCAL_SETTINGS = {"RELAY_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128", "HEALTH_HOST": "127.0.0.1"}

PACKAGES = (
    "websockets",
    "orjson",
    "httpx",
    "httpcore",
    "h2",
    "firebase-admin",
    "functions-framework",
    "gunicorn",
    "google-cloud-firestore",
    "google-cloud-pubsub",
    "grpcio",
    "psutil",
    "pyinstrument",
    "py-spy",
)


# results -----------------------------------------------------------------------------------------


@dataclass
class Row:
    """One figure of a benchmark, with its target (if any) and the same-run baseline (if any)."""

    label: str
    value: float | None
    unit: str
    target: str = ""  # e.g. ">= 30000", "<= 15", "<= 1.3x baseline"
    passed: bool | None = None  # None: no target
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None  # value / baseline
    note: str = ""


@dataclass
class Proposal:
    """A change the numbers suggest: where, how much of the time it owns, what to change, and the
    gain measured with a prototype in this run (or in a scratch copy, said so in `evidence`)."""

    rank_hint: float  # larger = more important (the measured gain in the benchmark's own terms)
    where: str  # file and function
    share: str  # measured share of the time / cost
    change: str
    gain: str  # measured gain and how it was measured
    evidence: str = ""


@dataclass
class BenchResult:
    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    baseline: str = ""  # what the baseline is and why it is meaningful
    method: str = ""
    notes: list[str] = field(default_factory=list)
    proposals: list[Proposal] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def at_least(value: float | None, threshold: float) -> bool | None:
    return None if value is None else value >= threshold


def at_most(value: float | None, threshold: float) -> bool | None:
    return None if value is None else value <= threshold


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return value / baseline


# statistics -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (p99 of 1,000 samples is the 990th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 50)


def summary_ms(values_s: Sequence[float]) -> dict[str, float | int | None]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else None,
        "min": min(ms) if ms else None,
    }


# the machine ------------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def _java_version() -> str:
    """The JVM the emulators run on (`java -version` prints to stderr)."""
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "absent"
    first = (out.stderr or out.stdout).strip().splitlines()
    return first[0] if first else "unknown"


def _emulator_versions() -> dict[str, str]:
    """Cloud SDK and emulator component versions, from the SDK's install records."""
    from devtools.emulators import sdk_root

    root = sdk_root()
    versions = {"google-cloud-sdk": "absent"}
    if root is None:
        return versions
    with contextlib.suppress(OSError):
        versions["google-cloud-sdk"] = (root / "VERSION").read_text().strip()
    for component in ("cloud-firestore-emulator", "pubsub-emulator"):
        versions[component] = "absent"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            snapshot = json.loads((root / ".install" / f"{component}.snapshot.json").read_text())
            for entry in snapshot["components"]:
                if entry["id"] == component:
                    versions[component] = entry["version"]["version_string"]
    return versions


def machine() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": _mem_total_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "java": _java_version(),
        "emulators": _emulator_versions(),
        "packages": versions,
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE),
    }


# processes --------------------------------------------------------------------------------------


def pin_to_cpu(index: int) -> None:
    """Keep this process on one core (the benchmark's 'one core'); no-op where not possible."""
    with contextlib.suppress(AttributeError, OSError):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > 1:
            os.sched_setaffinity(0, {cpus[index % len(cpus)]})


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards `wanted` (up to the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def bench_env(**extra: str) -> dict[str, str]:
    """A child's environment: this one, the repo importable, nothing proxied."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


_READERS: dict[int, queue.Queue[str | None]] = {}


def _reader(proc: subprocess.Popen) -> queue.Queue[str | None]:
    """One thread per child drains its stdout into a queue (a selector on a buffered pipe would
    miss lines already read into the buffer)."""
    lines = _READERS.get(proc.pid)
    if lines is None:
        lines = _READERS[proc.pid] = queue.Queue()
        stream = proc.stdout
        assert stream is not None

        def pump() -> None:
            for line in stream:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True, name=f"stdout-{proc.pid}").start()
    return lines


def read_json_line(proc: subprocess.Popen, timeout: float) -> dict[str, Any]:
    """The next JSON line a child prints on stdout (e.g. its 'ready' line), bounded in time."""
    lines = _reader(proc)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no JSON line from child after {timeout}s")
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if line is None:
            lines.put(None)
            raise RuntimeError(f"child exited ({proc.poll()}) before printing the line")
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc; 0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat: user, nice, system, irq,
    softirq, steal), for 'how much ran besides us'."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct children of a process (e.g. gunicorn's worker under functions-framework)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


class PushSink:
    """Minimal HTTP/1.1 keep-alive server for what the connector POSTs (CALL_EVENTS_PUSH_URL):
    answers 204 at once and hands each body, with its arrival time, to `received`."""

    def received(self, body: bytes, now: float) -> None:
        raise NotImplementedError

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                now = time.time()
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                self.received(body, now)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
