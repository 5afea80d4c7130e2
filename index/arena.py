"""The vector arena: float32 rows by label, their norms, and exact top-k over any label set.

Invariants:
- a label is either live (its row holds the point's vector, `norms_sq[label]` its squared
  norm) or free (listed once in the free list, row contents meaningless);
- `high_water` is one past the largest label ever handed out; labels below it that are not live
  are free; capacity grows by doubling, so an insert copies rows only on the rare growth.

Distances are smaller-is-closer for every metric: cosine `1 - cos`, l2 Euclidean distance,
ip `1 - dot` (hnswlib's convention, so graph and exact plans agree).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from index.kernels import METRIC_CODES, finish_distances, scan_exact

_SCANNED_QUERIES = 4  # up to this many queries are scanned one by one; more share a GEMM


class Metric(StrEnum):
    COSINE = "cosine"
    L2 = "l2"
    IP = "ip"


@dataclass(frozen=True, slots=True)
class TopK:
    """Result of one query: labels and distances, nearest first."""

    labels: np.ndarray  # int64
    distances: np.ndarray  # float32


class VectorArena:
    def __init__(self, dim: int, metric: Metric, initial_capacity: int = 1024):
        self.dim = dim
        self.metric = Metric(metric)
        capacity = max(16, initial_capacity)
        self._rows = np.zeros((capacity, dim), dtype=np.float32)
        self._norms_sq = np.zeros(capacity, dtype=np.float32)
        self._live = np.zeros(capacity, dtype=bool)
        self.high_water = 0
        self._free: list[int] = []  # min-heap: reuse low labels first, keeps the arena dense
        self.count = 0

    # -- allocation ---------------------------------------------------------------------

    def allocate(self, n: int) -> np.ndarray:
        """Reserve `n` labels (not yet live) for rows about to be written."""
        reused = [heapq.heappop(self._free) for _ in range(min(n, len(self._free)))]
        fresh = np.arange(self.high_water, self.high_water + n - len(reused), dtype=np.int64)
        self.high_water += len(fresh)
        self._ensure_capacity(self.high_water)
        return np.concatenate([np.asarray(reused, dtype=np.int64), fresh])

    def release(self, labels: np.ndarray) -> None:
        """Return reserved labels that were never written (a failed write)."""
        for label in np.asarray(labels, dtype=np.int64).tolist():
            if not self._live[label]:
                heapq.heappush(self._free, label)

    def _ensure_capacity(self, needed: int) -> None:
        capacity = len(self._rows)
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        rows = np.zeros((capacity, self.dim), dtype=np.float32)
        rows[: len(self._rows)] = self._rows
        norms_sq = np.zeros(capacity, dtype=np.float32)
        norms_sq[: len(self._norms_sq)] = self._norms_sq
        live = np.zeros(capacity, dtype=bool)
        live[: len(self._live)] = self._live
        self._rows, self._norms_sq, self._live = rows, norms_sq, live

    # -- rows ---------------------------------------------------------------------------

    def put(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Write rows for allocated (or live, to overwrite) labels."""
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) and int(labels.max()) >= self.high_water:
            self.high_water = int(labels.max()) + 1
            self._ensure_capacity(self.high_water)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(labels), self.dim)
        self._rows[labels] = vectors
        self._norms_sq[labels] = np.einsum("ij,ij->i", vectors, vectors)
        self.count += int(np.count_nonzero(~self._live[labels]))
        self._live[labels] = True

    def remove(self, labels: np.ndarray, recycle: bool = True) -> None:
        """`recycle=False`: the labels are not offered to `allocate` again (a copy that never
        allocates, whose labels come from elsewhere, would only grow its free list)."""
        labels = np.asarray(labels, dtype=np.int64)
        labels = labels[self._live[labels]]
        self._live[labels] = False
        self.count -= len(labels)
        if recycle:
            for label in labels.tolist():
                heapq.heappush(self._free, label)

    def restore_free_list(self) -> None:
        """After recovery wrote rows with `put`: every non-live label below high_water is free."""
        self._free = np.flatnonzero(~self._live[: self.high_water]).tolist()
        heapq.heapify(self._free)

    @property
    def matrix(self) -> np.ndarray:
        """The row storage itself, for compiled kernels that read rows in place. Valid until
        the next growth; callers hold the collection's read lock, which excludes growth."""
        return self._rows

    @property
    def norms_sq(self) -> np.ndarray:
        return self._norms_sq

    def rows(self, labels: np.ndarray) -> np.ndarray:
        """Copies of the rows of `labels` (a gather)."""
        return self._rows[labels]

    def vector(self, label: int) -> np.ndarray:
        return self._rows[label].copy()

    def is_live(self, label: int) -> bool:
        return 0 <= label < self.high_water and bool(self._live[label])

    def live_labels(self) -> np.ndarray:
        return np.flatnonzero(self._live[: self.high_water])

    @property
    def memory_bytes(self) -> int:
        return self._rows.nbytes + self._norms_sq.nbytes + self._live.nbytes

    # -- exact search -------------------------------------------------------------------

    def search(self, queries: np.ndarray, labels: np.ndarray, k: int) -> list[TopK]:
        """Exact top-`k` of each query among `labels` (all live), nearest first; ties broken
        by label.

        A few queries are scanned one by one by the compiled kernel, which reads each row in
        place into a k-heap: no gathered copy of the rows, no temporaries, 3-4x faster than
        gather + product from 200 to 30,000 rows (one 384-d query, docs/benchmarks.md
        "Serving"). A larger batch is one GEMM over the gathered rows, whose cost the queries
        share.
        """
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) == 0 or k < 1:
            empty = TopK(np.empty(0, np.int64), np.empty(0, np.float32))
            return [empty] * len(queries)
        if len(queries) <= _SCANNED_QUERIES:
            return [self._scan(np.ascontiguousarray(query), labels, k) for query in queries]
        # numpy would wrap a negative label, and read a row past the live ones unasked.
        if int(labels.min()) < 0 or int(labels.max()) >= self.high_water:
            raise IndexError(f"labels outside 0..{self.high_water - 1}")
        distances = self.distances(queries, labels)
        return [self.top_k(labels, row, k) for row in distances]

    def _scan(self, query: np.ndarray, labels: np.ndarray, k: int) -> TopK:
        capacity = min(k, len(labels))
        heap_distances = np.empty(capacity, dtype=np.float32)
        heap_labels = np.empty(capacity, dtype=np.int64)
        size = scan_exact(
            self._rows,
            self._norms_sq,
            labels,
            query,
            float(np.dot(query, query)),
            METRIC_CODES[self.metric],
            heap_distances,
            heap_labels,
            self.high_water,
        )
        if size < 0:  # the kernel refused a label past the rows (it reads them unchecked)
            raise IndexError(f"labels outside 0..{self.high_water - 1}")
        return TopK(heap_labels[:size], finish_distances(heap_distances[:size], self.metric))

    def distances(self, queries: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(m, n) distances from each of `queries` (m, dim) to the rows of `labels` (n,)."""
        rows = self._rows[labels]
        if self.metric is Metric.L2:
            return self._euclidean(rows, queries)
        if len(queries) == 1:
            dots = np.einsum("ij,j->i", rows, queries[0])[None, :]
        else:
            dots = queries @ rows.T
        return self._dot_distances(dots, queries, labels)

    def _dot_distances(
        self, dots: np.ndarray, queries: np.ndarray, labels: np.ndarray
    ) -> np.ndarray:
        if self.metric is Metric.IP:
            return 1.0 - dots
        row_norms_sq = self._norms_sq[labels]
        query_norms_sq = np.einsum("ij,ij->i", queries, queries)[:, None]
        denominator = np.sqrt(query_norms_sq * row_norms_sq[None, :])
        return 1.0 - dots / np.maximum(denominator, np.float32(1e-30))

    @staticmethod
    def _euclidean(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Differences, not `|x|^2 - 2x.q + |q|^2`: in float32 that expansion cancels
        catastrophically for points far from the origin (distances off by 1e-2 at norm 500)."""
        out = np.empty((len(queries), len(rows)), dtype=np.float32)
        for i, query in enumerate(queries):
            diff = rows - query
            out[i] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        return out

    @staticmethod
    def top_k(labels: np.ndarray, distances: np.ndarray, k: int) -> TopK:
        """The `k` smallest of `distances` (aligned with `labels`), nearest first."""
        if k < len(distances):
            kth = distances[np.argpartition(distances, k - 1)[k - 1]]
            # Every label as near as the k-th competes: which of equally near labels make
            # the top k is decided by label, as the compiled scan decides it.
            part = np.flatnonzero(~(distances > kth))  # a NaN k-th keeps them all
        else:
            part = np.arange(len(distances))
        order = np.lexsort((labels[part], distances[part]))[:k]
        chosen = part[order]
        return TopK(labels[chosen], distances[chosen].astype(np.float32))


def heap_top_k(
    heap_distances: np.ndarray, heap_labels: np.ndarray, size: int, k: int, metric: Metric
) -> TopK:
    """The `k` nearest in the first `size` entries of a kernel's heap, nearest first (ties by
    label), with real distances (the kernels keep squared ones for l2)."""
    order = np.lexsort((heap_labels[:size], heap_distances[:size]))[:k]
    distances = finish_distances(heap_distances[order], metric)
    return TopK(heap_labels[order], distances.astype(np.float32, copy=False))


def warm_up() -> None:
    """Compile the exact scan's kernel (or load it from numba's cache) now, with the types
    every search passes, rather than in the first query after a start: 150-200 ms there."""
    arena = VectorArena(2, Metric.COSINE)
    arena.put(arena.allocate(2), np.eye(2, dtype=np.float32))
    arena.search(np.ones((1, 2), dtype=np.float32), np.arange(2, dtype=np.int64), 1)
