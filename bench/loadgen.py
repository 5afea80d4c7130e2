"""HTTP load generator for a running Shoal server: QPS and latency at N concurrent clients.

    python -m bench.loadgen --url http://127.0.0.1:8080 --requests queries.tsv --clients 1,4,16

A request file has one request a line: the path, a tab, the JSON body (one line). Each
simulated client is a closed loop (send, wait for the answer, send the next) on its own
keep-alive connection; the clients take the requests in turn from the shared list, cycling
through it until `duration_s` has passed and every request has been sent at least once.

Two load sides, chosen by `--load`:

- `httpx`: asyncio (uvloop when installed) with one `httpx.AsyncClient` per client, one
  connection each, TCP_NODELAY set; latency is measured around each call;
- `wrk`: the `wrk` binary (Debian package `wrk`) with a Lua script that cycles through the same
  bodies, one thread, N connections; latency percentiles are wrk's own.

The load side runs on the same 2 cores as the server, so its CPU time is reported with the
result (`client_cpu_s`: this process for httpx, the wrk child for wrk) next to the server's
(`server_cpu_s`, from /proc when the server pid is given).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson

from bench.common import cpu_seconds, table

LOADS = ("httpx", "wrk")
_NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


@dataclass
class Request:
    path: str
    body: bytes  # pre-encoded JSON: client-side encoding is not timed


@dataclass
class LoadResult:
    load: str  # "httpx" or "wrk" (or the peer's driver)
    clients: int
    seconds: float
    requests: int
    errors: int  # transport errors and non-200 answers
    p50_ms: float
    p99_ms: float
    client_cpu_s: float
    server_cpu_s: float | None

    @classmethod
    def from_latencies(
        cls,
        load: str,
        clients: int,
        seconds: float,
        latencies_s: list[float],
        errors: int,
        client_cpu_s: float,
        server_cpu_s: float | None,
    ) -> LoadResult:
        p50, p99 = np.percentile(np.asarray(latencies_s), [50, 99]) * 1e3
        return cls(load, clients, seconds, len(latencies_s), errors, float(p50), float(p99),
                   client_cpu_s, server_cpu_s)  # fmt: skip

    @property
    def qps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def cpu_us_per_request(self, which: str) -> float | None:
        value = self.client_cpu_s if which == "client" else self.server_cpu_s
        return None if value is None or not self.requests else value / self.requests * 1e6


def answers(url: str, requests: list[Request]) -> list[tuple[int, object]]:
    """Send every request once, in order, on one connection: (status, parsed JSON) each."""
    out: list[tuple[int, object]] = []
    transport = httpx.HTTPTransport(socket_options=_NODELAY)
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=url, transport=transport, timeout=60.0) as client:
        for r in requests:
            response = client.post(r.path, content=r.body, headers=headers)
            out.append((response.status_code, orjson.loads(response.content)))
    return out


def run(
    load: str,
    url: str,
    requests: list[Request],
    clients: int,
    duration_s: float,
    server_pid: int | None = None,
) -> LoadResult:
    if load == "httpx":
        return run_httpx(url, requests, clients, duration_s, server_pid)
    if load == "wrk":
        return run_wrk(url, requests, clients, duration_s, server_pid)
    raise ValueError(f"unknown load side {load!r}; one of {LOADS}")


def _server_cpu(pid: int | None) -> float | None:
    return None if pid is None else cpu_seconds(pid)


def run_httpx(
    url: str,
    requests: list[Request],
    clients: int,
    duration_s: float,
    server_pid: int | None = None,
) -> LoadResult:
    async def main() -> tuple[float, list[float], int, float, float | None]:
        sessions = [
            httpx.AsyncClient(
                base_url=url,
                transport=httpx.AsyncHTTPTransport(socket_options=_NODELAY),
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                timeout=60.0,
                headers={"content-type": "application/json"},
            )
            for _ in range(clients)
        ]
        # Open every connection before the clock starts.
        await asyncio.gather(*(s.get("/healthz") for s in sessions))
        cursor = itertools.count()
        latencies: list[float] = []
        errors = 0
        deadline = 0.0

        async def client_loop(session: httpx.AsyncClient) -> None:
            nonlocal errors
            while True:
                i = next(cursor)
                if i >= len(requests) and time.perf_counter() >= deadline:
                    return
                r = requests[i % len(requests)]
                started = time.perf_counter()
                try:
                    response = await session.post(r.path, content=r.body)
                    await response.aread()
                    ok = response.status_code == 200
                except httpx.TransportError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

        server0, client0 = _server_cpu(server_pid), time.process_time()
        started = time.perf_counter()
        deadline = started + duration_s
        await asyncio.gather(*(client_loop(s) for s in sessions))
        seconds = time.perf_counter() - started
        client_cpu = time.process_time() - client0
        server1 = _server_cpu(server_pid)
        server_cpu = None if server0 is None or server1 is None else server1 - server0
        for s in sessions:
            await s.aclose()
        return seconds, latencies, errors, client_cpu, server_cpu

    seconds, latencies, errors, client_cpu, server_cpu = _asyncio_run(main())
    return LoadResult.from_latencies(
        "httpx", clients, seconds, latencies, errors, client_cpu, server_cpu
    )


def _asyncio_run(coroutine):  # type: ignore[no-untyped-def]
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


# One Lua state per wrk thread: `init` reads the request file, `request` cycles through it,
# `done` (main state) prints one parseable line. wrk latencies are in microseconds.
_WRK_SCRIPT = r"""
local requests = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do
    local path, body = line:match("^([^\t]+)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", path,
      {["Content-Type"] = "application/json"}, body)
  end
end
function request()
  i = i % #requests + 1
  return requests[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKRESULT %d %d %d %d %.1f %.1f\n", summary.requests,
    summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    requests: list[Request],
    clients: int,
    duration_s: float,
    server_pid: int | None = None,
) -> LoadResult:
    if not wrk_available():
        raise RuntimeError("wrk not found: apt-get install wrk, or use --load httpx")
    with tempfile.TemporaryDirectory(prefix="shoal-wrk-") as tmp:
        script = Path(tmp) / "requests.lua"
        script.write_text(_WRK_SCRIPT)
        listing = Path(tmp) / "requests.tsv"
        write_requests(listing, requests)
        seconds = max(1, round(duration_s))
        args = ["wrk", "-t", "1", "-c", str(clients), "-d", f"{seconds}s", "--timeout", "30s"]
        args += ["-s", str(script), url, "--", str(listing)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server0 = _server_cpu(server_pid)
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        server1 = _server_cpu(server_pid)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKRESULT")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    n, duration_us, status_errors, io_errors, p50_us, p99_us = line.split()[1:]
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return LoadResult(
        "wrk",
        clients,
        int(duration_us) / 1e6,
        int(n),
        int(status_errors) + int(io_errors),
        float(p50_us) / 1e3,
        float(p99_us) / 1e3,
        client_cpu,
        None if server0 is None or server1 is None else server1 - server0,
    )


def write_requests(path: Path, requests: list[Request]) -> None:
    with path.open("wb") as f:
        for r in requests:
            if b"\n" in r.body or b"\t" in r.path.encode():
                raise ValueError(f"{r.path}: a request must fit on one line")
            f.write(r.path.encode() + b"\t" + r.body + b"\n")


def read_requests(path: Path) -> list[Request]:
    out = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            p, _, body = line.partition(b"\t")
            out.append(Request(p.decode(), body))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--requests", type=Path, required=True, help="path<TAB>body per line")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated client counts")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per client count")
    parser.add_argument("--load", choices=LOADS, default="httpx")
    parser.add_argument("--server-pid", type=int, help="also report the server's CPU time")
    args = parser.parse_args(argv)
    requests = read_requests(args.requests)
    statuses = [status for status, _ in answers(args.url, requests)]
    bad = sum(s != 200 for s in statuses)
    print(f"{len(requests)} requests; {bad} did not answer 200 when sent once each")
    rows = []
    for clients in (int(c) for c in args.clients.split(",")):
        r = run(args.load, args.url, requests, clients, args.duration, args.server_pid)
        server = r.cpu_us_per_request("server")
        rows.append([
            str(clients), f"{r.qps:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", str(r.errors),
            "-" if server is None else f"{server:,.0f}",
            f"{r.cpu_us_per_request('client'):,.0f}",
        ])  # fmt: skip
    headers = ["clients", "QPS", "p50 ms", "p99 ms", "errors", "server CPU us/req"]
    print(table([*headers, f"{args.load} CPU us/req"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
