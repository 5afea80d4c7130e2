"""Test helpers: an in-process app over a tmp RocksDB dir, and a real `shoal serve` subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from api.app import create_app
from server.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DEBIAN_DIR = REPO.parent / "shared" / "data" / "debian"


def wait_ready(client: TestClient | httpx.Client, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise TimeoutError("server not ready")


@contextmanager
def app_client(data_dir: Path, **settings: object) -> Iterator[TestClient]:
    """The real app (lifespan, recovery, RocksDB in `data_dir`) behind a TestClient."""
    app = create_app(Settings(data_dir=data_dir, **settings))
    with TestClient(app) as client:
        wait_ready(client)
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`shoal serve` as a child process on a loopback port."""

    def __init__(self, data_dir: Path, *extra_args: str, port: int | None = None):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"shoal-{self.port}.log"
        self._args = [
            sys.executable, "-m", "server.cli", "serve",
            "--data-dir", str(data_dir), "--port", str(self.port), *extra_args,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        log = self.log_path.open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            self._args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
                try:
                    if client.get("/readyz").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise TimeoutError(f"server not ready:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM: graceful shutdown; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def client(self, timeout_s: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout_s)
