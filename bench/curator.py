"""Curator vs the per-tenant baselines of the Curator paper, on the Debian and a synthetic set.

    python -m bench.curator              # both data sets, 300 queries each, 3 runs (~10 min)
    python -m bench.curator --quick      # 50k synthetic, 20k Debian, 100 queries, 1 run (~1 min)

Rows, all built from the same data in one process and queried side by side:

- `exact`: numpy exact top-k over the tenant's readable labels (`VectorArena.search`); it is also
  the ground truth (computed once, before the timed runs).
- `hnsw_per_tenant`: one hnswlib index per tenant over the points it can read (M=16,
  ef_construction=200, inserts shuffled, one thread); tenants that read fewer than 64 points get
  an exact scan instead, as a real system would.
- `hnsw_shared_filter`: one hnswlib index over all points, queried with
  `filter=lambda label: label in tenant_set` (a Python set per tenant); `knn_query` raises when it
  finds fewer than k, which is counted as a short answer (recall 0 for that query).
- `curator`: `ClusterTree` trained on a sample (20k vectors, branching 32, depth 2), `Curator` over
  the same arena, bulk-loaded with `insert_many` (one pair per reader of each point), searched
  with the server's default `patience` (`IndexSettings().patience`; `--patience` overrides).

Measured per row: recall@10 against the exact answer (a returned label counts when its true
distance is within the k-th exact distance, so ties do not cost recall), per-query latency
(single thread, BLAS pinned to one thread, `time.perf_counter_ns` around the call), p50/p99 and
QPS = 1 / mean latency, each the median over `--runs` runs (the rows and their ef values are
interleaved in a rotating order within each run); the same for queries whose tenant reads under
5% of the collection. Then index memory (see `_rss`), build throughput in read pairs per second
(training reported separately), and delete throughput (2% of the points, each with all of its
pairs), after which every row is queried again to check that no deleted label comes back and
recall holds. Finally the Curator's incremental paths (`curator_churn`): re-insert, revoke,
grant back, a search right after a write, `check_invariants()`. Leaks (labels the tenant cannot
read), duplicates and short answers are counted for every configuration.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import json
import os
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import hnswlib
import numpy as np
from threadpoolctl import threadpool_limits

from bench import datasets
from bench.common import REPO, machine, median, table
from index.arena import Metric, VectorArena
from server.model import IndexSettings

K = 10
SMALL_SHARE = 0.05  # "small" tenants read under 5% of the collection
MIN_HNSW_TENANT = 64  # per-tenant hnswlib only for tenants that read at least this many points
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
DELETE_SHARE = 0.02
TRAIN_SAMPLE = 20_000
DEFAULT_EF = [16, 32, 64, 128, 256]
POST_DELETE_EF = 64
MIB = 1024 * 1024
_LIBC = ctypes.CDLL("libc.so.6")


def _rss() -> int:
    """Resident set size of this process (bytes), from /proc/self/statm, after a gc pass.

    Memory of the hnswlib rows is the RSS delta across their build (hnswlib allocates in C++,
    outside tracemalloc); the vectors each index keeps inside itself are subtracted and shown in
    their own column."""
    gc.collect()
    _LIBC.malloc_trim(0)  # hand freed heap back to the OS, so that the next delta is not reused
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def curator_available() -> str | None:
    """None if `index.curator` can be imported, else why not."""
    if importlib.util.find_spec("index.curator") is None:
        return "index/curator.py does not exist"
    try:
        from index.curator import ClusterTree, Curator  # noqa: F401
    except Exception as exc:  # a module being written can fail in any way
        return f"importing index.curator failed: {exc!r}"
    return None


class Short(Exception):
    """The index found fewer than k results."""


@dataclass
class Build:
    seconds: float = 0.0  # whole build, including training
    train_seconds: float = 0.0
    pairs: int = 0
    memory: int = 0  # index bytes excluding the vectors it keeps inside itself
    vector_copies: int = 0  # bytes of vectors held inside the index (hnswlib stores its own)
    notes: list[str] = field(default_factory=list)


class Method:
    name = ""
    sweep: ClassVar[list[int | None]] = [None]

    def set_ef(self, ef: int | None) -> None:
        pass

    def query(self, q: np.ndarray, tenant: int, k: int, ef: int | None) -> np.ndarray:
        raise NotImplementedError

    def delete(self, labels: list[int], readers: list[np.ndarray]) -> None:
        raise NotImplementedError


class Exact(Method):
    name = "exact"

    def __init__(self, arena: VectorArena, tenant_labels: list[np.ndarray]):
        self.arena = arena
        self.build = Build()
        start = time.perf_counter()
        self.labels = [np.array(x) for x in tenant_labels]
        self.build.seconds = time.perf_counter() - start
        self.build.pairs = sum(len(x) for x in self.labels)
        self.build.memory = sum(x.nbytes for x in self.labels)
        self.build.notes.append("memory: the per-tenant int64 label arrays")

    def query(self, q: np.ndarray, tenant: int, k: int, ef: int | None) -> np.ndarray:
        return self.arena.search(q, self.labels[tenant], k)[0].labels

    def delete(self, labels: list[int], readers: list[np.ndarray]) -> None:
        for label, tenants in zip(labels, readers, strict=True):
            for t in tenants.tolist():
                arr = self.labels[t]
                self.labels[t] = arr[arr != label]


def _space(metric: Metric) -> str:
    return {Metric.COSINE: "cosine", Metric.L2: "l2", Metric.IP: "ip"}[metric]


def hnsw_estimate(elements: int, indexes: int) -> int:
    """hnswlib 0.8 bytes outside the vectors: per element the level-0 links (2M ints + count),
    label, link-list pointer, level, a link-list mutex (40 B), a visited-list slot (2 B), a
    label_lookup hash node (~40 B), and upper-level links for 1/M of the elements; per index
    65,536 label-op mutexes (40 B each)."""
    per_element = (2 * HNSW_M * 4 + 4) + 8 + 8 + 4 + 40 + 2 + 40 + (HNSW_M * 4 + 4) / HNSW_M
    return int(elements * per_element + indexes * 65_536 * 40)


class HnswPerTenant(Method):
    name = "hnsw_per_tenant"

    def __init__(self, w: datasets.Workload, arena: VectorArena, tenant_labels, ef, seed=0):
        self.sweep = list(ef)
        self.arena = arena
        self.indexes: list[hnswlib.Index | None] = [None] * len(tenant_labels)
        self.small: dict[int, np.ndarray] = {}
        self.build = Build()
        rng = np.random.default_rng(seed)
        before = _rss()
        start = time.perf_counter()
        n_indexed = 0
        for t, labels in enumerate(tenant_labels):
            if len(labels) < MIN_HNSW_TENANT:
                self.small[t] = labels.copy()
                continue
            order = rng.permutation(labels)
            index = hnswlib.Index(space=_space(w.metric), dim=w.dim)
            index.init_index(
                max_elements=len(order), M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION,
                random_seed=int(t),
            )  # fmt: skip
            index.add_items(w.vectors[order], order, num_threads=1)
            self.indexes[t] = index
            n_indexed += len(order)
        self.build.seconds = time.perf_counter() - start
        after = _rss()
        self.build.pairs = sum(len(x) for x in tenant_labels)
        self.build.vector_copies = n_indexed * w.dim * 4
        self.build.memory = after - before - self.build.vector_copies
        n_graphs = sum(i is not None for i in self.indexes)
        self.n_graphs = n_graphs
        self.build.notes.append(
            f"{n_graphs} hnswlib indexes ({n_indexed:,} pairs); {len(self.small)} tenants under "
            f"{MIN_HNSW_TENANT} points answered exactly; memory: RSS delta of the build minus "
            f"the vectors held inside the indexes ({n_graphs} x 2.5 MiB of label locks included; "
            f"estimate from hnswlib's allocations: "
            f"{hnsw_estimate(n_indexed, n_graphs) / MIB:,.1f} MiB)"
        )

    def set_ef(self, ef: int | None) -> None:
        for index in self.indexes:
            if index is not None:
                index.set_ef(ef)

    def query(self, q: np.ndarray, tenant: int, k: int, ef: int | None) -> np.ndarray:
        index = self.indexes[tenant]
        if index is None:
            return self.arena.search(q, self.small[tenant], k)[0].labels
        try:
            labels, _ = index.knn_query(q, k=k, num_threads=1)
        except RuntimeError as exc:
            raise Short from exc
        return labels[0]

    def delete(self, labels: list[int], readers: list[np.ndarray]) -> None:
        for label, tenants in zip(labels, readers, strict=True):
            for t in tenants.tolist():
                index = self.indexes[t]
                if index is None:
                    arr = self.small[t]
                    self.small[t] = arr[arr != label]
                else:
                    index.mark_deleted(label)


class HnswSharedFilter(Method):
    name = "hnsw_shared_filter"

    def __init__(self, w: datasets.Workload, tenant_labels, ef, seed=0):
        self.sweep = list(ef)
        self.build = Build()
        rng = np.random.default_rng(seed)
        before = _rss()
        start = time.perf_counter()
        order = rng.permutation(w.n)
        self.index = hnswlib.Index(space=_space(w.metric), dim=w.dim)
        self.index.init_index(
            max_elements=w.n, M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION, random_seed=seed
        )
        self.index.add_items(w.vectors[order], order, num_threads=1)
        graph_done = time.perf_counter()
        graph_rss = _rss()
        self.sets = [set(x.tolist()) for x in tenant_labels]
        self.build.pairs = sum(len(x) for x in tenant_labels)
        sets_seconds = time.perf_counter() - graph_done
        sets_bytes = sum(sys.getsizeof(x) for x in self.sets) + 32 * self.build.pairs
        self.build.seconds = time.perf_counter() - start
        self.build.vector_copies = w.n * w.dim * 4
        label_bytes = sum(x.nbytes for x in tenant_labels)
        self.build.memory = graph_rss - before - self.build.vector_copies + label_bytes
        self.build.notes.append(
            f"graph build {graph_done - start:.1f} s + tenant sets {sets_seconds:.1f} s; memory: "
            f"graph RSS delta minus its vectors (estimate from hnswlib's allocations: "
            f"{hnsw_estimate(w.n, 1) / MIB:,.1f} MiB), plus the tenant label lists as int64 arrays "
            f"({label_bytes / MIB:.1f} MiB; the Python sets the callback reads take about "
            f"{sets_bytes / MIB:.0f} MiB with their int objects, not counted)"
        )

    def set_ef(self, ef: int | None) -> None:
        self.index.set_ef(ef)

    def query(self, q: np.ndarray, tenant: int, k: int, ef: int | None) -> np.ndarray:
        tenant_set = self.sets[tenant]
        try:
            labels, _ = self.index.knn_query(
                q, k=k, num_threads=1, filter=lambda label: label in tenant_set
            )
        except RuntimeError as exc:
            raise Short from exc
        return labels[0]

    def delete(self, labels: list[int], readers: list[np.ndarray]) -> None:
        for label, tenants in zip(labels, readers, strict=True):
            self.index.mark_deleted(label)
            for t in tenants.tolist():
                self.sets[t].discard(label)


class CuratorMethod(Method):
    name = "curator"

    def __init__(
        self, w: datasets.Workload, arena: VectorArena, ef, max_shortlist: int, patience: int,
        seed=0, trace_memory: bool = True,
    ):  # fmt: skip
        from index.curator import ClusterTree, Curator

        self.sweep = list(ef)
        self.patience = patience
        self.name = f"curator_sl{max_shortlist}"
        self.max_shortlist = max_shortlist
        self.build = Build()
        rng = np.random.default_rng(seed)
        sample = w.vectors[np.sort(rng.choice(w.n, size=min(TRAIN_SAMPLE, w.n), replace=False))]
        gc.collect()
        start = time.perf_counter()
        tree = ClusterTree.train(sample, metric=w.metric, branching=32, depth=2, seed=seed)
        trained = time.perf_counter()
        self.curator = Curator(tree, arena, max_shortlist=max_shortlist)
        self.curator.insert_many(w.pair_labels, w.pair_tenants)
        done = time.perf_counter()
        self.build.seconds = done - start
        self.build.train_seconds = trained - start
        self.build.pairs = len(w.pair_labels)
        self.build.memory = self.curator.memory_bytes()
        note = (
            f"train {self.build.train_seconds:.1f} s on {len(sample):,} vectors, insert_many "
            f"{done - trained:.1f} s ({self.build.pairs / (done - trained):,.0f} pairs/s without "
            f"training); memory: Curator.memory_bytes() = {self.build.memory / MIB:.1f} MiB"
        )
        if trace_memory:
            # Rebuild once under tracemalloc (Python + numpy allocations, exact), untimed.
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            twin = Curator(tree, arena, max_shortlist=max_shortlist)
            twin.insert_many(w.pair_labels, w.pair_tenants)
            gc.collect()
            self.traced = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
            del twin
            note += f" (tracemalloc of a second build, tree excluded: {self.traced / MIB:.1f} MiB)"
        self.build.notes.append(note)
        self.stats: dict[int | None, list[tuple[int, int, int]]] = {}

    def steady_memory(self, w: datasets.Workload) -> None:
        """memory_bytes() once every tenant has searched: the search caches a flat view of each
        tenant's sub-tree, which memory_bytes() counts only once it exists."""
        after_build = self.build.memory
        for t in range(w.n_tenants):
            self.curator.search(w.queries[0], t, K, self.sweep[0], patience=self.patience)
        self.build.memory = self.curator.memory_bytes()
        self.build.notes.append(
            f"memory_bytes() right after the build {after_build / MIB:.1f} MiB; after every "
            f"tenant searched once (its cached search view built) {self.build.memory / MIB:.1f} "
            f"MiB: the table shows the latter"
        )

    def query(self, q: np.ndarray, tenant: int, k: int, ef: int | None) -> np.ndarray:
        top, stats = self.curator.search(q, tenant, k, ef, patience=self.patience)
        self._last = stats
        return top.labels

    def delete(self, labels: list[int], readers: list[np.ndarray]) -> None:
        for label, tenants in zip(labels, readers, strict=True):
            self.curator.delete(label, tenants.tolist())


# -- measuring -------------------------------------------------------------------------------


def true_distances(w: datasets.Workload, q: np.ndarray, labels: np.ndarray) -> np.ndarray:
    rows = w.vectors[labels].astype(np.float64)
    q = q.astype(np.float64)
    if w.metric is Metric.L2:
        return np.sqrt(((rows - q) ** 2).sum(axis=1))
    dots = rows @ q
    if w.metric is Metric.IP:
        return 1.0 - dots
    return 1.0 - dots / np.maximum(np.linalg.norm(rows, axis=1) * np.linalg.norm(q), 1e-30)


@dataclass
class Truth:
    kth: np.ndarray  # k-th nearest true distance per query (inf if the tenant reads < k)
    n: np.ndarray  # number of true answers (min(k, readable))
    top: list[np.ndarray]  # the exact answers


def ground_truth(w: datasets.Workload, arena: VectorArena, queries, tenants, labels_of) -> Truth:
    """Exact top-k of each query over `labels_of(tenant)` (the tenant's current labels)."""
    kth = np.full(len(queries), np.inf)
    n = np.zeros(len(queries), dtype=np.int64)
    top = []
    for i, (q, t) in enumerate(zip(queries, tenants.tolist(), strict=True)):
        labels = arena.search(q, labels_of(t), K)[0].labels
        d = true_distances(w, q, labels)
        n[i] = len(labels)
        kth[i] = d.max() if len(labels) >= K else np.inf
        top.append(labels)
    return Truth(kth, n, top)


@dataclass
class Quality:
    recall: np.ndarray  # per query
    short: int
    leaks: int  # labels the tenant cannot read
    dupes: int
    deleted_hits: int = 0


def quality(
    w: datasets.Workload, results: list[np.ndarray | None], truth: Truth, queries, tenants,
    readable: list[set[int]], deleted: set[int] | None = None,
) -> Quality:  # fmt: skip
    recall = np.zeros(len(results))
    short = leaks = dupes = deleted_hits = 0
    for i, labels in enumerate(results):
        if labels is None:
            short += 1
            continue
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) < truth.n[i]:
            short += 1
        leaks += sum(x not in readable[tenants[i]] for x in labels.tolist())
        if deleted:
            deleted_hits += sum(int(x) in deleted for x in labels.tolist())
        unique = np.unique(labels)
        dupes += len(labels) - len(unique)
        good = np.array([x for x in unique.tolist() if x in readable[tenants[i]]], dtype=np.int64)
        if len(good):
            d = true_distances(w, queries[i], good)
            hits = int((d <= truth.kth[i] + 1e-6 * max(1.0, abs(truth.kth[i]))).sum())
        else:
            hits = 0
        recall[i] = min(hits, truth.n[i]) / max(truth.n[i], 1)
    return Quality(recall, short, leaks, dupes, deleted_hits)


def time_pass(method: Method, ef, queries, tenants, collect_stats: bool = False):
    """One timed pass over all queries: latencies (ns), results (None = short), curator stats."""
    method.set_ef(ef)
    lat = np.empty(len(queries), dtype=np.int64)
    results: list[np.ndarray | None] = []
    stats: list[tuple[int, int, int]] = []
    clock = time.perf_counter_ns
    for i in range(len(queries)):
        q = queries[i]
        t = int(tenants[i])
        start = clock()
        try:
            labels = method.query(q, t, K, ef)
        except Short:
            labels = None
        lat[i] = clock() - start
        results.append(labels)
        if collect_stats:
            s = method._last  # type: ignore[attr-defined]
            stats.append((s.nodes_visited, s.shortlists_scanned, s.distances_computed))
    return lat, results, stats


@dataclass
class Row:
    method: str
    ef: int | None
    results: list[np.ndarray | None] = field(default_factory=list)
    runs: list[np.ndarray] = field(default_factory=list)  # latencies (ns) per run
    stats: list[tuple[int, int, int]] = field(default_factory=list)
    quality: Quality | None = None

    def latency(self, mask: np.ndarray) -> dict[str, float]:
        p50 = median([float(np.percentile(r[mask], 50)) / 1e6 for r in self.runs])
        p99 = median([float(np.percentile(r[mask], 99)) / 1e6 for r in self.runs])
        mean = median([float(r[mask].mean()) / 1e6 for r in self.runs])
        return {"p50": p50, "p99": p99, "mean": mean, "qps": 1000.0 / mean}


def run_dataset(w: datasets.Workload, args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n## {w.name}\n\n{w.description}", flush=True)
    tenant_labels = w.tenant_labels()
    sizes = np.array([len(x) for x in tenant_labels])
    readable = [set(x.tolist()) for x in tenant_labels]
    queries, q_tenants = w.queries, w.query_tenants
    small = sizes[q_tenants] < SMALL_SHARE * w.n
    everyone = np.ones(len(queries), dtype=bool)

    arena = VectorArena(w.dim, w.metric, initial_capacity=w.n)
    labels = arena.allocate(w.n)
    assert np.array_equal(labels, np.arange(w.n))
    arena.put(labels, w.vectors)

    methods: list[Method] = []
    exact = Exact(arena, tenant_labels)
    methods.append(exact)
    t0 = time.perf_counter()
    truth = ground_truth(w, arena, queries, q_tenants, lambda t: exact.labels[t])
    print(f"ground truth: {time.perf_counter() - t0:.1f} s", flush=True)

    # hnswlib first: their memory is an RSS delta, best taken before other builds churn the heap.
    print("building hnsw_per_tenant ...", flush=True)
    per_tenant = HnswPerTenant(w, arena, tenant_labels, args.ef)
    print(f"  {per_tenant.build.seconds:.1f} s; {per_tenant.build.notes[-1]}", flush=True)
    print("building hnsw_shared_filter ...", flush=True)
    shared = HnswSharedFilter(w, tenant_labels, args.shared_ef)
    print(f"  {shared.build.seconds:.1f} s; {shared.build.notes[-1]}", flush=True)
    skip = curator_available()
    if skip is None:
        for sl in args.max_shortlist:
            print(f"building curator (max_shortlist {sl}) ...", flush=True)
            c = CuratorMethod(w, arena, args.ef, sl, args.patience, trace_memory=args.trace_memory)
            print(f"  {c.build.seconds:.1f} s; {c.build.notes[-1]}", flush=True)
            methods.append(c)
    else:
        print(f"SKIPPING the curator row: {skip}", flush=True)
    methods += [per_tenant, shared]

    rows = [Row(m.name, ef) for m in methods for ef in m.sweep]
    by_name = {m.name: m for m in methods}
    # Warm-up: a few queries per configuration (caches, lazy allocations, first-call costs);
    # every query once for the Curator, whose per-tenant search view is built on first use.
    for row in rows:
        time_pass(by_name[row.method], row.ef, queries[:10], q_tenants[:10])
    for m in methods:
        if isinstance(m, CuratorMethod):
            time_pass(m, m.sweep[0], queries, q_tenants)
    for run in range(args.runs):
        t0 = time.perf_counter()
        shift = run * max(1, len(rows) // max(args.runs, 1))
        for row in rows[shift:] + rows[:shift]:
            gc.collect()
            method = by_name[row.method]
            lat, results, stats = time_pass(
                method, row.ef, queries, q_tenants, collect_stats=isinstance(method, CuratorMethod)
            )
            row.runs.append(lat)
            if run == 0:
                row.results, row.stats = results, stats
        print(f"run {run + 1}/{args.runs}: {time.perf_counter() - t0:.1f} s", flush=True)
    for row in rows:
        row.quality = quality(w, row.results, truth, queries, q_tenants, readable)
    for m in methods:
        if isinstance(m, CuratorMethod):
            m.steady_memory(w)

    # -- deletes: 2% of the points with all their pairs, then a check pass ---------------------
    rng = np.random.default_rng(1)
    victims = np.sort(rng.choice(w.n, size=max(1, int(DELETE_SHARE * w.n)), replace=False))
    point_readers = w.point_readers()
    victim_list = victims.tolist()
    victim_readers = [point_readers[v] for v in victim_list]
    delete_rate: dict[str, float] = {}
    for m in methods:
        gc.collect()
        start = time.perf_counter()
        m.delete(victim_list, victim_readers)
        delete_rate[m.name] = len(victim_list) / (time.perf_counter() - start)
    deleted = set(victim_list)
    readable_after = [s - deleted for s in readable]
    truth_after = ground_truth(w, arena, queries, q_tenants, lambda t: exact.labels[t])
    after: dict[str, Quality] = {}
    for m in methods:
        ef = POST_DELETE_EF if m.sweep != [None] else None
        _, results, _ = time_pass(m, ef, queries, q_tenants)
        after[m.name] = quality(
            w, results, truth_after, queries, q_tenants, readable_after, deleted
        )

    churn = []
    for c in [m for m in methods if isinstance(m, CuratorMethod)]:
        before = next((r for r in rows if r.method == c.name and r.ef == POST_DELETE_EF), None)
        churn += curator_churn(
            w, arena, c, victim_list, victim_readers, readable, truth,
            before.quality if before else None, small,
        )  # fmt: skip
    result = report(w, args, methods, rows, small, everyone, delete_rate, after, len(victim_list))
    print(f"\nCurator churn (ef={POST_DELETE_EF}; each step checked against exact answers):")
    for line in churn:
        print(f"- {line}")
    result["churn"] = churn
    return result


def curator_churn(
    w: datasets.Workload, arena: VectorArena, c: CuratorMethod, victims: list[int],
    victim_readers: list[np.ndarray], readable: list[set[int]], truth: Truth,
    before: Quality | None, small: np.ndarray,
) -> list[str]:  # fmt: skip
    """Incremental paths of the Curator after the bulk build and the deletes: re-insert the
    deleted points pair by pair (insert for the owner, grant for each reader), revoke grants
    (among them grants in the queries' exact answers), grant them back; after each step query
    at ef=POST_DELETE_EF and compare with exact answers over the tenants' current labels."""
    cur = c.curator
    queries, q_tenants = w.queries, w.query_tenants
    lines: list[str] = []
    ref = f" (before the deletes: {before.recall.mean():.3f})" if before else ""

    def check(label: str, now: list[set[int]], step_truth: Truth | None = None) -> Quality:
        step_truth = step_truth or ground_truth(
            w, arena, queries, q_tenants, lambda t: np.fromiter(sorted(now[t]), np.int64)
        )
        _, results, _ = time_pass(c, POST_DELETE_EF, queries, q_tenants)
        q = quality(w, results, step_truth, queries, q_tenants, now)
        lines.append(
            f"{label}: recall@10 {q.recall.mean():.3f} (<5%: {q.recall[small].mean():.3f}), "
            f"leaks {q.leaks}, short {q.short}, duplicates {q.dupes}"
        )
        return q

    # 1. Re-insert the deleted points, one pair at a time.
    n_pairs = sum(len(r) for r in victim_readers)
    try:
        cur.insert(victims[0], int(victim_readers[0][0]))
        cur.revoke(victims[0], int(victim_readers[0][0]))
        needs_place = False
    except KeyError as exc:
        needs_place = True
        lines.append(
            f"interface: insert(label, tenant) of a deleted label raises KeyError({exc}) until "
            f"the label is placed again (Curator.place, not in the agreed interface); the "
            f"bench calls place() on the re-inserted labels inside the timed loop"
        )
    start = time.perf_counter()
    if needs_place:
        cur.place(np.asarray(victims, dtype=np.int64))
    for label, tenants in zip(victims, victim_readers, strict=True):
        ts = tenants.tolist()
        cur.insert(label, ts[0])
        for t in ts[1:]:
            cur.grant(label, t)
    seconds = time.perf_counter() - start
    lines.append(
        f"re-insert {len(victims):,} deleted points = {n_pairs:,} pairs one at a time "
        f"(insert + grant): {n_pairs / seconds:,.0f} pairs/s"
    )
    check(f"after re-insert{ref}", readable, truth)

    # 2. Revoke grants: those among the queries' exact answers plus 1% of all grants at random.
    targeted = {
        (int(label), int(t))
        for top, t in zip(truth.top, q_tenants.tolist(), strict=True)
        for label in top.tolist()
        if w.owners[label] != t
    }
    grants = np.flatnonzero(w.owners[w.pair_labels] != w.pair_tenants)
    rng = np.random.default_rng(2)
    pick = rng.choice(grants, size=max(1, len(grants) // 100), replace=False)
    revoked = targeted | set(
        zip(w.pair_labels[pick].tolist(), w.pair_tenants[pick].tolist(), strict=True)
    )
    revoked_list = sorted(revoked)
    start = time.perf_counter()
    for label, t in revoked_list:
        cur.revoke(label, t)
    seconds = time.perf_counter() - start
    lines.append(
        f"revoke {len(revoked_list):,} grants ({len(targeted):,} of them in the queries' exact "
        f"answers): {len(revoked_list) / seconds:,.0f} pairs/s"
    )
    now = [set(x) for x in readable]
    for label, t in revoked_list:
        now[t].discard(label)
    check("after revoke (a leak = a revoked label returned)", now)

    # 3. Grant them back.
    start = time.perf_counter()
    for label, t in revoked_list:
        cur.grant(label, t)
    seconds = time.perf_counter() - start
    lines.append(f"grant them back: {len(revoked_list) / seconds:,.0f} pairs/s")
    check(f"after grant back{ref}", readable, truth)

    # 4. A query right after a write to its tenant (a grant then its revoke): the first
    # search after a write rebuilds the tenant's cached view.
    cold = np.empty(len(queries))
    warm = np.empty(len(queries))
    clock = time.perf_counter_ns
    for i, (q, t) in enumerate(zip(queries, q_tenants.tolist(), strict=True)):
        probe = next((x for x in range(3) if x not in readable[t]), None)
        if probe is None:
            cold[i] = warm[i] = np.nan
            continue
        cur.grant(probe, t)
        cur.revoke(probe, t)
        start = clock()
        cur.search(q, t, K, POST_DELETE_EF, patience=c.patience)
        cold[i] = clock() - start
        start = clock()
        cur.search(q, t, K, POST_DELETE_EF, patience=c.patience)
        warm[i] = clock() - start
    lines.append(
        f"search right after a write to its tenant: p50 {np.nanmedian(cold) / 1e6:.3f} ms, "
        f"p99 {np.nanpercentile(cold, 99) / 1e6:.3f} ms; the next search of the same query: "
        f"p50 {np.nanmedian(warm) / 1e6:.3f} ms"
    )

    if hasattr(cur, "check_invariants"):
        start = time.perf_counter()
        try:
            cur.check_invariants()
            verdict = "hold"
        except AssertionError as exc:
            verdict = f"FAIL: {exc}"
        lines.append(
            f"check_invariants() after all of it: {verdict} ({time.perf_counter() - start:.1f} s)"
        )
    return lines


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def report(w, args, methods, rows, small, everyone, delete_rate, after, n_deleted):
    builds = {m.name: m.build for m in methods}
    headers = [
        "method", "ef", "recall@10", "recall <5%", "p50 ms", "p99 ms", "QPS", "p50 ms <5%",
        "p99 ms <5%", "short", "index MiB", "vectors in index MiB", "insert+grant pairs/s",
        "delete points/s",
    ]  # fmt: skip
    lines = []
    out_rows = []
    seen: set[str] = set()
    for row in rows:
        q = row.quality
        assert q is not None
        lat_all, lat_small = row.latency(everyone), row.latency(small)
        b = builds[row.method]
        first = row.method not in seen
        seen.add(row.method)
        lines.append([
            row.method, "-" if row.ef is None else str(row.ef), fmt(q.recall.mean()),
            fmt(q.recall[small].mean()), fmt(lat_all["p50"]), fmt(lat_all["p99"]),
            f"{lat_all['qps']:,.0f}", fmt(lat_small["p50"]), fmt(lat_small["p99"]),
            str(q.short), f"{b.memory / MIB:,.1f}" if first else "",
            f"{b.vector_copies / MIB:,.1f}" if first else "",
            f"{b.pairs / b.seconds:,.0f}" if first else "",
            f"{delete_rate[row.method]:,.0f}" if first else "",
        ])  # fmt: skip
        out_rows.append({
            "method": row.method, "ef": row.ef, "recall": float(q.recall.mean()),
            "recall_small": float(q.recall[small].mean()), "all": lat_all, "small": lat_small,
            "short": q.short, "leaks": q.leaks, "dupes": q.dupes,
            "stats": np.mean(row.stats, axis=0).tolist() if row.stats else None,
        })  # fmt: skip
    print(
        f"\n### {w.name}: {len(small)} queries ({int(small.sum())} from tenants under "
        f"{SMALL_SHARE:.0%} of the {w.n:,} points), k={K}, medians of {args.runs} runs\n"
    )
    print(table(headers, lines))

    print("\nBuild:")
    for m in methods:
        b = m.build
        train = f", of which training {b.train_seconds:.1f} s" if b.train_seconds else ""
        print(f"- {m.name}: {b.pairs:,} pairs in {b.seconds:.1f} s{train}; " + "; ".join(b.notes))

    print("\nCorrectness (first run; leaks = returned labels the tenant cannot read):")
    for row in rows:
        q = row.quality
        if q.leaks or q.dupes:
            print(f"- {row.method} ef={row.ef}: {q.leaks} leaked labels, {q.dupes} duplicates")
    print(f"- no other leaks or duplicates in {len(rows)} configurations")

    print(f"\nAfter deleting {n_deleted:,} points (ef={POST_DELETE_EF} for the approximate rows):")
    for name, q in after.items():
        print(
            f"- {name}: recall@10 {q.recall.mean():.3f} (<5%: {q.recall[small].mean():.3f}), "
            f"deleted labels returned {q.deleted_hits}, leaks {q.leaks}, short {q.short}, "
            f"duplicates {q.dupes}"
        )

    stat_rows = [r for r in rows if r.stats]
    if stat_rows:
        print("\nCurator traversal (means per query):")
        print(
            table(
                ["method", "ef", "nodes visited", "shortlists scanned", "distances computed"],
                [
                    [r.method, str(r.ef)] + [f"{x:,.1f}" for x in np.mean(r.stats, axis=0)]
                    for r in stat_rows
                ],
            )
        )

    print("\nTargets (cheapest sweep point with recall@10 >= 0.95 on the subset):")
    best: dict[str, dict[str, Any]] = {}
    for subset, mask, key in (("all", everyone, "recall"), ("<5%", small, "recall_small")):
        for row, out in zip(rows, out_rows, strict=True):
            if out[key] < 0.95:
                continue
            p50 = out["all" if subset == "all" else "small"]["p50"]
            cur = best.get(f"{row.method}|{subset}")
            if cur is None or p50 < cur["p50"]:
                best[f"{row.method}|{subset}"] = {"ef": row.ef, "p50": p50, "recall": out[key]}
        del mask
    target_lines = []
    for m in methods:
        for subset in ("all", "<5%"):
            b = best.get(f"{m.name}|{subset}")
            target_lines.append(
                [m.name, subset, "-" if b is None else str(b["ef"]),
                 "not reached" if b is None else fmt(b["recall"]),
                 "-" if b is None else fmt(b["p50"])]
            )  # fmt: skip
    print(table(["method", "queries", "ef", "recall@10", "p50 ms"], target_lines))
    for c in [m for m in methods if isinstance(m, CuratorMethod)]:
        for subset in ("all", "<5%"):
            cb = best.get(f"{c.name}|{subset}")
            pt = best.get(f"hnsw_per_tenant|{subset}")
            sf = best.get(f"hnsw_shared_filter|{subset}")
            if cb is None:
                print(f"- {c.name} ({subset}): recall@10 0.95 not reached in the sweep")
                continue
            if pt is not None:
                print(
                    f"- {c.name} ({subset}): {cb['p50'] / pt['p50']:.1f}x the p50 of "
                    f"hnsw_per_tenant (target <= 3x)"
                )
            if sf is not None:
                print(
                    f"- {c.name} ({subset}): hnsw_shared_filter p50 is {sf['p50'] / cb['p50']:.1f}x"
                    f" curator's (target >= 5x for tenants under 5%)"
                )
        per_tenant_total = (
            builds["hnsw_per_tenant"].memory + builds["hnsw_per_tenant"].vector_copies
        )
        print(
            f"- {c.name} memory: {c.build.memory / MIB:.1f} MiB = "
            f"1/{builds['hnsw_per_tenant'].memory / max(c.build.memory, 1):.1f} of "
            f"hnsw_per_tenant's index memory excluding vectors, 1/"
            f"{per_tenant_total / max(c.build.memory, 1):.1f} including the vectors it copies "
            f"(target <= 1/5)"
        )
    return {
        "dataset": w.name, "description": w.description, "rows": out_rows,
        "builds": {n: b.__dict__ for n, b in builds.items()}, "delete_rate": delete_rate,
        "after_delete": {n: {"recall": float(q.recall.mean()), "deleted_hits": q.deleted_hits,
                             "leaks": q.leaks, "short": q.short} for n, q in after.items()},
        "best": best, "n_queries": len(small), "n_small": int(small.sum()),
    }  # fmt: skip


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    methods: dict[str, list[dict[str, Any]]] = {}
    for row in result["rows"]:
        methods.setdefault(row["method"], []).append(row)
    for ax, (subset, key, title) in zip(
        axes,
        (("all", "recall", "all queries"), ("small", "recall_small", "tenants under 5%")),
        strict=True,
    ):
        for name, rows in methods.items():
            xs = [r[subset]["p50"] for r in rows]
            ys = [r[key] for r in rows]
            style = "*" if len(rows) == 1 else "o-"
            ax.plot(xs, ys, style, label=name, markersize=9 if len(rows) == 1 else 4)
            for r, x, y in zip(rows, xs, ys, strict=True):
                if r["ef"] is not None:
                    ax.annotate(str(r["ef"]), (x, y), fontsize=6, xytext=(3, -7),
                                textcoords="offset points")  # fmt: skip
        ax.axhline(0.95, color="grey", linewidth=0.6, linestyle=":")
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency per query, ms (log)")
        ax.set_title(f"{result['dataset']}: {title}")
        ax.grid(True, which="both", linewidth=0.3)
    axes[0].set_ylabel(f"recall@{K}")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50k synthetic, 20k Debian, 1 run")
    parser.add_argument("--datasets", nargs="+", default=["debian", "synthetic"])
    parser.add_argument("--runs", type=int, default=None, help="timed passes (default 3; 1 quick)")
    parser.add_argument("--queries", type=int, default=None, help="per data set (300; 100 quick)")
    parser.add_argument("--ef", type=int, nargs="+", default=DEFAULT_EF)
    parser.add_argument("--shared-ef", type=int, nargs="+", default=None)
    parser.add_argument("--max-shortlist", type=int, nargs="+", default=[256])
    parser.add_argument(
        "--patience", type=int, default=IndexSettings().patience,
        help="Curator stop rule (default: the server's IndexSettings default)",
    )  # fmt: skip
    parser.add_argument("--no-trace-memory", dest="trace_memory", action="store_false")
    parser.add_argument("--plots", type=Path, help="PNG directory (docs/; $TMPDIR with --quick)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    args.runs = args.runs or (1 if args.quick else 3)
    args.queries = args.queries or (100 if args.quick else 300)
    args.shared_ef = args.shared_ef or args.ef
    args.plots = args.plots or (Path(tempfile.gettempdir()) if args.quick else REPO / "docs")
    print(f"# Curator vs per-tenant baselines\n\n{machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, '-m', 'bench.curator', *sys.argv[1:]])}")
    print(
        f"curator: ClusterTree branching 32, depth 2, trained on {TRAIN_SAMPLE:,} sampled vectors; "
        f"max_shortlist {args.max_shortlist}, patience {args.patience}"
    )
    results = []
    with threadpool_limits(1):
        for name in args.datasets:
            started = time.perf_counter()
            if name == "debian":
                w = datasets.debian(
                    n_queries=args.queries, subsample=20_000 if args.quick else None
                )
            elif name == "synthetic":
                w = datasets.synthetic(n=50_000 if args.quick else 200_000, n_queries=args.queries)
            else:
                parser.error(f"unknown data set {name}")
            result = run_dataset(w, args)
            result["seconds"] = time.perf_counter() - started
            results.append(result)
            path = args.plots / f"curator-{name}.png"
            plot(result, path)
            print(f"\n{name}: {result['seconds']:.0f} s; plot: {path}", flush=True)
            del w
            gc.collect()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
