"""`shoal serve`: settings from flags over `SHOAL_*` environment over defaults, then uvicorn.

The CLI is the composition root, so it alone imports the HTTP layer (see the import-linter
exception in pyproject.toml).
"""

from __future__ import annotations

import argparse
import logging
import sys
from types import FrameType
from typing import Any

import uvicorn

from server import cluster
from server.logs import configure_logging
from server.settings import Settings


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
    cluster.add_arguments(commands.add_parser("cluster", help="scale-out: DDL, status, moves"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "cluster":
        return cluster.run(args)
    overrides: dict[str, Any] = {
        name: value for name, value in vars(args).items() if name != "command" and value is not None
    }
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    from api.app import create_app

    logging.getLogger("shoal").info(
        "serving on %s:%d, data in %s, durability %s",
        settings.host,
        settings.port,
        settings.data_dir.resolve(),
        settings.durability,
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's loggers propagate to the JSON handler of configure_logging
        access_log=False,  # the access log is written by api/observability.py, as JSON
        timeout_graceful_shutdown=30,
    )
    _Server(config).run()
    return 0


class _Server(uvicorn.Server):
    """A SIGTERM/SIGINT shutdown that completed gracefully exits 0.

    uvicorn re-raises the signal it handled once it has shut down, so the process would die by
    it (status -15) even though the store was closed cleanly; supervisors read that as a crash.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


if __name__ == "__main__":
    sys.exit(main())
