"""HNSW graphs (hnswlib) over a set of arena labels, safe to share between threads.

hnswlib facts this module is built around:
- `add_items` / `mark_deleted` must not run during `knn_query`, and `ef` is one setting per
  index: the `_Gate` admits either one writer, or any number of readers that all want the same
  `ef` (the first reader of a group sets it). Both calls release the GIL, so two readers on two
  cores really run at once.
- `knn_query` raises when it cannot find `k` live elements: the graph answers short instead
  and the caller falls back to an exact scan.
- a deleted label still takes a slot (`element_count`) until the graph is rebuilt; re-adding a
  deleted label revives it with the new vector.
- insertion grouped by cluster costs recall, so bulk builds insert in a shuffled order.

The graph does no I/O: `to_bytes`/`from_bytes` give the server something to persist.
"""

from __future__ import annotations

import math
import pickle
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import hnswlib
import numpy as np
from pyroaring import BitMap

from index import recall
from index.arena import Metric

_SPACES = {Metric.COSINE: "cosine", Metric.IP: "ip", Metric.L2: "l2"}
_FORMAT = 5  # 5: recall checks with held-out queries (older checks are rebuilt)
_CHECK_TARGET = 0.96  # what the self-check asks of an ef: a margin for sampling error
_CHECK_MULTIPLES = (1, 2, 4, 8)


@dataclass(frozen=True)
class GraphParams:
    m: int = 16
    ef_construction: int = 100
    seed: int = 7


class _Gate:
    """One writer, or readers that share one `ef` value. A waiting writer, or a reader that
    needs another `ef`, stops new readers from joining so nobody waits forever."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._other_ef_waiting = 0
        self._ef: int | None = None

    @contextmanager
    def reading(self, ef: int, set_ef: Callable[[int], None]) -> Iterator[None]:
        with self._cond:
            waited = False
            while (
                self._writer
                or self._writers_waiting
                or (self._readers and (self._ef != ef or (self._other_ef_waiting and not waited)))
            ):
                if self._readers and self._ef != ef and not waited:
                    self._other_ef_waiting += 1
                    waited = True
                self._cond.wait()
            if waited:
                self._other_ef_waiting -= 1
            if self._ef != ef:
                set_ef(ef)
                self._ef = ef
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()

    def forget_ef(self) -> None:
        self._ef = None


class HnswGraph:
    """`members`: the labels the graph answers with (present and not deleted); `tombstones`:
    labels marked deleted, still taking slots. `pending` is kept by the owner of the graph: the
    labels changed since they were last applied here, which searches must not trust."""

    def __init__(self, dim: int, metric: Metric, params: GraphParams | None = None):
        self.dim = dim
        self.metric = Metric(metric)
        self.params = params or GraphParams()
        self.members = BitMap()
        self.tombstones = BitMap()
        self.pending = BitMap()
        self.touched = BitMap()  # owner's bookkeeping too: marked pending since a copy
        self.ef_floor = 0  # least ef that met the recall target in `calibrate` (0: unchecked)
        self.recall = 1.0  # leave-one-out recall@10 measured there at `ef_floor`
        self.checked_size = 0  # members when `calibrate` last ran
        self.recall_by_band: dict[float, float] | None = None  # None: too small to check
        self._gate = _Gate()
        self._index = hnswlib.Index(space=_SPACES[self.metric], dim=dim)
        self._index.init_index(
            max_elements=1024,
            M=self.params.m,
            ef_construction=self.params.ef_construction,
            random_seed=self.params.seed,
        )

    # -- writes (callers need no lock: the gate excludes readers) -------------------------

    def build(self, labels: np.ndarray, vectors: np.ndarray, threads: int = 1) -> None:
        """Bulk insert into an empty graph, in a shuffled order."""
        order = np.random.default_rng(self.params.seed).permutation(len(labels))
        self.add(np.asarray(labels)[order], np.asarray(vectors)[order], threads)

    def add(self, labels: np.ndarray, vectors: np.ndarray, threads: int = 1) -> None:
        """Insert or replace the vectors of `labels`."""
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) == 0:
            return
        with self._gate.writing():
            needed = self._index.element_count + len(labels)
            if needed > self._index.get_max_elements():
                self._index.resize_index(max(needed, 2 * self._index.get_max_elements()))
            self._index.add_items(vectors, labels.astype(np.uint64), num_threads=threads)
            added = BitMap(labels.tolist())
            self.members |= added
            self.tombstones -= added

    def remove(self, labels: np.ndarray) -> None:
        doomed = BitMap(np.asarray(labels, dtype=np.int64).tolist()) & self.members
        if not doomed:
            return
        with self._gate.writing():
            for label in doomed:
                self._index.mark_deleted(label)
            self.members -= doomed
            self.tombstones |= doomed

    # -- reads ----------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` nearest members: (labels int64, distances float32 with the arena's
        conventions); nothing at all when hnswlib could not find `k` (the caller scans)."""
        k = min(k, len(self.members))
        if k == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        with self._gate.reading(max(ef, k), self._index.set_ef):
            try:
                labels, distances = self._index.knn_query(query, k=k, num_threads=1)
            except RuntimeError:  # fewer than k reachable (tombstones): the caller falls back
                return np.empty(0, np.int64), np.empty(0, np.float32)
        distances = distances[0]
        if self.metric is Metric.L2:  # hnswlib's l2 is squared
            distances = np.sqrt(np.maximum(distances, 0.0))
        return labels[0].astype(np.int64), distances.astype(np.float32)

    def calibrate(
        self,
        labels: np.ndarray,
        vectors: np.ndarray,
        ef: int,
        k: int = 10,
        queries: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Measure this graph's recall (`index.recall`): `ef_floor` becomes the least of `ef`
        x (1, 2, 4, 8) whose unfiltered recall@k reaches 0.96 (8x if none does), then
        `recall_by_band` holds the post-filtered recall at that ef for every selectivity band.
        Some data (many near-equal distances, high intrinsic dimension) keeps a graph below
        the target; the planner then leaves it out for the bands that miss."""
        self.checked_size = len(labels)
        query_labels, query_vectors = queries if queries is not None else (None, None)
        check = recall.prepare(
            labels, vectors, self.metric, k, self.params.seed, query_labels, query_vectors
        )
        if check is None:
            self.ef_floor, self.recall, self.recall_by_band = ef, 1.0, None
            return

        def answer(i: int, band: float, mask: np.ndarray) -> np.ndarray:
            fetch = k + 1 if band >= 1.0 else math.ceil(2 * k / band) + 1
            got, _ = self.search(check.queries[i], fetch, max(self.ef_floor, fetch))
            return got[mask[got]]

        for multiple in _CHECK_MULTIPLES:
            self.ef_floor = ef * multiple
            self.recall = recall.measure(check, answer, k, bands=(1.0,))[1.0]
            if self.recall >= _CHECK_TARGET:
                break
        self.recall_by_band = recall.measure(check, answer, k)

    def meets_recall_at(self, selectivity: float) -> bool:
        return recall.meets(self.recall_by_band, selectivity)

    @property
    def slots(self) -> int:
        return len(self.members) + len(self.tombstones)

    @property
    def tombstone_fraction(self) -> float:
        return len(self.tombstones) / max(1, self.slots)

    def memory_bytes(self) -> int:
        """Vectors plus links as hnswlib lays them out (its file size equals its memory)."""
        return int(self._index.index_file_size())

    # -- persistence ----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The graph pickled; searches go on meanwhile (they only read), writes wait."""
        with self._gate.reading(self._index.ef, self._index.set_ef):
            state = (
                _FORMAT,
                self.dim,
                str(self.metric),
                self.params,
                self._index,
                self.ef_floor,
                self.recall,
                self.recall_by_band,
            )
            return pickle.dumps(
                (state, self.members.serialize(), self.tombstones.serialize()),
                protocol=pickle.HIGHEST_PROTOCOL,
            )

    @classmethod
    def from_bytes(cls, raw: bytes) -> HnswGraph:
        state, members, tombstones = pickle.loads(raw)
        version = state[0]
        if version != _FORMAT:
            raise ValueError(f"graph format {version}, expected {_FORMAT}")
        _, dim, metric, params, index, ef_floor, unfiltered, by_band = state
        graph = cls.__new__(cls)
        graph.dim, graph.metric, graph.params = dim, Metric(metric), params
        graph.members = BitMap.deserialize(members)
        graph.tombstones = BitMap.deserialize(tombstones)
        graph.pending = BitMap()
        graph.touched = BitMap()
        graph.ef_floor, graph.recall, graph.recall_by_band = ef_floor, unfiltered, by_band
        graph.checked_size = len(graph.members)
        graph._gate = _Gate()
        graph._index = index
        return graph
