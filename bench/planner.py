"""Planner: a selectivity sweep, every plan forced against the planner's own choice.

    python -m bench.planner                # Debian and synthetic, 200 queries, 3 runs (~15 min)
    python -m bench.planner --quick        # 20k Debian, 50k synthetic, 50 queries, 1 run
    python -m bench.planner --data-dir /tmp/shoal-planner   # keep the loaded data for re-runs

Each data set is loaded in-process through `Database` + `Collection.upsert` (durability "os"),
so every index is the server's own, built by its background threads:

- Debian (`bench.common.load_debian`, 384-d, cosine): owners as tenants, debtags as shared
  tenants (`tag:<tag>`, through `shared_with`), `section` / `priority` keywords,
  `installed_size_kb` integer. 1% of the points are held out as queries.
- synthetic (`bench.datasets.synthetic`, 128-d, L2): Zipf owners, each point shared with 1-5
  partner tenants; queries are fresh draws.

Both get `bucket`, an integer 0..9999 added by the bench: stratified (a random permutation of
equal steps) over the readable set of the scope tenant, and separately over the other points,
so that `{"bucket": {"$lt": s * 10000}}` keeps a share `s` of the scope, to the point.

Settings: the Curator trains once the whole set is in; the shared graph is built over the whole
set; the `--tenant-graphs` largest tenants (by readable points) get their own graph
(`tenant_graph_min_points` is set to the size of the smallest of them); other settings are the
server's defaults (ef 128, patience 5, M 16, ef_construction 100).

Scopes: the largest tenant (readable points, owned and shared), and admin queries over the
whole collection. For each selectivity (0.1%, 1%, 10%, 50%, 100%) every plan the planner offers
is forced (`strategy=`), plus the planner's own choice (`strategy=None`). Per row: recall@10
against numpy brute force over the exact candidate set (a hit counts when its true distance is
within the 10th exact distance), p50 latency of `Collection.query` / `admin_query` (one vector,
no attributes, `perf_counter_ns` around the call, BLAS on one thread), QPS = 1 / mean latency,
the plan's estimated cost and its measured search stage (`plan.timings_ms["search"]`). Every
plan of a sweep point is measured over the same queries, interleaved query by query, in a new
random order for each query; each figure is the median over `--runs` runs. The check: the
planner's choice has recall@10 >= 0.95 and a p50 within 20% of the best single plan that has
recall@10 >= 0.95 (the ratio is taken per run, side by side, then the median over runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from bench import datasets
from bench.common import REPO, load_debian, machine, table
from index import planner
from index.arena import Metric
from server import search
from server.collection import Collection
from server.database import Database
from server.model import PointInput
from server.settings import Settings

K = 10
BUCKETS = 10_000
SELECTIVITIES = (0.001, 0.01, 0.1, 0.5, 1.0)
AUTO = "planner"
RECALL_TARGET = 0.95
SLACK = 1.2  # the planner's p50 may be this much of the best plan's
BATCH = 1000  # points per upsert (the server's default limit)
TIMEOUT_S = 1800.0


# -- loading ---------------------------------------------------------------------------


@dataclass
class World:
    """A collection loaded through the server's own write path, and what the bench knows
    about it: vectors by row, where each row went, the scope tenant, the queries."""

    name: str
    description: str
    db: Database
    collection: Collection
    metric: Metric
    vectors: np.ndarray  # (rows, dim) float32, the loaded points
    row_of: dict[tuple[str, str], int]  # (owner, point id) -> row
    bucket: np.ndarray  # (rows,) int
    tenant: str  # the scope tenant: the largest readable set
    tenant_rows: np.ndarray  # (rows,) bool: readable by `tenant`
    readable_sizes: dict[str, int]
    heldout: np.ndarray  # (h, dim) float32 query vectors, never loaded
    heldout_readers: list[set[str]]  # tenants that would read each held-out point
    load_seconds: float = 0.0
    index_seconds: float = 0.0
    directory: Path | None = None
    owned_directory: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def queries_for(self, tenant: str | None, n: int) -> np.ndarray:
        """`n` held-out vectors: those `tenant` would read first, then the others."""
        order = np.arange(len(self.heldout))
        if tenant is not None:
            mine = np.array([tenant in r for r in self.heldout_readers], dtype=bool)
            order = np.concatenate([order[mine], order[~mine]])
        return self.heldout[order[:n]]

    def close(self) -> None:
        self.db.close()
        if self.owned_directory and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def _stratified(rng: np.random.Generator, n: int) -> np.ndarray:
    """n values in 0..BUCKETS-1 in equal steps, in a random order: `< b` keeps b/BUCKETS."""
    return (rng.permutation(n) * BUCKETS // max(n, 1)).astype(np.int64)


def _buckets(rng: np.random.Generator, tenant_rows: np.ndarray) -> np.ndarray:
    bucket = np.empty(len(tenant_rows), dtype=np.int64)
    bucket[tenant_rows] = _stratified(rng, int(tenant_rows.sum()))
    bucket[~tenant_rows] = _stratified(rng, int((~tenant_rows).sum()))
    return bucket


def _open(
    name: str,
    data_dir: Path | None,
    dim: int,
    metric: Metric,
    schema: dict[str, str],
    index: dict[str, Any],
    expected_points: int,
) -> tuple[Database, Collection, Path, bool, bool]:
    """The database holding collection `name`: reopened from `data_dir` when it already holds
    the same collection with `expected_points`, else created there (or in a temporary dir)."""
    owned = data_dir is None
    directory = Path(tempfile.mkdtemp(prefix="shoal-planner-")) if owned else data_dir / name
    db = Database(Settings(data_dir=directory, durability="os", log_level="warning"))
    db.open()
    try:
        collection = db.collection(name)
    except Exception:
        collection = None
    if collection is not None:
        same = (
            collection.arena.count == expected_points
            and collection.config.index.to_dict() | index == collection.config.index.to_dict()
        )
        if same:
            return db, collection, directory, owned, True
        db.delete_collection(name)
    db.create_collection(name, dim, metric.value, schema, index)
    return db, db.collection(name), directory, owned, False


def _load(
    collection: Collection,
    vectors: np.ndarray,
    owners: list[str],
    ids: list[str],
    attributes: Callable[[int], dict[str, Any]],
    readers: Callable[[int], list[str]],
) -> None:
    """Upsert every row, grouped by owner, up to BATCH points per call."""
    groups: dict[str, list[int]] = {}
    for row, owner in enumerate(owners):
        groups.setdefault(owner, []).append(row)
    for owner, rows in groups.items():
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            collection.upsert(
                owner,
                [
                    PointInput(ids[r], vectors[r], attributes(r), readers(r)[1:] or None)
                    for r in chunk
                ],
            )


def _settle(world: World, reused: bool, started: float) -> None:
    collection = world.collection
    indexing = time.perf_counter()
    if not collection.curator.wait_trained(TIMEOUT_S):
        raise TimeoutError("the Curator did not finish training")
    if not collection.graphs.wait_idle(TIMEOUT_S):
        raise TimeoutError("the HNSW graphs did not catch up")
    world.index_seconds = time.perf_counter() - indexing
    world.load_seconds = indexing - started
    state = collection.graphs.state()
    how = "reopened from " + str(world.directory) if reused else "loaded"
    world.notes.append(
        f"{how} in {world.load_seconds:.1f} s, indexes ready {world.index_seconds:.1f} s later: "
        f"Curator trained: {collection.curator.curator is not None}, shared graph "
        f"{state['shared_graph_points']:,} points, {state['tenant_graphs']} tenant graphs"
    )


def _graph_threshold(sizes: dict[str, int], tenant_graphs: int) -> int:
    ranked = sorted(sizes.values(), reverse=True)
    return ranked[min(tenant_graphs, len(ranked)) - 1]


def debian_world(
    quick: bool = False, data_dir: Path | None = None, tenant_graphs: int = 4, seed: int = 0
) -> World:
    started = time.perf_counter()
    data = load_debian()
    rng = np.random.default_rng(seed)
    rows = np.arange(len(data.points))
    if quick:
        rows = np.sort(rng.choice(len(rows), size=20_000, replace=False))
    held = np.zeros(len(rows), dtype=bool)
    held[rng.choice(len(rows), size=max(1, round(0.01 * len(rows))), replace=False)] = True
    loaded, heldout = rows[~held], rng.permutation(rows[held])

    def readers_of(row: int) -> list[str]:
        p = data.points[row]
        return [p["tenant"]] + ["tag:" + t for t in p["tags"]]

    readers = [readers_of(r) for r in loaded.tolist()]
    sizes: dict[str, int] = {}
    for rs in readers:
        for t in rs:
            sizes[t] = sizes.get(t, 0) + 1
    tenant = max(sizes, key=lambda t: sizes[t])
    tenant_rows = np.array([tenant in rs for rs in readers], dtype=bool)
    bucket = _buckets(np.random.default_rng(seed + 1), tenant_rows)
    vectors = np.ascontiguousarray(data.vectors[loaded])
    owners = [rs[0] for rs in readers]
    ids = [data.points[r]["id"] for r in loaded.tolist()]
    n = len(loaded)
    index = {
        "curator_min_points": n,
        "shared_graph_min_points": n,
        "tenant_graph_min_points": _graph_threshold(sizes, tenant_graphs),
    }
    schema = {
        "section": "keyword",
        "priority": "keyword",
        "installed_size_kb": "integer",
        "bucket": "integer",
    }
    db, collection, directory, owned, reused = _open(
        "debian", data_dir, vectors.shape[1], Metric.COSINE, schema, index, n
    )

    def attributes(r: int) -> dict[str, Any]:
        p = data.points[int(loaded[r])]
        return {
            "section": p["section"],
            "priority": p["priority"],
            "installed_size_kb": p["installed_size_kb"],
            "bucket": int(bucket[r]),
        }

    if not reused:
        _load(collection, vectors, owners, ids, attributes, lambda r: readers[r])
    world = World(
        name="debian",
        description=(
            f"Debian: {n:,} points loaded ({len(heldout)} held out as queries), 384-d cosine, "
            f"{len(sizes):,} tenants (owners + tag tenants), "
            f"{sum(len(r) for r in readers):,} read pairs; scope tenant {tenant} reads "
            f"{sizes[tenant]:,}; tenant graphs for tenants reading >= "
            f"{index['tenant_graph_min_points']:,}"
        ),
        db=db,
        collection=collection,
        metric=Metric.COSINE,
        vectors=vectors,
        row_of={(o, i): r for r, (o, i) in enumerate(zip(owners, ids, strict=True))},
        bucket=bucket,
        tenant=tenant,
        tenant_rows=tenant_rows,
        readable_sizes=sizes,
        heldout=np.ascontiguousarray(data.vectors[heldout]),
        heldout_readers=[set(readers_of(r)) for r in heldout.tolist()],
        directory=directory,
        owned_directory=owned,
    )
    _settle(world, reused, started)
    return world


def synthetic_world(
    quick: bool = False, data_dir: Path | None = None, tenant_graphs: int = 4, seed: int = 0
) -> World:
    started = time.perf_counter()
    w = datasets.synthetic(n=50_000 if quick else 200_000, n_queries=20_000, seed=seed)
    names = w.tenant_names
    point_readers = w.point_readers()
    readers = [[names[t] for t in rs.tolist()] for rs in point_readers]
    counts = np.bincount(w.pair_tenants, minlength=w.n_tenants)
    sizes = {names[t]: int(c) for t, c in enumerate(counts.tolist()) if c}
    number = int(np.argmax(counts))
    tenant = names[number]
    tenant_rows = np.zeros(w.n, dtype=bool)
    tenant_rows[w.pair_labels[w.pair_tenants == number]] = True
    bucket = _buckets(np.random.default_rng(seed + 1), tenant_rows)
    owners = [names[t] for t in w.owners.tolist()]
    ids = [f"p{i}" for i in range(w.n)]
    index = {
        "curator_min_points": w.n,
        "shared_graph_min_points": w.n,
        "tenant_graph_min_points": _graph_threshold(sizes, tenant_graphs),
    }
    db, collection, directory, owned, reused = _open(
        "synthetic", data_dir, w.dim, Metric.L2, {"bucket": "integer"}, index, w.n
    )
    if not reused:
        _load(
            collection,
            w.vectors,
            owners,
            ids,
            lambda r: {"bucket": int(bucket[r])},
            lambda r: readers[r],
        )
    # Queries drawn for the scope tenant first (fresh draws near its home clusters).
    q_tenants = w.query_tenants
    heldout_readers = [{names[t]} for t in q_tenants.tolist()]
    world = World(
        name="synthetic",
        description=(
            f"synthetic: {w.n:,} x {w.dim} clustered vectors, L2, {w.n_tenants} Zipf owner "
            f"tenants, each point shared with 1-5 partners ({len(w.pair_labels):,} read pairs); "
            f"scope tenant {tenant} reads {sizes[tenant]:,}; tenant graphs for tenants reading "
            f">= {index['tenant_graph_min_points']:,}"
        ),
        db=db,
        collection=collection,
        metric=Metric.L2,
        vectors=w.vectors,
        row_of={(o, i): r for r, (o, i) in enumerate(zip(owners, ids, strict=True))},
        bucket=bucket,
        tenant=tenant,
        tenant_rows=tenant_rows,
        readable_sizes=sizes,
        heldout=w.queries,
        heldout_readers=heldout_readers,
        directory=directory,
        owned_directory=owned,
    )
    _settle(world, reused, started)
    return world


# -- ground truth ----------------------------------------------------------------------


def true_distances(world: World, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(q, len(rows)) float64 distances with the server's conventions."""
    x = world.vectors[rows].astype(np.float64)
    q = queries.astype(np.float64)
    if world.metric is Metric.L2:
        sq = (q * q).sum(1)[:, None] - 2 * q @ x.T + (x * x).sum(1)[None, :]
        return np.sqrt(np.maximum(sq, 0.0))
    dots = q @ x.T
    if world.metric is Metric.IP:
        return 1.0 - dots
    norms = np.linalg.norm(q, axis=1)[:, None] * np.linalg.norm(x, axis=1)[None, :]
    return 1.0 - dots / norms


@dataclass
class Truth:
    candidates: np.ndarray  # rows that match
    kth: np.ndarray  # (q,) the k-th smallest true distance (inf when fewer than k match)


def ground_truth(world: World, queries: np.ndarray, scope_rows: np.ndarray, s: float) -> Truth:
    rows = np.flatnonzero(scope_rows & (world.bucket < round(s * BUCKETS)))
    kth = np.full(len(queries), np.inf)
    if len(rows) >= K:
        for start in range(0, len(queries), 64):
            d = true_distances(world, queries[start : start + 64], rows)
            kth[start : start + 64] = np.partition(d, K - 1, axis=1)[:, K - 1]
    return Truth(rows, kth)


def recall(world: World, query: np.ndarray, hits: list[Any], truth: Truth, i: int) -> float:
    wanted = min(K, len(truth.candidates))
    if wanted == 0:
        return 1.0
    rows = np.array([world.row_of[(h.owner, h.point_id)] for h in hits], dtype=np.int64)
    if len(rows) == 0:
        return 0.0
    inside = np.isin(rows, truth.candidates)
    d = true_distances(world, query[None, :], rows)[0]
    good = inside & (d <= truth.kth[i] + 1e-6)
    return min(int(good.sum()), wanted) / wanted


# -- the sweep -------------------------------------------------------------------------


@dataclass
class Row:
    """One plan (or the planner) at one sweep point."""

    plan: str
    recall: float = 0.0
    latency_ms: list[list[float]] = field(default_factory=list)  # per run, per query
    search_ms: list[float] = field(default_factory=list)  # plan.timings_ms["search"], run 0
    estimate_us: float | None = None
    chosen: str = ""
    fallbacks: int = 0
    used: dict[str, int] = field(default_factory=dict)  # strategy that answered -> queries

    def p50(self, run: int) -> float:
        return float(np.median(self.latency_ms[run]))

    def qps(self, run: int) -> float:
        return 1e3 / float(np.mean(self.latency_ms[run]))

    def summary(self) -> dict[str, float]:
        runs = range(len(self.latency_ms))
        return {
            "p50": float(np.median([self.p50(r) for r in runs])),
            "p99": float(np.median([np.percentile(self.latency_ms[r], 99) for r in runs])),
            "qps": float(np.median([self.qps(r) for r in runs])),
        }


@dataclass
class Point:
    scope: str
    selectivity: float
    candidates: int
    readable: int
    rows: dict[str, Row]
    chosen: str
    best: str = ""
    ratios: list[float] = field(default_factory=list)
    ok_recall: bool = False
    ok_latency: bool = False


def run_point(
    world: World,
    scope: str,
    s: float,
    queries: np.ndarray,
    runs: int,
    ef: int | None = None,
    warmup: int = 5,
) -> Point:
    collection = world.collection
    raw_filter = {"bucket": {"$lt": round(s * BUCKETS)}}
    if scope == "admin":

        def call(q: np.ndarray, strategy: str | None) -> Any:
            return collection.admin_query(
                [q], K, include_attributes=False, raw_filter=raw_filter, strategy=strategy, ef=ef
            )[0]

        scope_rows = np.ones(len(world.vectors), dtype=bool)
    else:

        def call(q: np.ndarray, strategy: str | None) -> Any:
            return collection.query(
                world.tenant, [q], K, include_attributes=False, raw_filter=raw_filter,
                strategy=strategy, ef=ef,
            )[0]  # fmt: skip

        scope_rows = world.tenant_rows
    probe = call(queries[0], None).plan
    plans = [p for p in planner.STRATEGIES if p in probe.estimates_us]
    names = [*plans, AUTO]
    rows = {name: Row(name, estimate_us=probe.estimates_us.get(name)) for name in names}
    rows[AUTO].estimate_us = probe.estimates_us[probe.chosen]
    truth = ground_truth(world, queries, scope_rows, s)
    assert len(truth.candidates) == probe.candidates, (len(truth.candidates), probe.candidates)
    for q in queries[:warmup]:
        for name in names:
            call(q, None if name == AUTO else name)
    clock = time.perf_counter_ns
    recalls: dict[str, list[float]] = {name: [] for name in names}
    # A new random order per query: a plan that runs right after another plan on the same
    # query finds the same rows warm in cache, and one that runs after a full scan finds the
    # cache flushed; a fixed cyclic order would hand those effects to the same plans always.
    rng = np.random.default_rng(round(s * 1e6))
    for run in range(runs):
        gc.collect()
        for row in rows.values():
            row.latency_ms.append([])
        for i, q in enumerate(queries):
            for j in rng.permutation(len(names)).tolist():
                name = names[j]
                start = clock()
                result = call(q, None if name == AUTO else name)
                elapsed = clock() - start
                row = rows[name]
                row.latency_ms[run].append(elapsed / 1e6)
                if run == 0:
                    plan = result.plan
                    recalls[name].append(recall(world, q, result.hits, truth, i))
                    row.search_ms.append(plan.timings_ms["search"])
                    row.fallbacks += plan.fallback
                    row.used[plan.strategy] = row.used.get(plan.strategy, 0) + 1
                    row.chosen = plan.chosen
    for name, row in rows.items():
        row.recall = float(np.mean(recalls[name]))
    point = Point(scope, s, probe.candidates, len(scope_rows.nonzero()[0]), rows, probe.chosen)
    good = [p for p in plans if rows[p].recall >= RECALL_TARGET]
    for run in range(runs):
        best = min(rows[p].p50(run) for p in good)
        point.ratios.append(rows[AUTO].p50(run) / best)
    point.best = min(good, key=lambda p: rows[p].summary()["p50"])
    point.ok_recall = rows[AUTO].recall >= RECALL_TARGET
    point.ok_latency = float(np.median(point.ratios)) <= SLACK
    return point


# -- report ----------------------------------------------------------------------------


def _fmt_s(s: float) -> str:
    return f"{s * 100:g}%"


def report(world: World, points: list[Point]) -> list[str]:
    """Prints the tables; returns the lines of the check that failed."""
    headers = [
        "scope", "selectivity", "candidates", "plan", "recall@10", "p50 ms", "p99 ms", "QPS",
        "estimate us", "search us", "fallbacks",
    ]  # fmt: skip
    lines = []
    for p in points:
        for name, row in p.rows.items():
            summary = row.summary()
            label = f"{AUTO} -> {row.chosen}" if name == AUTO else name
            lines.append([
                p.scope, _fmt_s(p.selectivity), f"{p.candidates:,}", label, f"{row.recall:.3f}",
                f"{summary['p50']:.3f}", f"{summary['p99']:.3f}", f"{summary['qps']:,.0f}",
                "-" if row.estimate_us is None else f"{row.estimate_us:,.0f}",
                f"{np.median(row.search_ms) * 1e3:,.0f}", str(row.fallbacks),
            ])  # fmt: skip
    print(f"\n### {world.name}: every plan and the planner, k={K}\n")
    print(table(headers, lines))
    check_lines = []
    failed = []
    for p in points:
        auto = p.rows[AUTO]
        best = p.rows[p.best].summary()["p50"]
        ratio = float(np.median(p.ratios))
        verdict = "ok" if p.ok_recall and p.ok_latency else "MISS"
        why = []
        if not p.ok_recall:
            why.append(f"recall {auto.recall:.3f} < {RECALL_TARGET}")
        if not p.ok_latency:
            why.append(f"p50 {ratio:.2f}x the best")
        check_lines.append([
            p.scope, _fmt_s(p.selectivity), f"{p.candidates:,}", p.chosen,
            f"{auto.recall:.3f}", f"{auto.summary()['p50']:.3f}", p.best, f"{best:.3f}",
            f"{ratio:.2f}", " / ".join(f"{r:.2f}" for r in p.ratios),
            verdict + (": " + "; ".join(why) if why else ""),
        ])  # fmt: skip
        if verdict != "ok":
            failed.append(
                f"{world.name} {p.scope} {_fmt_s(p.selectivity)}: " + "; ".join(why) + ". "
                + diagnosis(p)
            )  # fmt: skip
    print(
        f"\n{world.name}: the planner's choice against the best single plan with recall@10 >= "
        f"{RECALL_TARGET} (ratio = planner p50 / best p50, per run, median)\n"
    )
    print(
        table(
            [
                "scope", "selectivity", "candidates", "chosen", "recall@10", "p50 ms",
                "best plan", "best p50 ms", "ratio", "per run", "check",
            ],
            check_lines,
        )
    )  # fmt: skip
    return failed


def diagnosis(p: Point) -> str:
    """Why the planner chose what it did: estimates against measured search stages."""
    chosen, best = p.rows[p.chosen], p.rows[p.best]

    def stage(row: Row) -> str:
        measured = float(np.median(row.search_ms) * 1e3)
        estimate = row.estimate_us or 0.0
        return (
            f"{row.plan} estimated {estimate:,.0f} us, search stage measured {measured:,.0f} us "
            f"({measured / max(estimate, 1e-9):.1f}x), recall {row.recall:.3f}"
        )

    if p.chosen == p.best:
        return f"The choice is the best plan: {stage(chosen)}."
    return f"Chosen: {stage(chosen)}. Best: {stage(best)}."


def plot(result: dict[str, Any], path: Path) -> None:
    """p50 and recall against selectivity, per plan and the planner (from `to_json`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result["points"]
    scopes = list(dict.fromkeys(p["scope"] for p in points))
    fig, axes = plt.subplots(2, len(scopes), figsize=(5.5 * len(scopes), 7.5), squeeze=False)
    colours = {"exact": "C0", "curator": "C1", "tenant_hnsw": "C2", "shared_hnsw": "C3"}
    for column, scope in enumerate(scopes):
        mine = [p for p in points if p["scope"] == scope]
        top, bottom = axes[0][column], axes[1][column]
        for name, colour in [*colours.items(), (AUTO, "k")]:
            at = [p for p in mine if name in p["rows"]]
            if not at:
                continue
            xs = [p["selectivity"] for p in at]
            p50 = [p["rows"][name]["p50"] for p in at]
            rec = [p["rows"][name]["recall"] for p in at]
            style: dict[str, Any] = {"color": colour, "label": name}
            if name == AUTO:
                style |= {"linestyle": "--", "marker": "s", "markerfacecolor": "none"}
                style |= {"markersize": 10, "linewidth": 1.2}
            else:
                style |= {"marker": "o", "markersize": 4, "linewidth": 1}
            top.plot(xs, p50, **style)
            bottom.plot(xs, rec, **style)
        previous = None
        for p in mine:
            if p["chosen"] != previous:  # label where the planner's choice changes
                y = p["rows"][AUTO]["p50"]
                top.annotate(
                    p["chosen"], (p["selectivity"], y), fontsize=7, xytext=(-10, 9),
                    textcoords="offset points",
                )  # fmt: skip
            previous = p["chosen"]
        top.set_xscale("log")
        top.set_yscale("log")
        top.set_ylabel("p50 latency per query, ms (log)")
        where = result["scope_tenant"] if scope == "tenant" else "admin (all points)"
        top.set_title(f"{result['dataset']}: {where}", fontsize=10)
        bottom.set_xscale("log")
        bottom.axhline(RECALL_TARGET, color="grey", linewidth=0.6, linestyle=":")
        bottom.set_ylabel(f"recall@{K}")
        bottom.set_xlabel("filter selectivity within the scope (log)")
        for ax in (top, bottom):
            ax.grid(True, which="both", linewidth=0.3)
            ax.set_xticks(list(SELECTIVITIES), [_fmt_s(s) for s in SELECTIVITIES])
        top.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def to_json(world: World, points: list[Point]) -> dict[str, Any]:
    return {
        "dataset": world.name,
        "description": world.description,
        "scope_tenant": f"tenant {world.tenant} ({world.readable_sizes[world.tenant]:,} points)",
        "notes": world.notes,
        "points": [
            {
                "scope": p.scope,
                "selectivity": p.selectivity,
                "candidates": p.candidates,
                "chosen": p.chosen,
                "best": p.best,
                "ratios": p.ratios,
                "rows": {
                    n: {
                        "recall": r.recall,
                        **r.summary(),
                        "estimate_us": r.estimate_us,
                        "search_us": float(np.median(r.search_ms) * 1e3),
                        "fallbacks": r.fallbacks,
                        "used": r.used,
                    }
                    for n, r in p.rows.items()
                },
            }
            for p in points
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k Debian, 50k synthetic, 1 run")
    parser.add_argument("--datasets", nargs="+", default=["debian", "synthetic"])
    parser.add_argument("--runs", type=int, default=None, help="timed runs (3; 1 with --quick)")
    parser.add_argument("--queries", type=int, default=None, help="per scope (200; 50 quick)")
    parser.add_argument("--scopes", nargs="+", default=["tenant", "admin"])
    parser.add_argument("--selectivities", type=float, nargs="+", default=list(SELECTIVITIES))
    parser.add_argument("--tenant-graphs", type=int, default=4, help="largest tenants with one")
    parser.add_argument("--ef", type=int, help="every query's ef (default: the collection's, 128)")
    parser.add_argument("--data-dir", type=Path, help="keep (and reuse) the loaded databases here")
    parser.add_argument("--plots", type=Path, help="PNG directory (docs/; $TMPDIR with --quick)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--cost", nargs="+", default=[], metavar="NAME=VALUE",
        help="try other CostModel values in this process (the defaults are not changed)",
    )  # fmt: skip
    parser.add_argument("--replot", type=Path, help="only redraw the plots from a --json file")
    args = parser.parse_args()
    if args.replot:
        args.plots = args.plots or REPO / "docs"
        for result in json.loads(args.replot.read_text()):
            plot(result, args.plots / f"planner-{result['dataset']}.png")
        return
    if args.cost:
        overrides = {k: float(v) for k, v in (item.split("=", 1) for item in args.cost)}
        search.COST_MODEL = dataclasses.replace(planner.CostModel(), **overrides)
    args.runs = args.runs or (1 if args.quick else 3)
    args.queries = args.queries or (50 if args.quick else 200)
    args.plots = args.plots or (Path(tempfile.gettempdir()) if args.quick else REPO / "docs")
    print(f"# Planner: selectivity sweep\n\n{machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, '-m', 'bench.planner', *sys.argv[1:]])}")
    print(f"cost model: {search.COST_MODEL}")
    print(f"ef: {args.ef or 'each collection default (128)'}; k: {K}")
    builders = {"debian": debian_world, "synthetic": synthetic_world}
    results = []
    failed: list[str] = []
    with threadpool_limits(1):
        for name in args.datasets:
            world = builders[name](args.quick, args.data_dir, args.tenant_graphs)
            try:
                print(f"\n{world.description}\n" + "\n".join(world.notes), flush=True)
                points = []
                for scope in args.scopes:
                    queries = world.queries_for(world.tenant if scope == "tenant" else None,
                                                args.queries)  # fmt: skip
                    for s in args.selectivities:
                        started = time.perf_counter()
                        point = run_point(world, scope, s, queries, args.runs, args.ef)
                        points.append(point)
                        print(
                            f"  {scope} {_fmt_s(s)}: {point.candidates:,} candidates, chosen "
                            f"{point.chosen}, ratio {np.median(point.ratios):.2f} "
                            f"({time.perf_counter() - started:.0f} s)",
                            flush=True,
                        )
                failed += report(world, points)
                path = args.plots / f"planner-{name}.png"
                result = to_json(world, points)
                plot(result, path)
                print(f"\nplot: {path}")
                results.append(result)
            finally:
                world.close()
            gc.collect()
    print("\n## Targets\n")
    if failed:
        print("Missed:\n" + "\n".join(f"- {line}" for line in failed))
    else:
        print("Every sweep point met both targets.")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
