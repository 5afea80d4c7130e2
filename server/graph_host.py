"""A collection's HNSW graphs: the shared one and those of large tenants, kept in step in the
background, persisted with a sequence number and replayed from the oplog on restart.

Why asynchronous: an hnswlib insert costs about 0.5-1 ms at 384 dimensions, which the write
path cannot afford (a 500-point upsert would hold the write lock for a quarter second). So a
write only marks the labels it changed as *pending* in each graph concerned (O(1) under the
collection's write lock); one indexer thread per collection applies pending labels in small
chunks, holding the collection's read lock (so vectors and pending sets are stable) and the
graph's own gate. A search never trusts a graph about a pending label: it drops pending labels
from the graph's answer and scans pending candidates exactly (`server.search`), so answers are
always current; the planner counts pending labels into the graph's cost.

Order that keeps that true: a search copies `pending` before it searches the graph, and the
indexer removes a chunk from `pending` only after the graph holds it. The indexer copies a
chunk's rows under the read lock and inserts them after releasing it, so writers never wait
for hnswlib; a label a writer marks again meanwhile (`touched`) stays pending.

Graphs: the shared graph once the collection has `shared_graph_min_points`; a tenant graph
once a tenant reads `tenant_graph_min_points` (dropped below half of that). Builds run on the
indexer thread from a copy of the rows, while writers record what changed meanwhile; the new
graph is swapped in with those changes as its pending set. A graph whose tombstones pass
`graph_rebuild_tombstones` is rebuilt the same way.

Persistence: a snapshot is the pickled graph, its pending set and `seq`, the last oplog
sequence number applied when it was taken (`server.graph_files`). Recovery loads it and marks
pending every label of the oplog records after `seq`; without a usable snapshot the graph is
rebuilt. Oplog records older than every snapshot are trimmed.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pyroaring import BitMap

from index import recall
from index.hnsw import GraphParams, HnswGraph
from index.tenants import bitmap_labels
from server import graph_files
from server.changes import Change
from server.errors import NotFound
from storage import keys
from storage.store import Batch

if TYPE_CHECKING:
    from server.collection import Collection

log = logging.getLogger("shoal.graphs")

SHARED = "shared"
GraphKey = str | int  # SHARED or a tenant number
_CHUNK = 32  # labels per insert: searches of that graph wait for it (about 20 ms at most)
_BUILD_CHUNK = 2048  # rows per add_items call during a build (a stop request waits one)
_SNAPSHOT_AFTER = 20_000  # labels applied since the last snapshot that call for a new one
_CURATOR_EF_MULTIPLES = (1, 2, 4)
_CURATOR_CHECK_TARGET = 0.96  # the effort chosen must clear the target by a sampling margin
_TRIM_EVERY = 256  # oplog records: trimming is a synced write, so not after every write


class GraphHost:
    def __init__(self, collection: Collection, directory: Path | None):
        self._collection = collection
        self._directory = directory  # None: graphs are never persisted (tests, in-memory)
        # A read worker loads the writer's snapshots and keeps its graphs in step in memory;
        # only the writer writes, replaces or deletes graph files and trims the oplog.
        self._follower = collection.follower
        self._owns_files = directory is not None and not collection.follower
        self.graphs: dict[GraphKey, HnswGraph] = {}
        self._building: dict[GraphKey, BitMap] = {}  # changes recorded while a build runs
        self._snapshot_seq: dict[GraphKey, int] = {}  # persisted snapshot -> its seq
        self._applied_since_snapshot: dict[GraphKey, int] = {}
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self.builds = 0
        # tenant -> band -> (the least ef that keeps the Curator's recall there, that recall)
        self.curator_checks: dict[int, dict[float, tuple[int, float]]] = {}
        self._tenants_checked = 0.0
        self._rebuild_due: set[GraphKey] = set()  # grown, with too few queries from outside

    @property
    def settings(self):  # type: ignore[no-untyped-def]
        return self._collection.config.index

    def _params(self) -> GraphParams:
        return GraphParams(self.settings.hnsw_m, self.settings.hnsw_ef_construction)

    # -- what searches see -----------------------------------------------------------------

    def shared(self) -> HnswGraph | None:
        return self.graphs.get(SHARED)

    def tenant(self, number: int) -> HnswGraph | None:
        return self.graphs.get(number)

    # -- keeping in step (called under the collection's write lock) -------------------------

    def vectors_changed(self, labels: list[int], readers: list[list[int]]) -> None:
        """Labels upserted or deleted; `readers` are, per label, the tenants that could read
        it before or after the change."""
        if not self.graphs and not self._building:
            return
        self._mark(SHARED, labels)
        for label, label_readers in zip(labels, readers, strict=True):
            for reader in label_readers:
                self._mark(reader, (label,))
        self._wake.set()

    def readers_changed(self, label: int, tenant: int) -> None:
        """`tenant` was granted or revoked `label`."""
        if tenant in self.graphs or tenant in self._building:
            self._mark(tenant, (label,))
            self._wake.set()

    def tenant_deleted(self, number: int) -> None:
        self.graphs.pop(number, None)
        self.curator_checks.pop(number, None)
        self._building.pop(number, None)
        self._snapshot_seq.pop(number, None)
        if self._owns_files:
            graph_files.remove(self._path(number))

    def _mark(self, key: GraphKey, labels: list[int] | tuple[int, ...]) -> None:
        graph = self.graphs.get(key)
        if graph is not None:
            graph.pending.update(labels)
            graph.touched.update(labels)
        changes = self._building.get(key)
        if changes is not None:
            changes.update(labels)

    # -- recovery ------------------------------------------------------------------------

    def load(self, oplog: list[tuple[int, list[int], list[int]]]) -> None:
        """Restore persisted graphs; `oplog` is every (seq, vector labels, reader labels)
        record of the collection in order. Caller holds no lock; nothing runs concurrently."""
        collection = self._collection
        tenants = collection.tenants
        if self._directory is not None:
            for key, path in self._persisted():
                if key != SHARED and key not in tenants.name_of:
                    if self._owns_files:
                        graph_files.remove(path)
                    continue
                snapshot = graph_files.load(path)
                if snapshot is None:
                    log.warning(
                        "collection %s: graph file %s unusable; rebuilding", collection.name, path
                    )
                    continue
                seq, payload, pending = snapshot
                newest = oplog[-1][0] if oplog else 0
                if (oplog and seq < oplog[0][0] - 1) or seq > newest:
                    # Records it lacks were trimmed, or it is newer than the store (restored
                    # from another moment): replay cannot bridge either gap.
                    log.warning(
                        "collection %s: graph %s at seq %d does not match the oplog (%s); "
                        "rebuilding",
                        collection.name,
                        key,
                        seq,
                        f"{oplog[0][0]}..{newest}" if oplog else "empty",
                    )
                    continue
                try:
                    graph = HnswGraph.from_bytes(payload)
                except Exception:  # another format or dimension: an upgrade, a stray file
                    log.warning(
                        "collection %s: graph file %s unreadable; rebuilding", collection.name, path
                    )
                    continue
                graph.pending = pending
                for record_seq, vector_labels, reader_labels in oplog:
                    if record_seq > seq:
                        graph.pending.update(vector_labels)
                        if key != SHARED:
                            graph.pending.update(reader_labels)
                self.graphs[key] = graph
                self._snapshot_seq[key] = seq
        self.start()

    def follow_snapshot(self, name: str, seq: int) -> None:
        """A follower: the writer built graph `name` (`shared` or a tenant number) and saved
        it holding the oplog up to `seq`; load it, with the labels of later oplog records
        pending, in place of the one held.

        Only that very snapshot: a file saved since could hold points of records this
        follower has not applied yet (the record announcing it follows anyway). Every oplog
        record up to `seq` belongs to a write whose change record came before this one, so
        the graph never holds a point the follower's memory does not."""
        if self._directory is None:
            return
        key: GraphKey = SHARED if name == SHARED else int(name)
        collection = self._collection
        snapshot = graph_files.load(self._path(key))
        if snapshot is None or snapshot[0] != seq:
            return  # replaced (or removed) since: a later record announces the newer one
        _, payload, pending = snapshot
        cid = collection.config.cid
        start = keys.oplog_key(cid, seq + 1)
        for _, value in collection.store.scan(keys.CF_OPLOG, keys.u32(cid), start=start):
            vector_labels, reader_labels = keys.decode_oplog(value)
            pending.update(vector_labels)
            if key != SHARED:
                pending.update(reader_labels)
        try:
            graph = HnswGraph.from_bytes(payload)
        except Exception:
            log.warning("collection %s: graph %s snapshot unusable", collection.name, key)
            return
        graph.pending = pending
        with collection.write_lock():
            if key != SHARED and key not in collection.tenants.name_of:
                return  # the tenant was deleted since
            self.graphs[key] = graph
        self._wake.set()

    def _persisted(self) -> list[tuple[GraphKey, Path]]:
        assert self._directory is not None
        found: list[tuple[GraphKey, Path]] = []
        for path in sorted(self._directory.glob("*.graph")):
            stem = path.stem
            if stem == SHARED:
                found.append((SHARED, path))
            elif stem.startswith("t") and stem[1:].isdigit():
                found.append((int(stem[1:]), path))
        return found

    def _path(self, key: GraphKey) -> Path:
        assert self._directory is not None
        return self._directory / (f"{SHARED}.graph" if key == SHARED else f"t{key}.graph")

    # -- the indexer thread ----------------------------------------------------------------

    def start(self) -> None:
        with self._thread_lock:
            if self._thread is None and not self._stopped.is_set():
                name = f"graphs-{self._collection.name}"
                self._thread = threading.Thread(target=self._run, name=name, daemon=True)
                self._thread.start()
        self._wake.set()

    def poke(self) -> None:
        """After a write: let the indexer look for work (pending labels, due builds)."""
        if self._thread is None:
            self.start()
        self._wake.set()

    def stop(self, persist: bool) -> None:
        self._stopped.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join()
        if persist:
            for key in list(self.graphs):
                if self._applied_since_snapshot.get(key, 0) or key not in self._snapshot_seq:
                    self._snapshot(key)

    def remove_files(self) -> None:
        if self._owns_files:
            graph_files.remove_directory(self._directory)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no build is due or running and nothing is pending (tests, benches)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._collection.read_lock():
                idle = (
                    not self._building
                    and not self._due(force=True)
                    and not any(g.pending for g in self.graphs.values())
                    and not any(self._needs_recheck(k, g) for k, g in self.graphs.items())
                )
            if idle:
                return True
            self._wake.set()
            time.sleep(0.02)
        return False

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(timeout=2.0)
            self._wake.clear()
            try:
                self._drain()
                self._recheck_grown()
                key = self._due()  # never a key on a follower: it takes the writer's builds
                if key is not None and not self._stopped.is_set():
                    self._build(key)
                    self._wake.set()
                self._snapshot_if_due()
            except NotFound:
                return  # the collection was dropped
            except Exception:
                log.exception("collection %s: graph upkeep failed", self._collection.name)
                time.sleep(1.0)

    def _drain(self) -> None:
        """Apply every pending label to its graph, a chunk at a time.

        The rows are copied under the read lock and inserted after it is released (writers
        never wait for hnswlib); a label a writer touched meanwhile stays pending."""
        collection = self._collection
        for key in list(self.graphs):
            while not self._stopped.is_set():
                with collection.read_lock():
                    graph = self.graphs.get(key)
                    if graph is None or not graph.pending:
                        break
                    graph.touched = BitMap()
                    chunk = BitMap(itertools.islice(graph.pending, _CHUNK))
                    labels = np.asarray(chunk.to_array(), dtype=np.int64)
                    keep = np.fromiter(
                        (self._is_member(key, label) for label in labels.tolist()), bool
                    )
                    rows = collection.arena.rows(labels[keep])
                graph.add(labels[keep], rows)
                graph.remove(labels[~keep])
                with collection.read_lock():
                    # A new object, not an in-place update: see the module doc.
                    graph.pending = graph.pending - (chunk - graph.touched)
                applied = self._applied_since_snapshot.get(key, 0)
                self._applied_since_snapshot[key] = applied + len(chunk)

    def _recheck_grown(self) -> None:
        """Re-run a graph's recall self-check once it has doubled since the last one (the
        shared graph is built at its threshold and grows by upkeep: recall falls as it grows).
        A check's queries are never members of the graph it checks (a member query finds its
        own node, whose links lead straight to its neighbours: the shared graph measured 0.97
        on members and 0.92-0.94 on fresh queries); a graph with too few points outside it
        to query from (the shared graph, a tenant reading most of the collection) is rebuilt
        instead, with the check's queries held out of the build."""
        collection = self._collection
        for key, graph in list(self.graphs.items()):
            if graph.pending or key in self._rebuild_due or not self._needs_recheck(key, graph):
                continue
            grown = _grown(graph)
            with collection.read_lock():
                labels = bitmap_labels(graph.members)
                vectors = collection.arena.rows(labels)
                queries = self._sample_queries()
                outside = ~np.isin(queries[0], labels)
            if grown and outside.sum() < len(outside) / 2:
                self._rebuild_due.add(key)
                continue
            if grown:
                fresh = (queries[0][outside], queries[1][outside])
                graph.calibrate(labels, vectors, self.settings.ef, queries=fresh)
            self._check_curator(key, labels, vectors, queries)
            log.info(
                "collection %s: graph %s rechecked at %d points: recall@10 %.3f at ef %d",
                collection.name,
                key,
                len(labels),
                graph.recall,
                graph.ef_floor,
            )
            if self._stopped.is_set():
                return

    def _needs_recheck(self, key: GraphKey, graph: HnswGraph) -> bool:
        return _grown(graph) or self._curator_unchecked(key)

    def _curator_unchecked(self, key: GraphKey) -> bool:
        """A tenant graph whose Curator recall is not measured yet (after a restart, or the
        Curator trained after the graph was built)."""
        trained = self._collection.curator.curator is not None
        return key != SHARED and trained and key not in self.curator_checks

    def _sample_queries(self) -> tuple[np.ndarray, np.ndarray]:
        """Recall-check queries: points of the whole collection, as a tenant's queries come
        from anywhere (caller holds the read lock)."""
        live = self._collection.arena.live_labels()
        rng = np.random.default_rng(len(live))
        chosen = np.sort(rng.choice(live, size=min(recall.SAMPLES, len(live)), replace=False))
        return chosen, self._collection.arena.rows(chosen)

    def _check_curator(
        self,
        key: GraphKey,
        labels: np.ndarray,
        vectors: np.ndarray,
        queries: tuple[np.ndarray, np.ndarray],
    ) -> None:
        """For a tenant with a graph, measure the Curator's recall on it by selectivity band
        (`index.recall`): big tenants are where its patience stop can cap recall. Per band,
        the least of `ef` x 1, 2, 4 that reaches 0.96 (a margin for the sample) is the effort
        the planner gives it there (more effort costs little: distances grow like ef**0.25);
        a band that no multiple brings to the target keeps the Curator out of its queries."""
        collection = self._collection
        curator = collection.curator.curator
        if key == SHARED or curator is None:
            return
        check = recall.prepare(labels, vectors, collection.config.metric, 10, 7, *queries)
        ef = self.settings.ef
        if check is None:  # small: exact-like
            self.curator_checks[key] = {band: (ef, 1.0) for band in recall.BANDS}
            return
        settings = self.settings
        chosen: dict[float, tuple[int, float]] = {}
        padded: dict[float, np.ndarray] = {}

        def allowed_at(band: float) -> np.ndarray | None:
            """The band's mask over the arena as it is now (caller holds the read lock)."""
            if band >= 1.0:
                return None
            capacity = len(collection.arena.norms_sq)
            full = padded.get(band)
            if full is None or len(full) != capacity:
                mask = check.masks[band]
                full = padded[band] = np.zeros(capacity, dtype=np.bool_)
                full[: len(mask)] = mask[:capacity]
            return full

        for multiple in _CURATOR_EF_MULTIPLES:
            effort = ef * multiple

            def answer(i: int, band: float, _: np.ndarray, effort: int = effort) -> np.ndarray:
                # The lock per query, not per check: a check is up to 1,920 searches, and a
                # writer waiting for the lock would hold every new reader back meanwhile.
                with collection.read_lock():  # the search reads arena rows in place
                    top, _stats = curator.search(
                        check.queries[i],
                        key,
                        11,
                        effort,
                        allowed=allowed_at(band),
                        patience=settings.patience,
                    )
                return top.labels

            bands = tuple(b for b in recall.BANDS if b not in chosen)
            for band, measured in recall.measure(check, answer, bands=bands).items():
                if measured >= _CURATOR_CHECK_TARGET or multiple == _CURATOR_EF_MULTIPLES[-1]:
                    chosen[band] = (effort, measured)
            if len(chosen) == len(recall.BANDS):
                break
        self.curator_checks[key] = chosen

    def curator_effort(self, tenant: int, selectivity: float) -> tuple[int, bool]:
        """The ef the Curator needs on `tenant` at `selectivity`, and whether it keeps recall
        there: (0, True) for tenants without a graph (not checked: trusted at the query's ef)."""
        checks = self.curator_checks.get(tenant)
        if checks is None:
            return 0, True
        effort, measured = checks[recall.band_of(selectivity)]
        return effort, measured >= recall.TARGET

    def _members(self, key: GraphKey) -> np.ndarray:
        """The labels graph `key` should hold now; caller holds the read lock."""
        collection = self._collection
        if key == SHARED:
            return collection.arena.live_labels()
        return bitmap_labels(collection.tenants.readable[key])

    def _is_member(self, key: GraphKey, label: int) -> bool:
        collection = self._collection
        if key == SHARED:
            return collection.arena.is_live(label)
        readable = collection.tenants.readable.get(key)
        return readable is not None and label in readable

    def _due(self, force: bool = False) -> GraphKey | None:
        """The graph to build next; on the indexer thread (not `force`), also demote tenants
        that shrank on the way."""
        collection = self._collection
        settings = self.settings
        shared = self.graphs.get(SHARED)
        if self._follower:
            # Builds are the writer's (a follower takes them, `follow_snapshot`); demoting a
            # tenant that shrank follows the writer's rule, so the planners agree.
            self._rebuild_due.clear()
            if not force and time.monotonic() - self._tenants_checked >= 1.0:
                self._tenants_checked = time.monotonic()
                for number, readable in list(collection.tenants.readable.items()):
                    if number in self.graphs and self._shrunk(len(readable)):
                        self.tenant_deleted(number)
            return None
        for key in list(self._rebuild_due):
            shrunk = key != SHARED and self._shrunk(len(collection.tenants.readable.get(key, ())))
            if key in self.graphs and not shrunk:
                return key
            self._rebuild_due.discard(key)  # demoted, deleted, or due for demotion below
        if shared is None:
            if collection.arena.count >= settings.shared_graph_min_points:
                return SHARED
        elif shared.tombstone_fraction > settings.graph_rebuild_tombstones:
            return SHARED
        if not force and time.monotonic() - self._tenants_checked < 1.0:
            return None  # a scan over every tenant: at most once a second
        if not force:
            self._tenants_checked = time.monotonic()
        threshold = settings.tenant_graph_min_points
        for number, readable in list(collection.tenants.readable.items()):
            graph = self.graphs.get(number)
            if graph is None and len(readable) >= threshold:
                return number
            if graph is not None and self._shrunk(len(readable)):
                if force:
                    return number  # due: the indexer thread demotes it
                self.tenant_deleted(number)  # demoted: the Curator serves it again
                log.info("collection %s: tenant %d demoted from its graph", collection.name, number)
            elif graph is not None and graph.tombstone_fraction > settings.graph_rebuild_tombstones:
                return number
        return None

    def _shrunk(self, readable: int) -> bool:
        """A tenant graph with this many readable points is demoted (the Curator serves it)."""
        return readable < self.settings.tenant_graph_min_points // 2

    def _build(self, key: GraphKey) -> None:
        collection = self._collection
        started = time.perf_counter()
        self._rebuild_due.discard(key)  # if the build fails, the next recheck decides again
        with collection.read_lock():
            labels = self._members(key)
            vectors = collection.arena.rows(labels)
            queries = self._sample_queries()
            self._building[key] = BitMap()
        try:
            graph = HnswGraph(collection.config.dim, collection.config.metric, self._params())
            # The check's queries that are members join the graph only after the check.
            held = np.isin(labels, queries[0])
            kept, kept_vectors = labels[~held], vectors[~held]
            order = np.random.default_rng(len(labels)).permutation(len(kept))
            for start in range(0, len(order), _BUILD_CHUNK):
                if self._stopped.is_set():
                    return
                part = order[start : start + _BUILD_CHUNK]
                graph.add(kept[part], kept_vectors[part])
            graph.calibrate(kept, kept_vectors, self.settings.ef, queries=queries)
            if held.any():
                graph.add(labels[held], vectors[held])
            graph.checked_size = len(labels)
            self._check_curator(key, labels, vectors, queries)
            with collection.read_lock():
                graph.pending = self._building.pop(key)
                if key != SHARED and key not in collection.tenants.name_of:
                    self.curator_checks.pop(key, None)
                    return  # the tenant was deleted meanwhile
                self.graphs[key] = graph
                self._snapshot_seq.pop(key, None)
                self._applied_since_snapshot[key] = 0
        finally:
            self._building.pop(key, None)
        self.builds += 1
        log.info(
            "collection %s: graph %s built over %d points in %.1f s; recall@10 %.3f at ef %d",
            collection.name,
            key,
            len(labels),
            time.perf_counter() - started,
            graph.recall,
            graph.ef_floor,
        )
        self._snapshot(key, announce=True)

    # -- snapshots and the oplog -----------------------------------------------------------

    def _snapshot_if_due(self) -> None:
        for key in list(self.graphs):
            if self._applied_since_snapshot.get(key, 0) >= _SNAPSHOT_AFTER:
                self._snapshot(key)
        self._trim()

    def _snapshot(self, key: GraphKey, announce: bool = False) -> None:
        """Save graph `key`; `announce` (after a build): record it for read workers, which
        load it instead of building their own (between builds they insert what changed)."""
        if not self._owns_files:
            return
        collection = self._collection
        with collection.read_lock():
            graph = self.graphs.get(key)
            if graph is None:
                return
            seq = collection.applied_seq
            pending = BitMap(graph.pending)
        # Outside the lock: only this thread changes a graph's contents, so they are those of
        # `seq` minus `pending` until it applies more. The store is synced first, so a
        # snapshot never holds a write that a power loss could still take back.
        collection.store.sync()
        graph_files.save(self._path(key), seq, graph.to_bytes(), pending)
        self._snapshot_seq[key] = seq
        self._applied_since_snapshot[key] = 0
        if announce and collection.store.records_changes:  # followers load it
            change = Change("graph", collection.name, labels=(seq,), graph=str(key))
            collection.store.write(Batch(change=change.encode()))
        self._trim()

    def _trim(self) -> None:
        """Drop oplog records every persisted graph already holds (all, with no graph)."""
        if self._follower:
            return
        collection = self._collection
        live = [self._snapshot_seq[k] for k in self.graphs if k in self._snapshot_seq]
        unpersisted = any(k not in self._snapshot_seq for k in self.graphs)
        if unpersisted and self._directory is not None:
            return  # a graph awaiting its first snapshot would be rebuilt anyway; keep simple
        upto = min(live) if live else collection.applied_seq
        if upto - 1 - collection.trimmed_seq < _TRIM_EVERY:
            return
        # The record `upto` itself stays: the newest record is never deleted, so a restart
        # always finds the sequence counter (snapshots say which records they hold).
        cid = collection.config.cid
        batch = Batch()
        batch.delete_range(keys.CF_OPLOG, keys.oplog_key(cid, 0), keys.oplog_key(cid, upto))
        collection.store.write(batch)
        collection.trimmed_seq = upto - 1

    # -- figures -------------------------------------------------------------------------

    def memory_bytes(self) -> int:
        return sum(graph.memory_bytes() for graph in list(self.graphs.values()))

    def state(self) -> dict[str, int | float | bool]:
        shared = self.graphs.get(SHARED)
        tenant_graphs = [g for k, g in self.graphs.items() if k != SHARED]
        return {
            "shared_graph": shared is not None,
            "shared_graph_points": len(shared.members) if shared is not None else 0,
            "shared_graph_recall": round(shared.recall, 3) if shared is not None else 0.0,
            "shared_graph_ef_floor": shared.ef_floor if shared is not None else 0,
            "tenant_graphs": len(tenant_graphs),
            "pending": sum(len(g.pending) for g in self.graphs.values()),
            "building": bool(self._building),
            "memory_bytes": self.memory_bytes(),
        }


def _grown(graph: HnswGraph) -> bool:
    """Doubled since its last recall check: recall falls as a graph grows."""
    return len(graph.members) >= 2 * max(graph.checked_size, 1)
