"""Shared bench helpers: the Debian data set, a `shoal serve` child process, /proc CPU times."""

from __future__ import annotations

import contextlib
import gzip
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson

REPO = Path(__file__).resolve().parent.parent
DEBIAN_DIR = REPO.parent / "shared" / "data" / "debian"
SCHEMA = {
    "section": "keyword",
    "priority": "keyword",
    "installed_size_kb": "integer",
    "tags": "keyword[]",
}
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Debian:
    vectors: np.ndarray  # (n, 384) float32
    points: list[dict]  # id, tenant, tags, section, priority, installed_size_kb

    def attributes(self, i: int) -> dict:
        p = self.points[i]
        return {
            "section": p["section"],
            "priority": p["priority"],
            "installed_size_kb": p["installed_size_kb"],
            "tags": p["tags"],
        }

    def rows_by_tenant(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(self.points):
            groups.setdefault(p["tenant"], []).append(i)
        return groups


def load_debian(directory: Path = DEBIAN_DIR) -> Debian:
    vectors = np.load(directory / "vectors.f16.npy").astype(np.float32)
    with gzip.open(directory / "points.jsonl.gz", "rb") as f:
        points = [orjson.loads(line) for line in f]
    for p in points:
        p.pop("text", None)
    assert len(points) == len(vectors), "points.jsonl.gz and vectors.f16.npy differ in length"
    return Debian(vectors, points)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) and of its live children (a server's
    read workers), from /proc."""
    total = 0.0
    for each in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{each}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except FileNotFoundError:
            continue  # a child gone meanwhile
        # After the ")" of comm: field 3 (state) is fields[0], so utime (14) is fields[11].
        total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return total


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(FileNotFoundError):
            children += [int(c) for c in (task / "children").read_text().split()]
    return children


def minor_faults(pid: int) -> int:
    """Minor page faults so far (first touches of fresh memory), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[7])


class Server:
    """`shoal serve` as a child process on a free loopback port."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        log_level: str = "warning",
        env: dict[str, str] | None = None,
    ):
        self.data_dir = data_dir
        self.env = env or {}  # added to the environment: SHOAL_ADMIN_KEY...
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"shoal-{self.port}.log"
        self.args = [
            sys.executable, "-m", "server.cli", "serve", "--data-dir", str(data_dir),
            "--port", str(self.port), "--log-level", log_level, *args,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def spawn(self) -> None:
        log = self.log_path.open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            self.args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env
        )

    def wait_for(self, path: str, timeout_s: float = 120.0, poll_s: float = 0.005) -> float:
        """Seconds from spawn until GET `path` answers 200."""
        assert self.process is not None
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
                try:
                    if client.get(path).status_code == 200:
                        return time.perf_counter() - self.started_at
                except httpx.TransportError:
                    pass
                time.sleep(poll_s)
        raise TimeoutError(f"server not ready:\n{self.log_path.read_text()}")

    def start(self) -> Server:
        self.spawn()
        self.wait_for("/readyz")
        return self

    def stop(self) -> int:
        """SIGTERM: graceful shutdown (syncs and closes the store); returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)


class Profiler:
    """`py-spy record` attached to a running process. With `gil` (the default) it samples only
    the thread holding the GIL; without, every thread that is not idle (on CPU)."""

    def __init__(self, pid: int, out: Path, rate: int = 250, gil: bool = True):
        py_spy = Path(sys.executable).parent / "py-spy"
        self.out = out
        self.args = [str(py_spy), "record", "--pid", str(pid), "--threads"]
        self.args += ["--gil"] if gil else []
        self.args += ["--rate", str(rate), "--format", "raw", "-o", str(out)]
        self.rate = rate
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(1.0)  # py-spy attaches
        if self.process.poll() is not None:
            raise RuntimeError(f"py-spy failed: {self.process.stderr.read().decode()}")  # type: ignore[union-attr]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)


class TempDir:
    """A fresh directory under $TMPDIR (ext4 on this machine, so fsync reaches the disk)."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def machine() -> str:
    model = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return (
        f"nproc={os.cpu_count()}, cpu={model}, python={platform.python_version()}, "
        f"code={code_version()}, loadavg={os.getloadavg()[0]:.2f}"
    )


def code_version() -> str:
    """The commit measured, and whether server code outside bench/ and docs/ was modified."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    changed = git("status", "--porcelain", "--", ".", ":!bench", ":!docs")
    return (git("rev-parse", "--short", "HEAD") or "?") + (" +uncommitted" if changed else "")


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, columns padded for the terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])
