"""Read workers: processes that serve queries beside the writer, on the same port.

One Python process answers at most one core's worth of queries (the GIL; a query holds it
for about 0.26 ms of Python around a search that releases it). `shoal serve --read-workers N`
runs the writer (this process: every write, the indexes' upkeep, the files) and N workers,
each with its own copy of the indexes, followed from the writer's change feed
(`server.follower`), each listening on the same address with `SO_REUSEPORT`, so the kernel
spreads connections over the processes. A worker serves queries and forwards everything else
to the writer over a Unix socket (`api.forward`).

The run directory (private to the server's user, under the system's temporary directory)
holds what the processes share: the writer's socket, the published change sequence, the
metrics files of every process and each worker's RocksDB follower directory.

The supervisor (a thread of the writer) starts the workers once the writer has recovered,
starts a worker again when it exits (a crash, `kill -9`, or a worker that fell behind the
change feed), after a pause that doubles while they keep failing, and stops them, then
removes the run directory, when the writer shuts down. A worker whose writer disappears
shuts itself down.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from server.follower import SharedSequences
from server.metrics import process_exited

log = logging.getLogger("shoal.workers")

WORKER_FLAG = "--read-worker-of"  # a hidden `serve` flag: JSON, the run directory and port
_RESTART_PAUSE_S = (0.5, 30.0)  # first pause, longest pause
_HEALTHY_AFTER_S = 60.0  # a worker up this long resets the pause
_STOP_GRACE_S = 30.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def writer_socket(self) -> Path:
        return self.path / "writer.sock"

    @property
    def sequence(self) -> Path:
        return self.path / "sequence"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics"

    def follower(self, pid: int) -> Path:
        return self.path / f"follower-{pid}"

    @classmethod
    def create(cls) -> RunDir:
        """A new run directory (mode 0700), named after this process; those of writers that
        died without removing theirs (`kill -9`) are removed first."""
        base = Path(tempfile.gettempdir())
        for stale in base.glob("shoal-run-*"):
            pid = stale.name.split("-")[2]
            if pid.isdigit() and not _alive(int(pid)) and (stale / "sequence").exists():
                shutil.rmtree(stale, ignore_errors=True)
        run = cls(Path(tempfile.mkdtemp(prefix=f"shoal-run-{os.getpid()}-")))
        run.metrics.mkdir()
        return run

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@dataclass(frozen=True)
class WorkerRole:
    """What a worker process is told by its writer (`WORKER_FLAG`); `slot`: its number, 0 to
    `read_workers - 1` (its position in `SharedSequences`)."""

    run: RunDir
    port: int
    writer_pid: int
    slot: int = 0

    def to_json(self) -> str:
        values = {"run": str(self.run.path), "port": self.port, "writer": self.writer_pid}
        return json.dumps(values | {"slot": self.slot})

    @classmethod
    def from_json(cls, raw: str) -> WorkerRole:
        values = json.loads(raw)
        run = RunDir(Path(values["run"]))
        return cls(run, int(values["port"]), int(values["writer"]), int(values["slot"]))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def listening_socket(host: str, port: int, probe: bool = False) -> socket.socket:
    """A TCP socket bound (not yet listening) that other processes of this user may bind too:
    the kernel spreads new connections over every process listening on it. `probe` (the
    writer): first make sure nothing else has the address, which `SO_REUSEPORT` would
    otherwise share with another server of the same user (an old one still draining)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if probe and port != 0:
        with socket.socket(family, socket.SOCK_STREAM) as alone:
            alone.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            alone.bind((host, port))  # OSError EADDRINUSE: taken, by anyone
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(False)
    return sock


def unix_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    return sock


def exit_with_writer(writer_pid: int, stop: Callable[[], None]) -> None:
    """A worker: call `stop` once the writer process is gone. The kernel sends SIGTERM at
    once when the writer exits (prctl PR_SET_PDEATHSIG, Linux); a thread also checks every
    second, for the writer that exited before that was set."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        log.warning("no parent-death signal here; the writer is checked every second")

    def watch() -> None:
        while os.getppid() == writer_pid:
            time.sleep(1.0)
        log.warning("the writer (pid %d) is gone; this read worker stops", writer_pid)
        stop()

    threading.Thread(target=watch, name="writer-watch", daemon=True).start()


class Supervisor:
    """Starts, restarts and stops the read workers of this (writer) process."""

    def __init__(self, count: int, argv: Sequence[str], role: WorkerRole, shared: SharedSequences):
        self.count = count
        self._argv = list(argv)
        self._role = role
        self._shared = shared
        self._procs: dict[int, subprocess.Popen[bytes]] = {}  # slot -> process
        self._stopping = threading.Event()
        self._stopped = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, ready: Callable[[], bool]) -> None:
        """Start the workers once `ready()` (the writer recovered), and keep them running."""
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="read-workers", daemon=True
        )
        self._thread.start()

    def _spawn(self, slot: int) -> None:
        # The feed must keep what the worker will need from the moment it opens the store:
        # its position starts at the newest record now, which its view will include.
        self._shared.set_position(slot, self._shared.value)
        role = [WORKER_FLAG, replace(self._role, slot=slot).to_json()]
        proc = subprocess.Popen([sys.executable, "-m", "server.cli", *self._argv, *role])
        with self._lock:
            self._procs[slot] = proc
        log.info("read worker %d started (pid %d)", slot, proc.pid)

    def _run(self, ready: Callable[[], bool]) -> None:
        while not ready():
            if self._stopping.wait(0.05):
                return
        started: dict[int, float] = {}
        pause: dict[int, float] = {}
        due: dict[int, float] = {slot: 0.0 for slot in range(self.count)}  # slot -> start at
        while not self._stopping.is_set():
            try:
                self._tend(started, pause, due)
            except Exception:  # the thread must live: its end would SIGTERM every worker
                log.exception("supervising the read workers failed; going on")
            self._stopping.wait(0.2)

    def _tend(
        self, started: dict[int, float], pause: dict[int, float], due: dict[int, float]
    ) -> None:
        """One round: start the workers that are due, note the ones that exited."""
        now = time.monotonic()
        for slot in [s for s, at in due.items() if at <= now]:
            try:
                self._spawn(slot)
            except OSError:
                log.exception("read worker %d could not be started; retrying", slot)
                due[slot] = now + _RESTART_PAUSE_S[1]
                continue
            del due[slot]
            started[slot] = now
        for slot, proc in list(self._procs.items()):
            code = proc.poll()
            if code is None or slot in due or self._stopping.is_set():
                continue
            self._forget(proc)
            up = now - started[slot]
            first, longest = _RESTART_PAUSE_S
            previous = pause.get(slot, 0.0)
            healthy = up >= _HEALTHY_AFTER_S or previous == 0.0
            wait = pause[slot] = first if healthy else min(longest, 2 * previous)
            due[slot] = now + wait
            log.warning(
                "read worker %d (pid %d) exited with status %d after %.1f s; "
                "starting another in %.1f s",
                slot,
                proc.pid,
                code,
                up,
                wait,
            )

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        """What an exited worker leaves behind: its metrics stay counted (process_exited
        keeps the totals), its store directory goes."""
        try:
            process_exited(self._role.run.metrics, proc.pid)
        except OSError:
            log.exception("metrics files of read worker pid %d", proc.pid)
        shutil.rmtree(self._role.run.follower(proc.pid), ignore_errors=True)

    def stop(self) -> None:
        """SIGTERM every worker (they drain their requests), SIGKILL any still up after the
        grace period. Once: later calls wait for the first to finish."""
        with self._lock:
            first = not self._stopped
            self._stopped = True
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            procs = list(self._procs.values())
        if first:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("read worker pid %d did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait()
