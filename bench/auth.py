"""The cost of authentication: tenant query QPS with auth off and on, side by side, in one run.

    python -m bench.auth [--rounds 9] [--seconds 2] [--clients 2] [--interleaved 3000]

Three real `shoal serve` processes hold the same data (synthetic: 20 tenants of 400 points,
128-d, so every query is an exact scan of a few hundred rows and HTTP dominates: the worst
case for a fixed per-request cost):

- `off`: no admin key (open, loopback), requests without a header;
- `on`: an admin key; every query carries the tenant's own `read` key (authentication,
  scope check, audit-free path);
- `on+quota`: the same, plus a query rate quota on every tenant, high enough never to refuse
  (so each request also passes through two token buckets).

Two measurements, both side by side:

1. throughput: each round measures every variant for `--seconds` with `--clients` threads
   sending queries back to back over keep-alive connections; the order of the variants
   rotates from round to round. Printed: the median QPS of each variant over the rounds, the
   server's CPU time per query, and the medians of the per-round ratios to `off`. On a shared
   machine the QPS swings with the other load; the server's own CPU time per query, which
   bounds its capacity, hardly does: the cost is read from it.
2. interleaved: one client sends the same queries to the three servers in turn, request by
   request (`--interleaved` of each), so that every variant sees the same moments of a
   shared, noisy machine. Printed: median latency and the QPS it implies, and each server's
   CPU time per query (median over blocks of 500 queries, and of the per-block ratios).

The cost of auth is `1 - on/off`.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import timeit

import httpx
import numpy as np

from bench.common import Server, TempDir, cpu_seconds, machine, table

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
COLLECTION = "bench"
TENANTS = 20
POINTS_PER_TENANT = 400
DIM = 128
VARIANTS = ("off", "on", "on+quota")


def load(server: Server, vectors: np.ndarray, rate_quota: float | None) -> dict[str, dict]:
    """Create the collection and the tenants' points; per tenant, the headers its queries use."""
    admin_key = server.env.get("SHOAL_ADMIN_KEY")
    admin = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
    headers: dict[str, dict] = {}
    with httpx.Client(base_url=server.url, timeout=60, headers=admin) as client:
        body = {"name": COLLECTION, "dim": DIM, "metric": "cosine"}
        client.post("/v1/collections", json=body).raise_for_status()
        for t in range(TENANTS):
            tenant = f"tenant-{t}"
            rows = vectors[t * POINTS_PER_TENANT : (t + 1) * POINTS_PER_TENANT]
            points = [{"id": f"p{i}", "vector": row.tolist()} for i, row in enumerate(rows)]
            url = f"/v1/collections/{COLLECTION}/tenants/{tenant}/points"
            client.put(url, json={"points": points}).raise_for_status()
            if admin_key is None:
                headers[tenant] = {}
                continue
            body = {"collection": COLLECTION, "tenant": tenant, "role": "read"}
            key = client.post("/v1/keys", json=body).raise_for_status().json()["key"]
            headers[tenant] = {"authorization": f"Bearer {key}"}
            if rate_quota is not None:
                quotas = {"quotas": {"query_rate": rate_quota, "query_burst": int(rate_quota)}}
                tenant_url = f"/v1/collections/{COLLECTION}/tenants/{tenant}"
                client.patch(tenant_url, json=quotas).raise_for_status()
    return headers


def measure(
    server: Server, headers: dict[str, dict], queries: np.ndarray, seconds: float, clients: int
) -> tuple[float, float]:
    """Queries per second over `seconds`, `clients` threads sending back to back, and the
    server's CPU seconds per query (its own time only: other load on the machine changes
    it much less than it changes the QPS)."""
    url = server.url
    tenants = sorted(headers)
    counts = [0] * clients
    failures: list[str] = []
    start = threading.Barrier(clients + 1)
    deadline = 0.0

    def client_loop(index: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            bodies = [{"vector": q.tolist(), "k": 10} for q in queries[index::clients]]
            start.wait()
            n = 0
            while time.perf_counter() < deadline:
                tenant = tenants[(n * clients + index) % len(tenants)]
                path = f"/v1/collections/{COLLECTION}/tenants/{tenant}/query"
                response = client.post(path, json=bodies[n % len(bodies)], headers=headers[tenant])
                if response.status_code != 200:
                    failures.append(response.text)
                    return
                n += 1
            counts[index] = n

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline = time.perf_counter() + seconds
    cpu_before = cpu_seconds(server.pid)
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"a query failed: {failures[0]}")
    total = sum(counts)
    return total / elapsed, (cpu_seconds(server.pid) - cpu_before) / total


INTERLEAVED_BLOCK = 500  # queries per variant between two readings of the servers' CPU time


def interleaved(
    servers: dict[str, Server], headers: dict[str, dict], queries: np.ndarray, n: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per query of each variant, sent in turn from one client; and each server's CPU
    seconds per query in each block of `INTERLEAVED_BLOCK` queries."""
    clients = {name: httpx.Client(base_url=s.url, timeout=30) for name, s in servers.items()}
    seconds: dict[str, list[float]] = {name: [] for name in servers}
    cpu: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for block_start in range(0, n, INTERLEAVED_BLOCK):
            block = range(block_start, min(n, block_start + INTERLEAVED_BLOCK))
            before = {name: cpu_seconds(server.pid) for name, server in servers.items()}
            for i in block:
                tenant = f"tenant-{i % TENANTS}"
                path = f"/v1/collections/{COLLECTION}/tenants/{tenant}/query"
                body = {"vector": queries[i % len(queries)].tolist(), "k": 10}
                for name in VARIANTS[i % 3 :] + VARIANTS[: i % 3]:
                    started = time.perf_counter()
                    response = clients[name].post(path, json=body, headers=headers[name][tenant])
                    seconds[name].append(time.perf_counter() - started)
                    if response.status_code != 200:
                        raise RuntimeError(f"{name}: {response.text}")
            for name, server in servers.items():
                cpu[name].append((cpu_seconds(server.pid) - before[name]) / len(block))
    finally:
        for client in clients.values():
            client.close()
    return seconds, cpu


def checks_in_process(n: int = 20_000) -> dict[str, float]:
    """Microseconds per request of the auth code alone, without HTTP: authenticate a tenant
    key, authorize a tenant read, and (on+quota) charge two token buckets."""
    from server.apikeys import KeyStore, Role
    from server.auth import Access, Authenticator, authorize
    from server.quotas import QuotaBook, Quotas
    from server.settings import Settings
    from storage.store import Store

    with TempDir() as tmp:
        store = Store(str(tmp / "keys"), durability="os")
        try:
            keys = KeyStore()
            keys.load(store)
            _, token = keys.create(COLLECTION, "tenant-0", Role.READ)
            authenticator = Authenticator(Settings(admin_key=ADMIN_KEY), keys)
            header = f"Bearer {token}"
            book = QuotaBook(Quotas(query_rate=1e9, query_burst=10**9))

            def on() -> None:
                principal = authenticator.authenticate(header)
                authorize(principal, Access.TENANT_READ, COLLECTION, "tenant-0")

            def on_quota() -> None:
                on()
                book.admit(COLLECTION, "tenant-0", "query", 1)

            return {
                "on": timeit.timeit(on, number=n) / n * 1e6,
                "on+quota": timeit.timeit(on_quota, number=n) / n * 1e6,
            }
        finally:
            store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--interleaved", type=int, default=3000, help="queries per variant")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((TENANTS * POINTS_PER_TENANT, DIM)).astype(np.float32)
    queries = rng.standard_normal((256, DIM)).astype(np.float32)
    print(f"machine: {machine()}")
    print(
        f"data: {TENANTS} tenants x {POINTS_PER_TENANT} points, {DIM}-d cosine (exact scans); "
        f"{args.clients} clients, {args.seconds:g} s per run, {args.rounds} rounds"
    )
    secured = {"SHOAL_ADMIN_KEY": ADMIN_KEY}
    with TempDir() as tmp:
        servers = {
            "off": Server(tmp / "off").start(),
            "on": Server(tmp / "on", env=secured).start(),
            "on+quota": Server(tmp / "quota", env=secured).start(),
        }
        try:
            headers = {
                "off": load(servers["off"], vectors, None),
                "on": load(servers["on"], vectors, None),
                "on+quota": load(servers["on+quota"], vectors, 1e6),
            }
            for name in VARIANTS:  # warm-up: numba, connection pools, first-touch memory
                measure(servers[name], headers[name], queries, 1.0, args.clients)
            qps: dict[str, list[float]] = {name: [] for name in VARIANTS}
            cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for round_ in range(args.rounds):
                order = VARIANTS[round_ % 3 :] + VARIANTS[: round_ % 3]
                for name in order:
                    rate, cpu_per_query = measure(
                        servers[name], headers[name], queries, args.seconds, args.clients
                    )
                    qps[name].append(rate)
                    cpu[name].append(cpu_per_query)
                print(
                    f"round {round_ + 1}: "
                    + ", ".join(
                        f"{name} {qps[name][-1]:.0f} QPS {cpu[name][-1] * 1e6:.0f} us"
                        for name in VARIANTS
                    ),
                    flush=True,
                )
            latencies, interleaved_cpu = interleaved(servers, headers, queries, args.interleaved)
        finally:
            for server in servers.values():
                server.stop()
    rows = []
    for name in VARIANTS:
        ratios = [v / off for v, off in zip(qps[name], qps["off"], strict=True)]
        cpu_ratios = [off / v for v, off in zip(cpu[name], cpu["off"], strict=True)]
        rows.append(
            [
                name,
                f"{statistics.median(qps[name]):.0f}",
                f"{min(qps[name]):.0f}-{max(qps[name]):.0f}",
                f"{statistics.median(ratios):.3f}",
                f"{statistics.median(cpu[name]) * 1e6:.0f}",
                f"{statistics.median(cpu_ratios):.3f}",
                f"{(1 - statistics.median(cpu_ratios)) * 100:+.1f}%",
            ]
        )
    print("\nthroughput, alternating runs (medians over the rounds):")
    columns = ["variant", "QPS", "QPS range", "QPS vs off", "server CPU us/query"]
    print(table([*columns, "capacity vs off", "cost"], rows))
    rows = []
    for name in VARIANTS:
        p50 = statistics.median(latencies[name])
        ratio = statistics.median(latencies["off"]) / p50
        block_ratios = [
            o / v for v, o in zip(interleaved_cpu[name], interleaved_cpu["off"], strict=True)
        ]
        cpu_ratio = statistics.median(block_ratios)
        rows.append(
            [
                name,
                f"{p50 * 1e3:.3f}",
                f"{1 / p50:.0f}",
                f"{ratio:.3f}",
                f"{statistics.median(interleaved_cpu[name]) * 1e6:.0f}",
                f"{cpu_ratio:.3f}",
                f"{(1 - cpu_ratio) * 100:+.1f}%",
            ]
        )
    print(
        f"\ninterleaved, one client, {args.interleaved} queries per variant "
        f"(server CPU: medians over blocks of {INTERLEAVED_BLOCK}):"
    )
    headers_ = ["variant", "p50 ms", "QPS (1/p50)", "QPS vs off", "server CPU us/query"]
    headers_ += ["capacity vs off", "cost"]
    print(table(headers_, rows))
    in_process = checks_in_process()
    per_query_us = statistics.median(cpu["off"]) * 1e6
    print("\nthe auth code alone, in process (no HTTP):")
    for name, micros in in_process.items():
        share = micros / per_query_us * 100
        print(f"  {name}: {micros:.1f} us per request = {share:.2f}% of a query's server CPU")
    capacity_cost = 1 - statistics.median(
        [off / on for on, off in zip(cpu["on"], cpu["off"], strict=True)]
    )
    interleaved_cost = 1 - statistics.median(
        [off / on for on, off in zip(interleaved_cpu["on"], interleaved_cpu["off"], strict=True)]
    )
    latency_cost = 1 - statistics.median(latencies["off"]) / statistics.median(latencies["on"])
    print(
        f"\nauth cost (on vs off): {capacity_cost * 100:.1f}% of server capacity in alternating "
        f"runs, {interleaved_cost * 100:.1f}% interleaved; {latency_cost * 100:.1f}% of "
        "single-client QPS (interleaved); budget 5%"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
