"""The server's buffered JSON log (server/logs.py `_BufferedStderrHandler`) still gets written.

`shoal serve` writes its log lines, the access log included, into a buffer in memory
instead of Python's line-buffered stderr, written to file descriptor 2 in pieces of whole
lines of at most PIPE_BUF bytes (so processes sharing stderr never cut into each other's
lines), so most lines no longer leave the
process when they are logged: a daemon thread flushes every 0.1 s, warnings and worse are
flushed at once, and `close` (called by logging's shutdown) flushes the rest. A buffer that is
never flushed is silent data loss that no functional test notices; so here a real server's
access-log line must reach its log file within a second of the request while the server sits
idle, and in-process the handler is driven directly with fd 2 pointed at a temporary file:
an info line is held back (while the flusher is far off) and then written by the flusher
thread, a warning is on disk when `handle` returns, `close` writes whatever is pending, and a
second `close` (as `logging.shutdown` does at exit to every live handler) does not raise.
The access log's direct line (`info_line`, written into the handler without a LogRecord) is
the very line logging would write, and is taken only with logging as `shoal serve` sets it up.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.logs import (
    REQUEST_ID,
    JsonFormatter,
    _BufferedStderrHandler,
    _sole_json_handler,
    configure_logging,
    info_line,
)
from tests.support import ServerProcess


def poll(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Whether `condition` holds within `timeout_s` (checked every 10 ms)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def json_lines(text: str) -> list[dict[str, Any]]:
    """The complete JSON lines of a log (a line still being written is skipped)."""
    records = []
    for line in text.splitlines(keepends=True):
        if line.endswith("\n") and line.startswith("{"):
            records.append(json.loads(line))
    return records


# -- a real server -------------------------------------------------------------------------------


def test_an_access_log_line_reaches_the_file_while_the_server_is_idle(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        path = "/v1/collections/no-such-collection"
        response = httpx.get(f"{server.url}{path}", headers={"X-Request-ID": "flush-check-1"})
        assert response.status_code == 404, response.text
        sent = time.monotonic()

        def logged() -> list[dict[str, Any]]:
            return [r for r in json_lines(server.log_path.read_text()) if r.get("path") == path]

        # No request follows: only the flusher thread can write the line.
        assert poll(lambda: bool(logged()), 1.0), server.log_path.read_text()[-2000:]
        elapsed = time.monotonic() - sent
        [line] = logged()
        assert line["logger"] == "shoal.access" and line["level"] == "info", line
        assert line["status"] == 404 and line["method"] == "GET", line
        assert line["request_id"] == "flush-check-1", line
        assert elapsed < 1.0
    finally:
        assert server.stop() == 0


# -- the handler, in process ---------------------------------------------------------------------


@contextmanager
def fd2_redirected(target: Path) -> Iterator[None]:
    """File descriptor 2 pointed at `target` for the block, then restored.

    Entered in the test's body, not in a fixture: pytest's capture points fd 2 at its own file
    again when the test's call phase begins. `sys.stderr` is the interpreter's own stream over
    fd 2 for the block: under pytest's capture it is a stand-in whose `fileno` is another
    descriptor, and the handler opens `sys.stderr.fileno()`."""
    sys.__stderr__.flush()  # type: ignore[union-attr]
    saved_fd, saved_stream = os.dup(2), sys.stderr
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.dup2(fd, 2)
        sys.stderr = sys.__stderr__
        yield
    finally:
        sys.stderr = saved_stream
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        os.close(fd)


@pytest.fixture
def stderr_file(tmp_path: Path) -> Path:
    return tmp_path / "stderr.log"


class _SlowFlusher(_BufferedStderrHandler):
    """The handler with its periodic flush an hour away: what it holds back stays held back
    for the length of a test, so the buffering itself can be asserted."""

    FLUSH_EVERY_S = 3600.0


def make_handler(cls: type[_BufferedStderrHandler] = _BufferedStderrHandler) -> logging.Handler:
    handler = cls()
    handler.setFormatter(JsonFormatter())
    return handler


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.makeLogRecord(
        {"name": "shoal.test", "levelno": level, "levelname": logging.getLevelName(level),
         "msg": message}
    )  # fmt: skip


def messages(path: Path) -> list[str]:
    return [r["message"] for r in json_lines(path.read_text())]


def test_an_info_line_is_flushed_by_the_thread_within_half_a_second(stderr_file: Path) -> None:
    with fd2_redirected(stderr_file):
        handler = make_handler()
        try:
            handler.handle(record("info one"))
            handler.handle(record("info two"))
            # Whether they are there already depends on the flusher's phase: not asserted.
            flushed = poll(lambda: messages(stderr_file) == ["info one", "info two"], 0.5)
            assert flushed, stderr_file.read_text()
        finally:
            handler.close()
    assert messages(stderr_file) == ["info one", "info two"]  # close wrote nothing twice


def test_info_lines_are_held_in_the_buffer(stderr_file: Path) -> None:
    with fd2_redirected(stderr_file):
        handler = make_handler(_SlowFlusher)
        try:
            for i in range(20):
                handler.handle(record(f"held {i}"))
            time.sleep(0.2)  # two flush periods of the real handler
            # No write per line (the point of the handler); deterministic, as the flusher
            # of this subclass waits an hour.
            assert stderr_file.read_text() == ""
        finally:
            handler.close()
    assert messages(stderr_file) == [f"held {i}" for i in range(20)]


def test_a_warning_is_on_disk_when_handle_returns(stderr_file: Path) -> None:
    with fd2_redirected(stderr_file):
        handler = make_handler(_SlowFlusher)
        try:
            handler.handle(record("before"))
            handler.handle(record("careful", logging.WARNING))
            # No waiting: the warning, and the info line held before it, in order.
            assert messages(stderr_file) == ["before", "careful"]
            levels = [r["level"] for r in json_lines(stderr_file.read_text())]
            assert levels == ["info", "warning"]
            handler.handle(record("broken", logging.ERROR))
            assert messages(stderr_file) == ["before", "careful", "broken"]
            handler.handle(record("after"))
            assert messages(stderr_file) == ["before", "careful", "broken"]  # held again
        finally:
            handler.close()
    assert messages(stderr_file) == ["before", "careful", "broken", "after"]


def test_close_writes_everything_pending(stderr_file: Path) -> None:
    lines = [f"pending {i} " + "x" * 200 for i in range(100)]  # ~25 KiB: under the buffer
    with fd2_redirected(stderr_file):
        handler = make_handler(_SlowFlusher)
        for line in lines:
            handler.handle(record(line))
        assert stderr_file.read_text() == ""
        handler.close()
        assert messages(stderr_file) == lines
        os.write(2, b"fd 2 still open\n")  # the handler's stream did not close fd 2
    assert stderr_file.read_text().endswith("fd 2 still open\n")


def test_close_can_be_called_again(stderr_file: Path) -> None:
    """`logging.shutdown` (atexit) closes every handler still alive, including those closed
    already; a second `close` must not raise."""
    with fd2_redirected(stderr_file):
        handler = make_handler(_SlowFlusher)
        handler.handle(record("once"))
        handler.close()
        try:
            handler.close()
        finally:
            # Whatever happened: let `logging.shutdown` not meet this handler at exit.
            handler._closed = threading.Event()  # type: ignore[attr-defined]
            del handler
            gc.collect()
    assert messages(stderr_file) == ["once"]


# -- the access log's direct line ---------------------------------------------------------------


@contextmanager
def json_logging(log_file: Path) -> Iterator[_BufferedStderrHandler]:
    """`configure_logging("info")` as `shoal serve` does, fd 2 on `log_file`; the root
    logger's handlers (pytest's own among them) and level restored afterwards. Entered in the
    test's body, as `fd2_redirected` is: pytest adds its handlers when the call phase begins."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    with fd2_redirected(log_file):
        configure_logging("info")
        [handler] = root.handlers
        assert isinstance(handler, _BufferedStderrHandler)
        try:
            yield handler
        finally:
            root.removeHandler(handler)
            handler.close()
            for old in saved_handlers:
                root.addHandler(old)
            root.setLevel(saved_level)


FIELDS = {"method": "POST", "path": "/v1/x%40y/query", "status": 200, "duration_ms": 0.25}


def test_the_direct_access_line_is_the_line_logging_writes(stderr_file: Path) -> None:
    access = logging.getLogger("shoal.access")
    REQUEST_ID.set("req-1")
    try:
        with json_logging(stderr_file) as handler:
            assert _sole_json_handler(access) is handler  # the direct line will be taken
            # logging's own path, then the direct one
            access.info("%s", "POST /v1/x%40y/query 200", extra=dict(FIELDS))
            info_line(access, "POST /v1/x%40y/query 200", dict(FIELDS))
    finally:
        REQUEST_ID.set(None)
    through_logging, direct = json_lines(stderr_file.read_text())
    assert abs(_ts(through_logging) - _ts(direct)) < 1.0
    del through_logging["ts"], direct["ts"]
    assert list(direct.items()) == list(through_logging.items())  # same fields, same order
    assert direct["request_id"] == "req-1" and direct["logger"] == "shoal.access"


def test_any_other_logging_set_up_gets_the_record(stderr_file: Path) -> None:
    """A handler or filter anywhere on the way sees the access line as a record (and can drop
    it), and a level above info drops it."""
    access = logging.getLogger("shoal.access")
    kept: list[logging.LogRecord] = []
    dropped: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    def drop(record: logging.LogRecord) -> bool:
        dropped.append(record)
        return False

    with json_logging(stderr_file):
        extra = Keep()
        logging.getLogger("shoal").addHandler(extra)
        try:
            assert _sole_json_handler(access) is None
            info_line(access, "GET /a 200", dict(FIELDS))
        finally:
            logging.getLogger("shoal").removeHandler(extra)
        access.addFilter(drop)
        try:
            info_line(access, "GET /b 200", dict(FIELDS))
        finally:
            access.removeFilter(drop)
        access.setLevel(logging.WARNING)
        try:
            info_line(access, "GET /c 200", dict(FIELDS))
        finally:
            access.setLevel(logging.NOTSET)
        info_line(access, "GET /d 200", dict(FIELDS))  # as configured again: direct
    assert [r.getMessage() for r in kept] == ["GET /a 200"]
    assert kept[0].duration_ms == 0.25  # type: ignore[attr-defined]
    assert [r.getMessage() for r in dropped] == ["GET /b 200"]
    assert messages(stderr_file) == ["GET /a 200", "GET /d 200"]


def _ts(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()


def test_a_flush_writes_whole_lines_in_pieces_no_longer_than_pipe_buf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import select

    from server.logs import _LineBuffer

    written: list[bytes] = []
    requested: list[int] = []  # the size of each piece flush asked to write
    remaining = 0

    def write(fd: int, data: memoryview) -> int:
        nonlocal remaining
        if remaining == 0:
            requested.append(len(data))
            remaining = len(data)
        taken = bytes(data[:1000])  # short writes too: the rest of the piece must follow
        written.append(taken)
        remaining -= len(taken)
        return len(taken)

    monkeypatch.setattr(os, "write", write)
    buffer = _LineBuffer(2)
    lines = [("x" * (i * 37 % 700)) + f" line {i}\n" for i in range(300)]
    lines.insert(150, "L" * (3 * select.PIPE_BUF) + "\n")  # longer than one piece: alone
    for line in lines:
        buffer.write(line)
    buffer.flush()
    data = b"".join(written)
    assert data == "".join(lines).encode()
    assert len(requested) > 5
    offset = 0
    for size in requested:
        piece = data[offset : offset + size]
        offset += size
        assert piece.endswith(b"\n")
        assert size <= select.PIPE_BUF or piece.count(b"\n") == 1, size
    buffer.flush()  # nothing pending: nothing written
    assert b"".join(written) == data
