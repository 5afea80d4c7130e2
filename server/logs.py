"""Structured logs: one JSON object per line, with the id of the request being served.

`configure_logging(level)` gives the root logger a single JSON handler on stderr; uvicorn's
loggers propagate to it (the CLI passes uvicorn `log_config=None`). A line holds `ts` (UTC,
ISO 8601), `level`, `logger`, `message`, `request_id` when logged while serving a request, any
`extra={...}` fields, and `exception` with the traceback. The HTTP middleware sets `REQUEST_ID`;
worker threads serving the request inherit it (Starlette copies the context into them).
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

# LogRecord's own attributes; anything else on a record came from `extra`. uvicorn adds
# `color_message` (the message with ANSI colours), which has no place in JSON.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        options = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
        return orjson.dumps(entry, default=str, option=options).decode()


def configure_logging(level: str, stream: IO[str] | None = None) -> None:
    """JSON lines at `level` and above on `stream` (stderr) for every logger, uvicorn's too."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
