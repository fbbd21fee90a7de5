"""Log setup: stable event names as messages, context as fields, text or JSON lines, levels per component."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
#: Loggers quieter than the root unless `logging.levels` says otherwise: the Azure SDK and httpx (sinks, the
#: OpenAI client) log every HTTP request at INFO, and APScheduler warns on every skipped run of a tick that
#: outlasts its interval (coalescing is intended here; our own `tick.*` events tell the story).
DEFAULT_LEVELS: dict[str, str] = {
    "azure": "WARNING",
    "urllib3": "WARNING",
    "httpx": "WARNING",
    "databricks": "WARNING",
    "apscheduler": "ERROR",
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.name} {record.getMessage()} {extra}"
        return line.rstrip() + (f"\n{self.formatException(record.exc_info)}" if record.exc_info else "")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                "event": record.getMessage(), **_fields(record)}
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def setup_logging(
    level: str = "INFO",
    fmt: str = "text",
    levels: Mapping[str, str] | None = None,
    reset: Iterable[str] = (),
) -> None:
    """One stderr handler; the root at `level`; `levels` per logger name (a prefix covers its children).

    `reset` names loggers a previous setup configured (a config reload): they go back to inheriting.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in reset:
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name, value in {**DEFAULT_LEVELS, **(levels or {})}.items():
        logging.getLogger(name).setLevel(value)
