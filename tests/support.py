"""Test helpers: an in-process app over a tmp RocksDB dir, and a real `shoal serve` subprocess."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient

from api.app import create_app
from server.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DEBIAN_DIR = REPO.parent / "shared" / "data" / "debian"
ADMIN_KEY = "test-admin-key-0123456789abcdef"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ADMIN = bearer(ADMIN_KEY)


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
    """`shoal serve` as a child process on a loopback port.

    `env` adds variables (SHOAL_ADMIN_KEY...); with `tls_ca` (the certificate to trust) it is
    reached over https; `cwd` runs the code of another checkout (benchmarks compare commits).
    """

    def __init__(
        self,
        data_dir: Path,
        *extra_args: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        tls_ca: Path | None = None,
        cwd: Path | None = None,
    ):
        self.data_dir = data_dir
        self.cwd = cwd or REPO
        self.port = port or free_port()
        self.url = f"{'https' if tls_ca else 'http'}://127.0.0.1:{self.port}"
        self.verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else True
        )
        self._env = env or {}
        self.log_path = data_dir.parent / f"shoal-{self.port}.log"
        self._args = [
            sys.executable, "-m", "server.cli", "serve",
            "--data-dir", str(data_dir), "--port", str(self.port), *extra_args,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        log = self.log_path.open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self._env)
        self.process = subprocess.Popen(
            self._args, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        with self.client(timeout_s=5.0) as client:
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

    def client(self, timeout_s: float = 30.0, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout_s, verify=self.verify, **kwargs)


def read_debian(debian_dir: Path) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The Debian set's vectors (float32) and point records, row for row."""
    vectors = np.load(debian_dir / "vectors.f16.npy").astype(np.float32)
    with gzip.open(debian_dir / "points.jsonl.gz", "rt") as lines:
        points = [json.loads(line) for line in lines]
    assert len(points) == len(vectors)
    return vectors, points
