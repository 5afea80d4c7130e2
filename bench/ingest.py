"""HTTP ingest throughput of a real `shoal serve`: vectors/s, batch latency, server CPU per batch.

    python -m bench.ingest                  # 3 runs per (workload, durability), ~3 minutes
    python -m bench.ingest --runs 5
    python -m bench.ingest --profile        # plus one fsync run per workload under py-spy

Data: the Debian set (63,666 x 384, float16 -> float32), each point owned by its `tenant` field,
with `section`, `priority`, `installed_size_kb` and `tags` as typed attributes. Two workloads:

- `owners`: every point; a request carries up to 500 points of one owner (an upsert names one
  tenant), so the Zipf-like tenant sizes give 2,174 requests of 29 points on average;
- `full500`: only the 19 tenants owning >= 500 points, cut into 58 requests of exactly 500
  points, sent three times under three tenant names (`<tenant>`, `<tenant>#2`, `<tenant>#3`; ids
  are unique per owner, so every copy creates new points): 174 requests, 87,000 points.

Four client threads (one httpx.Client each, keep-alive) send pre-encoded bodies (orjson, before
the clock starts, so client-side JSON encoding is not counted); the clients still share the two
cores with the server, and their CPU time is reported. Each run starts a fresh server on a fresh
data dir; runs alternate fsync/os so both see the same machine noise; medians are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from bench.common import (
    SCHEMA,
    Debian,
    Profiler,
    Server,
    TempDir,
    code_version,
    cpu_seconds,
    load_debian,
    machine,
    median,
    percentile,
    table,
)
from bench.profile import stages, summarize

COLLECTION = "debian"
BATCH = 500
CLIENTS = 4
FULL_COPIES = 3  # full500 sends the big tenants' points under 3 tenant names
PROFILE_RATE = 250


@dataclass
class Request:
    path: str
    body: bytes
    points: int


@dataclass
class Workload:
    name: str
    requests: list[Request]
    tenants: int

    @property
    def points(self) -> int:
        return sum(r.points for r in self.requests)


@dataclass
class RunResult:
    seconds: float
    latencies: list[float]
    server_cpu: float
    client_cpu: float
    requests: int
    points: int

    @property
    def vectors_per_s(self) -> float:
        return self.points / self.seconds


def _encode(data: Debian, tenant: str, rows: list[int]) -> Request:
    points = [
        {"id": data.points[i]["id"], "vector": data.vectors[i], "attributes": data.attributes(i)}
        for i in rows
    ]
    body = orjson.dumps({"points": points}, option=orjson.OPT_SERIALIZE_NUMPY)
    path = f"/v1/collections/{COLLECTION}/tenants/{quote(tenant, safe='')}/points"
    return Request(path, body, len(rows))


def build_workloads(data: Debian) -> list[Workload]:
    groups = data.rows_by_tenant()
    owners = [
        _encode(data, tenant, rows[start : start + BATCH])
        for tenant, rows in groups.items()
        for start in range(0, len(rows), BATCH)
    ]
    random.Random(0).shuffle(owners)  # big and small tenants interleaved
    big = {t: rows for t, rows in groups.items() if len(rows) >= BATCH}
    full = [
        _encode(data, tenant if copy == 0 else f"{tenant}#{copy + 1}", rows[start : start + BATCH])
        for copy in range(FULL_COPIES)
        for tenant, rows in big.items()
        for start in range(0, len(rows) - BATCH + 1, BATCH)
    ]
    random.Random(0).shuffle(full)
    return [
        Workload("owners", owners, len(groups)),
        Workload("full500", full, FULL_COPIES * len(big)),
    ]


def _warm_up(clients: list[httpx.Client]) -> None:
    """A throwaway collection: imports, first-call paths and keep-alive connections warmed."""
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((BATCH, 384), dtype=np.float32)
    body = orjson.dumps(
        {"points": [{"id": str(i), "vector": v} for i, v in enumerate(vectors)]},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    clients[0].post("/v1/collections", json={"name": "warmup", "dim": 384}).raise_for_status()
    threads = [
        threading.Thread(
            target=lambda c=c, i=i: c.put(
                f"/v1/collections/warmup/tenants/w{i}/points",
                content=body,
                headers={"content-type": "application/json"},
            ).raise_for_status()
        )
        for i, c in enumerate(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run_once(
    workload: Workload, durability: str, profile_to: Path | None = None, read_workers: int = 0
) -> RunResult:
    with TempDir() as tmp:
        workers = ("--read-workers", str(read_workers))
        server = Server(tmp / "data", "--durability", durability, *workers).start()
        pid = server.pid
        clients = [httpx.Client(base_url=server.url, timeout=120.0) for _ in range(CLIENTS)]
        try:
            _warm_up(clients)
            create = {"name": COLLECTION, "dim": 384, "metric": "cosine", "schema": SCHEMA}
            clients[0].post("/v1/collections", json=create).raise_for_status()
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()
            queue = iter(workload.requests)

            def client_loop(client: httpx.Client) -> None:
                headers = {"content-type": "application/json"}
                mine: list[float] = []
                while True:
                    with lock:
                        request = next(queue, None)
                    if request is None:
                        break
                    started = time.perf_counter()
                    response = client.put(request.path, content=request.body, headers=headers)
                    mine.append(time.perf_counter() - started)
                    if response.status_code != 200 or response.json()["created"] != request.points:
                        errors.append(f"{request.path}: {response.status_code} {response.text}")
                with lock:
                    latencies.extend(mine)

            threads = [threading.Thread(target=client_loop, args=(c,)) for c in clients]
            with (
                Profiler(pid, profile_to, PROFILE_RATE) if profile_to else contextlib.nullcontext()
            ):
                server_cpu0, client_cpu0 = cpu_seconds(pid), time.process_time()
                started = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                seconds = time.perf_counter() - started
                server_cpu = cpu_seconds(pid) - server_cpu0
                client_cpu = time.process_time() - client_cpu0
            if errors:
                raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0][:500]}")
            info = clients[0].get(f"/v1/collections/{COLLECTION}").json()
            if info["points"] != workload.points or info["tenants"] != workload.tenants:
                raise RuntimeError(f"ingested {info}, expected {workload.points} points")
        finally:
            for c in clients:
                c.close()
            server.stop()
    return RunResult(
        seconds, latencies, server_cpu, client_cpu, len(workload.requests), workload.points
    )


def _row(workload: Workload, durability: str, runs: list[RunResult]) -> list[str]:
    per_run_p50 = [percentile(r.latencies, 50) for r in runs]
    per_run_p99 = [percentile(r.latencies, 99) for r in runs]
    rates = [r.vectors_per_s for r in runs]
    cpu_per_batch = [r.server_cpu / r.requests for r in runs]
    cpu_per_vector = [r.server_cpu / r.points for r in runs]
    server_util = [r.server_cpu / r.seconds for r in runs]
    client_util = [r.client_cpu / r.seconds for r in runs]
    return [
        workload.name,
        durability,
        f"{len(workload.requests)} x {workload.points / len(workload.requests):.0f}",
        f"{median(rates):,.0f}",
        f"{min(rates):,.0f}-{max(rates):,.0f}",
        f"{median(per_run_p50) * 1e3:.1f}",
        f"{median(per_run_p99) * 1e3:.1f}",
        f"{median(cpu_per_batch) * 1e3:.1f}",
        f"{median(cpu_per_vector) * 1e6:.0f}",
        f"{median(server_util):.2f}",
        f"{median(client_util):.2f}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per (workload, durability)")
    parser.add_argument(
        "--workloads", default="owners,full500", help="comma-separated: owners, full500"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run each workload once with fsync under `py-spy record` and summarize",
    )
    parser.add_argument(
        "--profile-dir", type=Path, default=Path("/tmp"), help="where py-spy writes profiles"
    )
    parser.add_argument(
        "--read-workers", type=int, default=0, help="the server's read workers (they follow)"
    )
    args = parser.parse_args(argv)

    print(f"machine: {machine()}")
    data = load_debian()
    started = time.perf_counter()
    wanted = args.workloads.split(",")
    workloads = [w for w in build_workloads(data) if w.name in wanted]
    encode_s = time.perf_counter() - started
    for w in workloads:
        size = sum(len(r.body) for r in w.requests)
        print(
            f"workload {w.name}: {len(w.requests)} requests, {w.points} points, {w.tenants} "
            f"tenants, {size / 1e6:.0f} MB of JSON ({size / w.points:.0f} B/point)"
        )
    print(f"pre-encoded with orjson in {encode_s:.1f} s (not timed)")

    results: dict[tuple[str, str], list[RunResult]] = {}
    for run in range(args.runs):
        for w in workloads:
            for durability in ("fsync", "os"):
                result = run_once(w, durability, read_workers=args.read_workers)
                results.setdefault((w.name, durability), []).append(result)
                print(
                    f"run {run + 1}/{args.runs} {w.name:8s} {durability:5s}: "
                    f"{result.vectors_per_s:8,.0f} vectors/s in {result.seconds:5.1f} s, "
                    f"p50 {percentile(result.latencies, 50) * 1e3:6.1f} ms, "
                    f"p99 {percentile(result.latencies, 99) * 1e3:6.1f} ms, "
                    f"server CPU {result.server_cpu:5.1f} s, client CPU {result.client_cpu:5.1f} s",
                    flush=True,
                )

    headers = [
        "workload",
        "durability",
        "requests x pts",
        "vectors/s (median)",
        "vectors/s (range)",
        "batch p50 ms",
        "batch p99 ms",
        "server CPU ms/batch",
        "server CPU us/vector",
        "server cores busy",
        "client cores busy",
    ]
    rows = [_row(w, d, results[(w.name, d)]) for w in workloads for d in ("fsync", "os")]
    print()
    print(f"Ingest over HTTP, {CLIENTS} clients, medians of {args.runs} runs; target 10,000/s")
    print(table(headers, rows))
    for w in workloads:
        fsync = [r.vectors_per_s for r in results[(w.name, "fsync")]]
        osync = [r.vectors_per_s for r in results[(w.name, "os")]]
        ratios = [f / o for f, o in zip(fsync, osync, strict=True)]
        print(
            f"{w.name}: fsync/os throughput ratio per run pair "
            f"{', '.join(f'{x:.2f}' for x in ratios)}"
            f" (median {statistics.median(ratios):.2f})"
        )

    if args.profile:
        for w in workloads:
            out = args.profile_dir / f"shoal-ingest-{w.name}-fsync.txt"
            result = run_once(w, "fsync", profile_to=out)
            print(
                f"\nprofile, {w.name}, fsync: py-spy --gil at {PROFILE_RATE} Hz "
                f"({result.vectors_per_s:,.0f} vectors/s while sampled, server CPU "
                f"{result.server_cpu / result.points * 1e6:.0f} us/vector); raw stacks in {out}"
            )
            print(summarize(out, PROFILE_RATE, result.points))
        body = next(r.body for r in build_workloads(data)[1].requests)
        print("\nstages in-process, one 500-point body, single thread (median of 15):")
        print(table(["stage", "ms per 500", "us/vector"], [
            [name, f"{s * 1e3:.2f}", f"{s / BATCH * 1e6:.1f}"] for name, s in stages(body)
        ]))  # fmt: skip
    print(f"at the end: load average {os.getloadavg()[0]:.2f}, code={code_version()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
