"""A quick serving check between code changes: one real `shoal serve` over a Debian data dir
kept between runs, tenant top-10 queries by wrk at 1 and 4 connections, medians of 3.

    python -m bench.serving_quick --data-dir /tmp/shoal-quick [--env SHOAL_HTTP_PARSER=h11]
    python -m bench.serving_quick --workload tenant+section --config b64   # other requests
    python -m bench.serving_quick --ab SHOAL_LEAN_LANE=false   # two servers, interleaved
    python -m bench.serving_quick --ab SHOAL_READ_WORKERS=1    # without and with a worker
    python -m bench.serving_quick --b-code /tmp/shoal-base     # B runs another checkout
    python -m bench.serving_quick --split                      # one process or two, 4 clients

The first run loads the set over HTTP (about 20 s); later runs restart the server on it.
`bench.serving` is the full comparison with pgvector; this is its Shoal half, small enough to
run after every change. With `--ab`, a second server (on a copy of the data dir, with the given
variables, or with `--b-code` the code of another checkout, say `git clone . /tmp/shoal-base`
of the commit before a change) runs beside the first and every timed point alternates between
them: on this noisy machine only such side-by-side ratios mean anything. With `--split`, the
ceiling of serving reads from two processes: server A alone with 4 connections, then A and B
(a copy of the data dir, same code) with 2 connections each at the same time, interleaved. An
upper bound for read workers: no writes forwarded, no writer followed, connections split
evenly.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import threading
from pathlib import Path

import httpx

from bench import common, debian_queries, loadgen, shoal_side
from bench.common import Profiler
from bench.profile import summarize_query
from tests.support import ServerProcess

PROFILE_RATE = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/shoal-quick"))
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--ab", action="append", default=[], help="NAME=VALUE for server B")
    parser.add_argument("--b-code", type=Path, help="server B runs the checkout in this dir")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workload", default="tenant", choices=debian_queries.WORKLOADS)
    parser.add_argument("--config", default="default", help="bench.shoal_side.CONFIGS")
    parser.add_argument("--profile", action="store_true", help="then py-spy server A, 4 clients")
    parser.add_argument(
        "--split", action="store_true", help="4 clients on one server, or 2 + 2 on two"
    )
    args = parser.parse_args()
    for item in args.env:
        name, _, value = item.partition("=")
        os.environ[name] = value
    data = common.load_debian()
    parts = debian_queries.split(data)
    fresh = not args.data_dir.exists()
    servers = {"A": ServerProcess(args.data_dir).start(120)}
    try:
        url = servers["A"].url
        if fresh:
            print("loaded:", shoal_side.load(url, data, parts.loaded))
        _wait_settled(url)
        ab = bool(args.ab or args.b_code or args.split)
        if ab:
            servers["A"].stop()  # copy a closed store, then run both
            copy = args.data_dir.with_name(args.data_dir.name + "-b")
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(args.data_dir, copy)
            servers["A"].start(120)
            env = dict(item.partition("=")[::2] for item in args.ab)
            servers["B"] = ServerProcess(copy, env=env, cwd=args.b_code).start(120)
            for server in servers.values():
                _wait_settled(server.url)
        queries = debian_queries.build(data, parts, args.workload)
        requests = shoal_side.requests(data, queries, args.config, 10)
        if args.split:
            _split(servers, requests, args.seconds, args.runs)
            return
        results: dict[tuple[str, int], list[loadgen.LoadResult]] = {}
        for _ in range(args.runs):
            for clients in (1, 4):
                for name, server in servers.items():
                    assert server.process is not None
                    run = loadgen.run_wrk(
                        server.url, requests, clients, args.seconds, server.process.pid
                    )
                    results.setdefault((name, clients), []).append(run)
        for (name, clients), runs in results.items():
            qps = statistics.median(r.requests / r.seconds for r in runs)
            cpu = statistics.median((r.server_cpu_s or 0.0) / r.requests * 1e6 for r in runs)
            p50 = statistics.median(r.p50_ms for r in runs)
            errors = sum(r.errors for r in runs)
            label = f"{name} " if ab else ""
            print(
                f"{label}clients {clients}: {qps:,.0f} QPS, server CPU {cpu:,.0f} us/query, "
                f"p50 {p50:.2f} ms, errors {errors}"
            )
        if args.profile:
            server = servers["A"]
            assert server.process is not None
            out = Path("/tmp/shoal-quick-profile.txt")
            with Profiler(server.process.pid, out, PROFILE_RATE):
                run = loadgen.run_wrk(server.url, requests, 4, 10, server.process.pid)
            print(summarize_query(out, PROFILE_RATE, run.requests))
        if ab:
            for clients in (1, 4):
                ratios = [
                    (b.requests / b.seconds) / (a.requests / a.seconds)
                    for a, b in zip(results[("A", clients)], results[("B", clients)], strict=True)
                ]
                print(f"B/A QPS at {clients} clients: median {statistics.median(ratios):.3f}")
    finally:
        for server in servers.values():
            server.stop()


def _split(
    servers: dict[str, ServerProcess], requests: list[loadgen.Request], seconds: int, runs: int
) -> None:
    """Server A with 4 connections, then A and B with 2 each at once; QPS summed."""

    def load(server: ServerProcess, clients: int, into: list[loadgen.LoadResult]) -> None:
        assert server.process is not None
        into.append(loadgen.run_wrk(server.url, requests, clients, seconds, server.process.pid))

    one, two = [], []
    for _ in range(runs):
        alone: list[loadgen.LoadResult] = []
        load(servers["A"], 4, alone)
        one.append(alone[0].requests / alone[0].seconds)
        done: list[loadgen.LoadResult] = []
        threads = [threading.Thread(target=load, args=(s, 2, done)) for s in servers.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        two.append(sum(r.requests / r.seconds for r in done))
        print(f"one process, 4 connections: {one[-1]:,.0f} QPS; two, 2 + 2: {two[-1]:,.0f}")
    ratio = statistics.median(b / a for a, b in zip(one, two, strict=True))
    print(
        f"median: one {statistics.median(one):,.0f}, two {statistics.median(two):,.0f} QPS; "
        f"two / one {ratio:.2f}"
    )


def _wait_settled(url: str) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        shoal_side.wait_for_indexes(client)


if __name__ == "__main__":
    main()
