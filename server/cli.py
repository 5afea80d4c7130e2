"""`shoal serve`: settings from flags over `SHOAL_*` environment over defaults, then uvicorn.

The CLI is the composition root, so it alone imports the HTTP layer (see the import-linter
exception in pyproject.toml).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError

from server import cluster
from server.auth import InsecureListen, check_listen
from server.follower import SharedSequences
from server.logs import configure_logging
from server.settings import Settings
from server.workers import (
    WORKER_FLAG,
    RunDir,
    Supervisor,
    WorkerRole,
    exit_with_writer,
    listening_socket,
    unix_socket,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoal", description="Shoal vector database")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--data-dir", help="RocksDB directory (SHOAL_DATA_DIR, default ./data)")
    serve.add_argument("--host", help="listen address (SHOAL_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (SHOAL_PORT, default 8080)")
    serve.add_argument(
        "--durability", choices=["fsync", "os"], help="SHOAL_DURABILITY, default fsync"
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    # No --admin-key flag: a key on the command line is readable by every user in `ps`.
    serve.add_argument(
        "--admin-key-file",
        help="file holding the admin key (SHOAL_ADMIN_KEY_FILE; or set SHOAL_ADMIN_KEY)",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="listen beyond loopback without an admin key: no authentication (SHOAL_INSECURE)",
    )
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve HTTPS (SHOAL_TLS_CERT)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert (SHOAL_TLS_KEY)")
    serve.add_argument(
        "--read-workers",
        type=int,
        help="processes serving queries beside the writer (SHOAL_READ_WORKERS, default 0)",
    )
    serve.add_argument(WORKER_FLAG, dest="worker_of", help=argparse.SUPPRESS)  # the supervisor's
    cluster.add_arguments(commands.add_parser("cluster", help="scale-out: DDL, status, moves"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "cluster":
        return cluster.run(args)
    overrides: dict[str, Any] = {
        name: value
        for name, value in vars(args).items()
        if name not in ("command", "worker_of") and value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"shoal: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, with_pid=settings.read_workers > 0)
    log = logging.getLogger("shoal")
    try:
        warning = check_listen(settings)
    except InsecureListen as exc:
        log.error("%s", exc)
        return 2
    if warning is not None:
        log.warning("%s", warning)
    from api.app import create_app

    if args.worker_of is not None:
        return _serve_worker(settings, WorkerRole.from_json(args.worker_of))
    log.info(
        "serving on %s://%s:%d, data in %s, durability %s, authentication %s, "
        "event loop %s, HTTP parser %s, read workers %d",
        "https" if settings.tls_cert else "http",
        settings.host,
        settings.port,
        settings.data_dir.resolve(),
        settings.durability,
        "on" if settings.admin_key else "off",
        settings.event_loop,
        settings.http_parser,
        settings.read_workers,
    )
    if not settings.read_workers:
        _Server(_uvicorn_config(create_app(settings), settings)).run()
        return 0
    if not settings.lean_lane:
        log.error("read workers serve queries through the lean lane: set lean_lane on")
        return 2
    try:
        tcp = listening_socket(settings.host, settings.port, probe=True)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror)
        return 1
    run = RunDir.create()
    shared = SharedSequences(run.sequence, settings.read_workers, create=True)
    try:
        role = WorkerRole(run, tcp.getsockname()[1], os.getpid())
        app = create_app(settings, run=run)
        server = _Server(_uvicorn_config(app, settings))
        workers_argv = sys.argv[1:] if argv is None else argv
        supervisor = Supervisor(settings.read_workers, workers_argv, role, shared)
        server.on_exit = supervisor.stop
        supervisor.start(ready=lambda: app.state.database.ready)
        try:
            server.run(sockets=[tcp, unix_socket(run.writer_socket)])
        finally:
            supervisor.stop()
    finally:
        shared.close()
        run.remove()
    return 0


def _serve_worker(settings: Settings, worker: WorkerRole) -> int:
    """A read worker (server/workers.py): its writer's flags, its writer's port. It stops
    with its writer from the first moment, recovery included (an orphan recovering would
    hold a copy of the indexes for nothing, and could join the next writer's port)."""
    from api.app import create_app

    exit_with_writer(worker.writer_pid, lambda: os.kill(os.getpid(), signal.SIGTERM))
    app = create_app(settings, worker=worker)
    sock = listening_socket(settings.host, worker.port)
    logging.getLogger("shoal").info("read worker %d starting", os.getpid())
    _Server(_uvicorn_config(app, settings)).run(sockets=[sock])
    return 0


def _uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    from server.http_protocol import CoalescingHttpToolsProtocol

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        loop=settings.event_loop,
        # httptools with one socket write per response (server/http_protocol.py)
        http=CoalescingHttpToolsProtocol if settings.http_parser == "httptools" else "h11",
        log_config=None,  # uvicorn's loggers propagate to the JSON handler of configure_logging
        access_log=False,  # the access log is written by api/observability.py, as JSON
        timeout_graceful_shutdown=30,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )


class _Server(uvicorn.Server):
    """A SIGTERM/SIGINT shutdown that completed gracefully exits 0.

    uvicorn re-raises the signal it handled once it has shut down, so the process would die by
    it (status -15) even though the store was closed cleanly; supervisors read that as a crash.
    """

    on_exit: Callable[[], None] | None = None  # the writer: stop its read workers too

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()
        if self.on_exit is not None:
            # Alongside this process's own drain, not after it: a worker still forwarding
            # writes to a writer that has closed its socket would answer 503.
            threading.Thread(target=self.on_exit, name="stop-workers", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
