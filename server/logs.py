"""Structured logs: one JSON object per line, with the id of the request being served.

`configure_logging(level)` gives the root logger a single JSON handler on stderr; uvicorn's
loggers propagate to it (the CLI passes uvicorn `log_config=None`). A line holds `ts` (UTC,
ISO 8601), `level`, `logger`, `message`, `request_id` when logged while serving a request, any
`extra={...}` fields, `exception` with the traceback, and `pid` in a server with read
workers. The HTTP middleware sets `REQUEST_ID`; worker threads serving the request inherit it
(Starlette copies the context into them).
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
_ALONE_PIECE_BYTES = 1 << 16  # the stderr buffer's write size when no other process shares it
_PID: list[int] = []  # set by `configure_logging(with_pid=True)`: lines carry the process id

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
        entry = _entry(record.created, record.levelname, record.name, record.getMessage())
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _dumps(entry)


def _entry(created: float, level: str, logger: str, message: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ts": datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": level.lower(),
        "logger": logger,
        "message": message,
    }
    request_id = REQUEST_ID.get()
    if request_id is not None:
        entry["request_id"] = request_id
    if _PID:
        entry["pid"] = _PID[0]
    return entry


def _dumps(entry: dict[str, Any]) -> str:
    options = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    return orjson.dumps(entry, default=str, option=options).decode()


def info_line(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """`logger.info(message, extra=fields)`, the access log's one line per request.

    With logging as `configure_logging` leaves it (the logger's records reach only the JSON
    handler on stderr, nothing filters them) the line is written straight into that handler's
    buffer: the same line, without building a LogRecord and walking the handler chain, which
    cost about 30 us of a 375 us request (bench.serving_quick --profile). Any other set-up
    (a handler or filter added, pytest's caplog) takes the ordinary call."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _sole_json_handler(logger)
    if handler is None:
        logger.info("%s", message, extra=fields)
        return
    entry = _entry(time.time(), "INFO", logger.name, message)
    for key, value in fields.items():
        entry.setdefault(key, value)
    handler.write_line(_dumps(entry))


def _sole_json_handler(logger: logging.Logger) -> _BufferedStderrHandler | None:
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters or (node.handlers and node is not logging.root):
            return None
        if not node.propagate:
            return None
        node = node.parent  # type: ignore[assignment]
    handlers = logging.root.handlers
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    if (
        type(handler) is not _BufferedStderrHandler
        or handler.filters
        or handler.level > logging.INFO
        or type(handler.formatter) is not JsonFormatter
    ):
        return None
    return handler


class _LineBuffer:
    """The stream a `_BufferedStderrHandler` writes to: text kept in memory until `flush`,
    which writes it to stderr's descriptor in pieces of whole lines of at most `piece_bytes`.
    With `PIPE_BUF` (a server with read workers, whose processes share stderr), a write to a
    pipe or to a file opened for appending is not interleaved with other processes' writes,
    so their lines never cut into each other there (a terminal or a stream socket, such as
    journald's, makes no such promise)."""

    def __init__(self, fd: int, piece_bytes: int = select.PIPE_BUF) -> None:
        self._fd = fd
        self._piece = piece_bytes
        self._parts: list[str] = []

    def write(self, text: str) -> int:
        self._parts.append(text)
        return len(text)

    def flush(self) -> None:
        if not self._parts:
            return
        data = "".join(self._parts).encode("utf-8", "backslashreplace")
        self._parts.clear()
        start = 0
        while start < len(data):
            end = len(data)
            if end - start > self._piece:
                cut = data.rfind(b"\n", start, start + self._piece)
                # A line longer than PIPE_BUF goes whole, alone: nothing shorter is possible.
                end = cut + 1 if cut >= start else (data.find(b"\n", start) + 1 or end)
            start += _write_all(self._fd, memoryview(data)[start:end])


def _write_all(fd: int, data: memoryview) -> int:
    written = 0
    while written < len(data):
        written += os.write(fd, data[written:])
    return written


class _BufferedStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """JSON lines buffered in memory and written to stderr every 0.1 s by a daemon thread,
    and at once for warnings and worse.

    Python's own stderr is line-buffered: one `write` system call per access-log line, which
    cost the event loop about 55 us a request under load (bench/serving_quick.py, log level
    info against warning). A crash loses at most the last 0.1 s of info lines."""

    FLUSH_EVERY_S = 0.1

    def __init__(self, shared: bool = False) -> None:
        """`shared`: other processes write to the same stderr (read workers): lines leave in
        pieces no other process's write can cut into."""
        piece = select.PIPE_BUF if shared else _ALONE_PIECE_BYTES
        super().__init__(_LineBuffer(sys.stderr.fileno(), piece))  # type: ignore[arg-type]
        self._dirty = False
        self._stop = threading.Event()  # not `_closed`: logging.Handler's own flag
        threading.Thread(target=self._flusher, name="log-flush", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        self._dirty = True
        super().emit(record)

    def write_line(self, line: str) -> None:
        """A formatted info line, as `emit` writes one (see `info_line`)."""
        self.acquire()
        try:
            self._dirty = True
            self.stream.write(line + self.terminator)
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": line}))
        finally:
            self.release()

    def flush(self) -> None:
        pass  # called after every record: the flusher thread and `handle` flush instead

    def handle(self, record: logging.LogRecord) -> bool:
        emitted = super().handle(record)
        if record.levelno >= logging.WARNING:
            self._flush_now(record)
        return emitted

    def _flush_now(self, record: logging.LogRecord | None = None) -> None:
        """Write what is buffered. A failure (stderr a closed pipe) goes to `handleError`,
        as a failed `emit` does: logging must never fail the request that logs."""
        self.acquire()
        try:
            self._dirty = False
            self.stream.flush()
        except Exception:
            self.handleError(record or logging.makeLogRecord({"msg": "log flush"}))
        finally:
            self.release()

    def _flusher(self) -> None:
        while not self._stop.wait(self.FLUSH_EVERY_S):
            if self._dirty:
                self._flush_now()

    def close(self) -> None:
        self._stop.set()
        self._flush_now()
        super().close()


def configure_logging(level: str, stream: IO[str] | None = None, with_pid: bool = False) -> None:
    """JSON lines at `level` and above on `stream` (default: stderr, buffered) for every
    logger, uvicorn's too; `with_pid`: each line says which process wrote it (`pid`), for a
    server with read workers."""
    _PID[:] = [os.getpid()] if with_pid else []
    if stream is not None:
        handler: logging.Handler = logging.StreamHandler(stream)
    else:
        handler = _BufferedStderrHandler(shared=with_pid)
    # Fields the JSON lines do not carry: not computed for every record (the caller's frame
    # walk alone is a few microseconds of each access-log line).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, _BufferedStderrHandler):
            old.close()  # ours: stop its flusher thread (others belong to whoever added them)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
