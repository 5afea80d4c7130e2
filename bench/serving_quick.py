"""A quick serving check between code changes: one real `shoal serve` over a Debian data dir
kept between runs, tenant top-10 queries by wrk at 1 and 4 connections, medians of 3.

    python -m bench.serving_quick --data-dir /tmp/shoal-quick [--env SHOAL_HTTP_PARSER=h11]

The first run loads the set over HTTP (about 20 s); later runs restart the server on it.
`bench.serving` is the full comparison with pgvector; this is its Shoal half, small enough to
run after every change.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import httpx

from bench import common, debian_queries, loadgen, shoal_side
from tests.support import ServerProcess


def _settled(client: httpx.Client) -> bool:
    graphs = client.get("/v1/collections/debian").json()["graphs"]
    return not graphs.get("pending") and not graphs.get("building")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/shoal-quick"))
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    for item in args.env:
        name, _, value = item.partition("=")
        os.environ[name] = value
    data = common.load_debian()
    parts = debian_queries.split(data)
    fresh = not args.data_dir.exists()
    server = ServerProcess(args.data_dir).start(120)
    url = f"http://127.0.0.1:{server.port}"
    try:
        if fresh:
            print("loaded:", shoal_side.load(url, data, parts.loaded))
        with httpx.Client(base_url=url, timeout=120) as client:
            while not _settled(client):
                time.sleep(1)
        queries = debian_queries.build(data, parts, "tenant")
        requests = shoal_side.requests(data, queries, "default", 10)
        assert server.process is not None
        for clients in (1, 4):
            runs = [
                loadgen.run_wrk(url, requests, clients, args.seconds, server.process.pid)
                for _ in range(3)
            ]
            qps = statistics.median(r.requests / r.seconds for r in runs)
            cpu = statistics.median((r.server_cpu_s or 0.0) / r.requests * 1e6 for r in runs)
            p50 = statistics.median(r.p50_ms for r in runs)
            errors = sum(r.errors for r in runs)
            print(
                f"clients {clients}: {qps:,.0f} QPS, server CPU {cpu:,.0f} us/query, "
                f"p50 {p50:.2f} ms, errors {errors}"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
