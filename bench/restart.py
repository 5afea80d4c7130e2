"""Restart time: `shoal serve` on a data dir of 100,000 points -> /readyz 200; Database.open().

    python -m bench.restart            # load once (~1 min), then 3 restarts, ~2 minutes in all
    python -m bench.restart --runs 5

Data: the 63,666 Debian vectors (float16 -> float32) plus 36,334 perturbed copies of the first
rows of a fixed permutation (Gaussian noise, sigma 0.01 per component, renormalised; id
`<id>~2`, same owner and attributes): 100,000 points, 384-d, cosine, owned by the 2,116 Debian
tenants, four typed attributes each. Loaded in-process through `Database` + `Collection.upsert`
(durability "os", batches of up to 1,000 points of one owner), then closed (RocksDB flushes its
memtables to SST files on close).

Each run, side by side: spawn `shoal serve` on the dir and poll every 10 ms until /healthz
(HTTP up, recovery running in the background) and /readyz (recovery done) answer 200, read the
recovery time the server logs, stop it (SIGTERM); then, in this process, `Database.open()` on
the same dir. Medians over the runs. The OS page cache is warm (the data was just written or
read); a cold start after a reboot would add the read of the SST files from disk.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import (
    REPO,
    SCHEMA,
    Debian,
    Server,
    TempDir,
    code_version,
    cpu_seconds,
    load_debian,
    machine,
    median,
    minor_faults,
    table,
)

TOTAL = 100_000
COLLECTION = "debian"
LOAD_BATCH = 1000


def grow(data: Debian, total: int = TOTAL, seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    """The Debian points plus perturbed copies up to `total`."""
    extra = total - len(data.points)
    rng = np.random.default_rng(seed)
    source = rng.permutation(len(data.points))[:extra]
    noisy = data.vectors[source] + rng.normal(0, 0.01, (extra, data.vectors.shape[1]))
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    vectors = np.concatenate([data.vectors, noisy.astype(np.float32)])
    points = list(data.points) + [
        dict(data.points[i], id=f"{data.points[i]['id']}~2") for i in source.tolist()
    ]
    return vectors, points


def load(data_dir: Path, vectors: np.ndarray, points: list[dict]) -> tuple[float, int, int]:
    """Writes the points in-process; returns (seconds, points, tenants)."""
    from server.database import Database
    from server.model import PointInput
    from server.settings import Settings

    by_tenant: dict[str, list[int]] = {}
    for i, p in enumerate(points):
        by_tenant.setdefault(p["tenant"], []).append(i)
    database = Database(Settings(data_dir=data_dir, durability="os"))
    database.open()
    started = time.perf_counter()
    database.create_collection(COLLECTION, vectors.shape[1], "cosine", SCHEMA)
    collection = database.collection(COLLECTION)
    for tenant, rows in by_tenant.items():
        for start in range(0, len(rows), LOAD_BATCH):
            chunk = rows[start : start + LOAD_BATCH]
            inputs = [
                PointInput(
                    points[i]["id"],
                    vectors[i],
                    {k: points[i][k] for k in ("section", "priority", "installed_size_kb", "tags")},
                )
                for i in chunk
            ]
            collection.upsert(tenant, inputs)
    count, tenants = collection.arena.count, len(collection.tenants.number_of)
    database.close()
    return time.perf_counter() - started, count, tenants


def open_in_process(data_dir: Path, profile: bool = False) -> dict[str, float]:
    """`Database.open()` twice in this process: the first open in it, then a second one."""
    from server.database import Database
    from server.settings import Settings
    from storage.store import Store

    result: dict[str, float] = {}
    started = time.perf_counter()
    Store(str(data_dir), durability="fsync").close()
    result["store"] = time.perf_counter() - started
    for name in ("first", "second"):
        database = Database(Settings(data_dir=data_dir))
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        profiler = cProfile.Profile() if profile and name == "first" else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        database.open()
        if profiler is not None:
            profiler.disable()
        result[name] = time.perf_counter() - started
        result[f"{name}_faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        result["points"] = database.collection(COLLECTION).arena.count
        database.close()
        if profiler is not None:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
            print(out.getvalue(), file=sys.stderr)
    return result


def open_in_fresh_process(data_dir: Path, profile: bool = False) -> dict[str, float]:
    """`open_in_process` in a new interpreter: the first open pays first-touch page faults, as
    the server does."""
    args = [sys.executable, "-m", "bench.restart", "--open-once", str(data_dir)]
    out = subprocess.run(
        args + (["--profile"] if profile else []),
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if profile:
        print(out.stderr)
    return json.loads(out.stdout)


def restart_once(data_dir: Path) -> dict[str, float]:
    server = Server(data_dir, log_level="info")
    server.spawn()
    healthz = server.wait_for("/healthz", poll_s=0.01)
    readyz = server.wait_for("/readyz", poll_s=0.01)
    cpu = cpu_seconds(server.pid)
    faults = minor_faults(server.pid)
    stopped = time.perf_counter()
    server.stop()
    stop_s = time.perf_counter() - stopped
    found = re.search(
        r"recovered \d+ collections, (\d+) points in ([\d.]+) s", server.log_path.read_text()
    )
    if not found:
        raise RuntimeError(f"no recovery line in the log:\n{server.log_path.read_text()}")
    if int(found.group(1)) != TOTAL:
        raise RuntimeError(f"server recovered {found.group(1)} points, expected {TOTAL}")
    return {
        "healthz": healthz,
        "readyz": readyz,
        "recovery_logged": float(found.group(2)),
        "cpu_to_ready": cpu,
        "faults": faults,
        "stop": stop_s,
    }


def _import_seconds() -> float:
    """Interpreter start + importing the app (what runs before recovery can start)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import server.cli, api.app"], check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.restart", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one fresh-process Database.open()"
    )
    parser.add_argument("--open-once", type=Path, help=argparse.SUPPRESS)  # the child's job
    args = parser.parse_args(argv)
    if args.open_once is not None:
        print(json.dumps(open_in_process(args.open_once, profile=args.profile)))
        return 0

    print(f"machine: {machine()}")
    vectors, points = grow(load_debian())
    with TempDir() as tmp:
        data_dir = tmp / "data"
        load_s, count, tenants = load(data_dir, vectors, points)
        size = sum(f.stat().st_size for f in data_dir.iterdir() if f.is_file())
        print(
            f"loaded {count:,} points, {tenants:,} tenants in-process in {load_s:.1f} s "
            f"({count / load_s:,.0f} points/s, durability os); data dir {size / 2**20:.0f} MiB"
        )
        serve_runs: list[dict[str, float]] = []
        opens: list[dict[str, float]] = []
        imports: list[float] = []
        for run in range(args.runs):
            serve_runs.append(restart_once(data_dir))
            opens.append(open_in_fresh_process(data_dir))
            imports.append(_import_seconds())
            r, o = serve_runs[-1], opens[-1]
            if o["points"] != TOTAL:
                raise RuntimeError(f"Database.open() found {o['points']} points, not {TOTAL}")
            print(
                f"run {run + 1}/{args.runs}: serve -> /healthz {r['healthz']:.2f} s, "
                f"/readyz {r['readyz']:.2f} s (logged recovery {r['recovery_logged']:.2f} s, "
                f"server CPU {r['cpu_to_ready']:.2f} s, {r['faults']:,.0f} page faults, "
                f"SIGTERM stop {r['stop']:.2f} s); Database.open() in a fresh process "
                f"{o['first']:.2f} s ({o['first_faults']:,.0f} page faults), again in it "
                f"{o['second']:.2f} s ({o['second_faults']:,.0f}); Store() alone "
                f"{o['store']:.3f} s; python + imports {imports[-1]:.2f} s",
                flush=True,
            )
        if args.profile:
            print("\ncProfile of one Database.open() in a fresh process (top by own time):")
            open_in_fresh_process(data_dir, profile=True)

    def row(name: str, values: list[float]) -> list[str]:
        return [name, f"{median(values):.2f}", f"{min(values):.2f}-{max(values):.2f}"]

    def serve(key: str) -> list[float]:
        return [r[key] for r in serve_runs]

    def opened(key: str) -> list[float]:
        return [o[key] for o in opens]

    rows = [
        row("`shoal serve` spawn -> /readyz 200", serve("readyz")),
        row("`shoal serve` spawn -> /healthz 200 (HTTP up)", serve("healthz")),
        row("recovery as logged by the server (its Database.open)", serve("recovery_logged")),
        row("server CPU time, spawn -> ready", serve("cpu_to_ready")),
        row("in-process `Database.open()`, first in a fresh process", opened("first")),
        row("in-process `Database.open()`, second in that process", opened("second")),
        row("in-process `Store()` open alone (RocksDB, 5 CFs)", opened("store")),
        row("`python -c 'import server.cli, api.app'`", imports),
        row("SIGTERM -> exit (graceful stop)", serve("stop")),
    ]
    print()
    print(f"Restart, {TOTAL:,} points x 384-d, {tenants:,} tenants, medians of {args.runs} runs")
    print(table(["measure", "seconds (median)", "range"], rows))
    print(f"at the end: load average {os.getloadavg()[0]:.2f}, code={code_version()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
