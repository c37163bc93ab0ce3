"""Structured JSON logs that Cloud Logging understands, and masking of personal data.

One JSON object per line on stdout with `severity`, `message`, `logging.googleapis.com/labels`
and any structured fields passed as `extra={"fields": {...}}`. Phone numbers are personal data:
log them only through `mask_number`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

_LABELS_KEY = "logging.googleapis.com/labels"
# Keys the formatter writes itself; Cloud Logging reads the first two, and any key under
# `logging.googleapis.com/` (trace, sourceLocation, ...) means something to it.
RESERVED_KEYS = frozenset(
    {
        "severity",
        "message",
        "time",
        "logger",
        "stack_trace",
        _LABELS_KEY,
        "logging.googleapis.com/trace",
        "logging.googleapis.com/spanId",
        "logging.googleapis.com/sourceLocation",
        "logging.googleapis.com/operation",
        "httpRequest",
    }
)


def mask_number(number: str | None) -> str:
    """Keep the last 4 digits, enough to tell calls apart in a log, not to identify anyone."""
    if not number:
        return ""
    digits = [c for c in number if c.isdigit()]
    if len(digits) <= 4:
        return "*" * len(digits)
    return "*" * (len(digits) - 4) + "".join(digits[-4:])


def mask_token(token: str | None) -> str:
    """FCM tokens are credentials for a device: show a short prefix only."""
    if not token:
        return ""
    return token[:6] + "…" if len(token) > 6 else "…"


class JsonFormatter(logging.Formatter):
    def __init__(self, labels: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.labels = dict(labels or {})

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname if record.levelname != "WARNING" else "WARNING",
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                # A field cannot replace what Cloud Logging reads (the line's own message,
                # severity, ...): it is kept beside it, renamed.
                entry[f"field_{key}" if key in RESERVED_KEYS else key] = value
        labels = {**self.labels, **getattr(record, "labels", {})}
        if labels:
            entry[_LABELS_KEY] = labels
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO", *, component: str) -> None:
    # The formatter writes no caller, thread or process: not collecting them saves about a
    # quarter of each record's cost (the logging docs' "Optimization"), on every push and call.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter({"component": component}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Client libraries are chatty at INFO; their warnings still come through.
    for noisy in ("websockets", "urllib3", "google", "grpc", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def fields(**values: Any) -> dict[str, Any]:
    """`logger.info("...", extra=fields(relay=..., reason=...))`."""
    return {"fields": values}
