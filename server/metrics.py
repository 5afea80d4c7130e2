"""Prometheus metrics: every family Shoal exports, on a registry the app owns.

Two kinds of figures:
- events, counted as the server works: HTTP requests (the API middleware calls
  `http_request`), queries and writes (each Collection calls its `Observer`), WAL syncs (the
  Store's `on_sync` callback);
- state, read from the Database when Prometheus scrapes (`DatabaseCollector`): points,
  tenants and index bytes by collection, readiness, recovery time, RocksDB sizes. Writes pay
  nothing for these.

Labels are bounded: method, route template, status, strategy, collection, operation, index;
never a tenant or a point id (a tenant label would make one series per tenant).
Each app builds its own `Metrics` (no global registry), so tests can run many apps in one process.

With read workers (one writer and N reader processes), each process builds
`Metrics(multiprocess_dir=...)` over one shared directory: its counters and histograms live in
prometheus_client's mmap files there, and the writer's scrape sums every process's files; the
state gauges and the process/platform figures stay the writer's own. The directory must be empty
when the server starts (the files outlive their processes: that is how a dead reader's counts stay
in the sums).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import values as prometheus_values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from server.errors import NotReady

if TYPE_CHECKING:
    from server.database import Database

# The exposition format /metrics serves (prometheus_client's own default moved to 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_SYNC_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# RocksDB property -> (metric name, help); summed over column families by Store.property_int.
ROCKSDB_PROPERTIES = {
    "rocksdb.estimate-live-data-size": (
        "shoal_rocksdb_live_data_bytes",
        "Estimated live data in RocksDB (rocksdb.estimate-live-data-size).",
    ),
    "rocksdb.total-sst-files-size": (
        "shoal_rocksdb_sst_files_bytes",
        "Size of all RocksDB SST files, obsolete ones included (rocksdb.total-sst-files-size).",
    ),
    "rocksdb.cur-size-all-mem-tables": (
        "shoal_rocksdb_memtable_bytes",
        "Memory of RocksDB memtables, active and unflushed (rocksdb.cur-size-all-mem-tables).",
    ),
    "rocksdb.estimate-pending-compaction-bytes": (
        "shoal_rocksdb_pending_compaction_bytes",
        "Bytes RocksDB estimates compaction must rewrite "
        "(rocksdb.estimate-pending-compaction-bytes).",
    ),
}


class Observer:
    """What the server reports as it works; this base records nothing (tools, benchmarks)."""

    def queries(self, collection: str, strategy: str, seconds: float, count: int) -> None:
        """`count` query vectors answered by `strategy` in `seconds` altogether."""

    def write(self, collection: str, operation: str, points: int | None = None) -> None:
        """One acknowledged write; `points` is an upsert's batch size."""

    def synced(self, seconds: float, writes: int) -> None:
        """One WAL sync that made `writes` appended writes durable (group commit)."""

    def collection_dropped(self, collection: str) -> None:
        """Forget the collection's series, so deleted collections do not pile up."""


class Metrics(Observer):
    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        """`multiprocess_dir`: the directory the processes of one server share (read workers);
        None (one process) keeps every figure in this process's memory."""
        self.multiprocess_dir = multiprocess_dir
        self._database: Database | None = None
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        registry: CollectorRegistry | None = self.registry
        if multiprocess_dir is not None:
            # The scrape reads this process's events from the files like every other process's:
            # registering them here as well would count them twice.
            registry = None
            self.registry.register(_AllProcesses(multiprocess_dir, self._live_collections))
        backing = _Backing(multiprocess_dir)
        self.http_requests = _Counter(
            "shoal_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
            backing=backing,
        )
        self.http_duration = _Histogram(
            "shoal_http_request_duration_seconds",
            "HTTP request latency, from the request to the last byte of the response.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
            backing=backing,
        )
        self.queries_total = _Counter(
            "shoal_queries",
            "Query vectors answered, by collection and plan strategy (`fallback`: an "
            "approximate plan came back short and an exact scan answered).",
            ["collection", "strategy"],
            registry=registry,
            backing=backing,
        )
        self.query_duration = _Histogram(
            "shoal_query_duration_seconds",
            "Time per query vector (validate, search, fetch), by plan strategy; an exact batch "
            "shares its time among its vectors.",
            ["strategy"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
            backing=backing,
        )
        self.writes = _Counter(
            "shoal_writes",
            "Acknowledged writes by collection and operation.",
            ["collection", "operation"],
            registry=registry,
            backing=backing,
        )
        self.write_batch = _Histogram(
            "shoal_write_batch_points",
            "Points per upsert request.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
            backing=backing,
        )
        self.wal_sync = _Histogram(
            "shoal_wal_sync_duration_seconds",
            "Duration of one WAL sync (durability=fsync).",
            buckets=_SYNC_BUCKETS,
            registry=registry,
            backing=backing,
        )
        self.group_commit = _Histogram(
            "shoal_group_commit_writes",
            "Writes made durable by one WAL sync (group commit).",
            buckets=_GROUP_BUCKETS,
            registry=registry,
            backing=backing,
        )
        # Labelled children by (metric, labels): `labels()` builds and locks a lookup each
        # time, a few microseconds that every request paid four times.
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self._children_lock = threading.Lock()  # a miss never races a collection's removal

    def _child(self, metric: _Counter | _Histogram, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            with self._children_lock:
                child = self._children[key] = metric.labels(*labels)
        return child

    def watch(self, database: Database) -> None:
        """Export the database's state figures at every scrape."""
        self._database = database
        self.registry.register(DatabaseCollector(database))

    def _live_collections(self) -> set[str] | None:
        """The watched database's collections; None when unknown (not watched, recovering)."""
        if self._database is None:
            return None
        try:
            return {collection.name for collection in self._database.collections()}
        except NotReady:
            return None

    def exposition(self) -> bytes:
        return generate_latest(_WithoutCreated(self.registry))

    # -- events -------------------------------------------------------------------------

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "other"
        self._child(self.http_requests, method, route, str(status)).inc()
        self._child(self.http_duration, method, route).observe(seconds)

    def queries(self, collection: str, strategy: str, seconds: float, count: int) -> None:
        if count <= 0:
            return
        self._child(self.queries_total, collection, strategy).inc(count)
        histogram = self._child(self.query_duration, strategy)
        for _ in range(count):
            histogram.observe(seconds / count)

    def write(self, collection: str, operation: str, points: int | None = None) -> None:
        self._child(self.writes, collection, operation).inc()
        if points is not None:
            self.write_batch.observe(points)

    def synced(self, seconds: float, writes: int) -> None:
        self.wal_sync.observe(seconds)
        self.group_commit.observe(writes)

    def collection_dropped(self, collection: str) -> None:
        """Forget the collection's series, so deleted collections do not pile up.

        In multiprocess mode nothing can be forgotten: prometheus_client's files have no removal,
        and every process that counted the collection (readers too) keeps its values there until
        the server restarts. The scrape hides them instead: it leaves out the series of any
        collection the watched database no longer has (see `_AllProcesses`). A collection created
        again under the name resumes from the old totals, so no counter goes backwards. Dropping
        the children here would free nothing (prometheus_client keeps every file-backed value)
        and only earn its "removal not implemented in multi-process mode" warning.
        """
        if self.multiprocess_dir is not None:
            return
        with self._children_lock:  # the removed series must not live on in the cache
            self.queries_total.remove_by_labels({"collection": collection})
            self.writes.remove_by_labels({"collection": collection})
            self._children.clear()


# Serialises swapping prometheus_client's process-wide `values.ValueClass` (see `_Backing`).
_VALUE_CLASS_LOCK = threading.Lock()
# Numbers this process's file-backed Metrics, so two of them never share a file.
_FILE_SETS = itertools.count()
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _Backing:
    """Where one Metrics' series keep their values: in memory (prometheus_client's MutexValue),
    or in mmap files in a multiprocess directory (its MultiProcessValue).

    prometheus_client has no per-metric choice: a series reads the module global
    `values.ValueClass`, fixed at import from PROMETHEUS_MULTIPROC_DIR, and it does so when the
    series is built, which for a labelled metric is its first `labels()` call (a request, long
    after `Metrics()`), not when the metric is constructed. So `_Counter`/`_Histogram` build every
    series under `building()`, which swaps the global to this backing's class under a lock and puts
    it back: a Metrics with a directory cannot leak file-backed values into one without, and one
    without is in memory even in a process that had PROMETHEUS_MULTIPROC_DIR at import. Shoal
    builds no other prometheus_client metric, so no series is built outside the lock.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.value_class: type
        if directory is None:
            self.value_class = prometheus_values.MutexValue
        else:
            # One file set per Metrics, named `<type>_<pid>-<n>.db`: MultiProcessValue's default
            # identifier, the pid, would have two Metrics of one process (two apps in a test, an
            # app rebuilt) append to the same file through two maps and corrupt it. Still read at
            # every write, so a forked child opens files of its own.
            number = next(_FILE_SETS)
            self.value_class = prometheus_values.MultiProcessValue(
                lambda: f"{os.getpid()}-{number}"
            )

    @contextmanager
    def building(self) -> Iterator[None]:
        with _VALUE_CLASS_LOCK:
            if self.directory is not None:
                # MultiProcessValue takes its directory from this variable, read when it opens a
                # file: at the first series of each type (a request's, not necessarily now) and
                # again in a forked child. It is process-wide and left set because the files are
                # opened lazily; the value is set at every build so that, should one process hold
                # Metrics over different directories (tests), each opens its files in its own.
                # Left set, it also makes prometheus_client's multiprocess warnings accurate.
                os.environ[_MULTIPROC_ENV] = str(self.directory)
            saved = prometheus_values.ValueClass
            prometheus_values.ValueClass = self.value_class
            try:
                yield
            finally:
                prometheus_values.ValueClass = saved


class _Backed:
    """A metric whose series take their values from the Metrics' `_Backing`."""

    def __init__(self, *args: Any, backing: _Backing, **kwargs: Any) -> None:
        self._backing = backing  # before super(): it builds an unlabelled metric's series
        super().__init__(*args, **kwargs)
        self._kwargs["backing"] = backing  # `labels()` builds children with these

    def _metric_init(self) -> None:
        with self._backing.building():
            super()._metric_init()  # type: ignore[misc]


class _Counter(_Backed, Counter):
    pass


class _Histogram(_Backed, Histogram):
    pass


class _AllProcesses:
    """The counters and histograms of every process sharing the directory, summed by
    prometheus_client's MultiProcessCollector (histogram buckets, sums and counts added per
    series), less the series of collections the database no longer has: files cannot forget a
    dropped collection, so the scrape does (see `Metrics.collection_dropped`)."""

    def __init__(self, directory: Path, live_collections: Callable[[], set[str] | None]):
        if not directory.is_dir():  # prometheus_client would blame PROMETHEUS_MULTIPROC_DIR
            raise ValueError(f"metrics directory {directory} does not exist")
        self._files = MultiProcessCollector(None, path=str(directory))
        self._live_collections = live_collections

    def collect(self) -> Iterator[Metric]:
        # Files first, then the collections: a series exists only once its collection does, so a
        # collection created in between is never hidden; one dropped in between shows once more.
        metrics = list(self._files.collect())
        live = self._live_collections()
        for metric in metrics:
            if live is not None:
                metric.samples = [
                    s
                    for s in metric.samples
                    if "collection" not in s.labels or s.labels["collection"] in live
                ]
            yield metric


def process_exited(multiprocess_dir: Path, pid: int) -> None:
    """Bookkeeping when a process that counted into `multiprocess_dir` has exited (the supervisor
    calls it for each reader), as prometheus_client's `mark_process_dead`.

    That removes only the files of `live*` gauges, which Shoal does not have: the counters and
    histograms of the dead process stay in the files, and so in the sums, by design. Taking them
    out would make the totals go backwards, which Prometheus reads as a counter reset.
    """
    # `_Backing` names a process's files `<type>_<pid>-<n>.db`; prometheus_client's own metrics,
    # in a process that had PROMETHEUS_MULTIPROC_DIR at import, `<type>_<pid>.db`.
    identifiers = {str(pid)}
    for path in multiprocess_dir.glob(f"*_{pid}-*.db"):
        identifiers.add(path.stem.rsplit("_", 1)[1])
    for identifier in identifiers:
        mark_process_dead(identifier, str(multiprocess_dir))


class _WithoutCreated:
    """The registry less the `_created` sample of each counter and histogram: in the text format
    Prometheus stores them as gauges of their own, a third more series for nothing we chart."""

    def __init__(self, registry: CollectorRegistry):
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            if metric.type in ("counter", "histogram"):
                metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


class DatabaseCollector:
    """Gauges read from the Database at scrape time."""

    def __init__(self, database: Database):
        self._database = database

    def collect(self) -> Iterator[Metric]:
        database = self._database
        ready = GaugeMetricFamily(
            "shoal_ready", "1 once recovery has finished and requests are served (as /readyz)."
        )
        ready.add_metric([], 1.0 if database.ready else 0.0)
        yield ready
        recovery = GaugeMetricFamily(
            "shoal_recovery_duration_seconds",
            "How long the last start-up took to open the store and rebuild every collection.",
        )
        if database.recovery_seconds is not None:
            recovery.add_metric([], database.recovery_seconds)
        yield recovery
        yield from self._collections()
        yield from self._rocksdb()

    def _collections(self) -> Iterator[Metric]:
        points = GaugeMetricFamily(
            "shoal_points", "Points stored, by collection.", labels=["collection"]
        )
        tenants = GaugeMetricFamily(
            "shoal_tenants", "Tenants, by collection.", labels=["collection"]
        )
        memory = GaugeMetricFamily(
            "shoal_index_memory_bytes",
            "In-memory index bytes by collection and index "
            "(vectors: the vector arena; curator: the Curator index beyond it; graphs: HNSW "
            "graphs; attributes: the attribute index).",
            labels=["collection", "index"],
        )
        trained = GaugeMetricFamily(
            "shoal_curator_trained",
            "1 if the collection's Curator index is trained (big tenants' queries use it).",
            labels=["collection"],
        )
        try:
            collections = self._database.collections() if self._database.ready else []
        except NotReady:
            collections = []
        for collection in collections:
            with collection.read_lock():
                name = collection.name
                curator = collection.curator.curator
                points.add_metric([name], collection.arena.count)
                tenants.add_metric([name], len(collection.tenants.number_of))
                memory.add_metric([name, "vectors"], collection.arena.memory_bytes)
                if curator is not None:
                    memory.add_metric([name, "curator"], curator.memory_bytes())
                memory.add_metric([name, "graphs"], collection.graphs.memory_bytes())
                memory.add_metric([name, "attributes"], collection.attributes.memory_bytes())
                trained.add_metric([name], 0.0 if curator is None else 1.0)
        yield from (points, tenants, memory, trained)

    def _rocksdb(self) -> Iterator[Metric]:
        try:
            store = self._database.store
        except NotReady:
            store = None
        for property_name, (name, help_text) in ROCKSDB_PROPERTIES.items():
            family = GaugeMetricFamily(name, help_text)
            if store is not None:
                family.add_metric([], store.property_int(property_name))
            yield family
