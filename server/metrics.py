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
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

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
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        registry = self.registry
        self.http_requests = Counter(
            "shoal_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "shoal_http_request_duration_seconds",
            "HTTP request latency, from the request to the last byte of the response.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.queries_total = Counter(
            "shoal_queries",
            "Query vectors answered, by collection and plan strategy (`fallback`: an "
            "approximate plan came back short and an exact scan answered).",
            ["collection", "strategy"],
            registry=registry,
        )
        self.query_duration = Histogram(
            "shoal_query_duration_seconds",
            "Time per query vector (validate, search, fetch), by plan strategy; an exact batch "
            "shares its time among its vectors.",
            ["strategy"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.writes = Counter(
            "shoal_writes",
            "Acknowledged writes by collection and operation.",
            ["collection", "operation"],
            registry=registry,
        )
        self.write_batch = Histogram(
            "shoal_write_batch_points",
            "Points per upsert request.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.wal_sync = Histogram(
            "shoal_wal_sync_duration_seconds",
            "Duration of one WAL sync (durability=fsync).",
            buckets=_SYNC_BUCKETS,
            registry=registry,
        )
        self.group_commit = Histogram(
            "shoal_group_commit_writes",
            "Writes made durable by one WAL sync (group commit).",
            buckets=_GROUP_BUCKETS,
            registry=registry,
        )
        # Labelled children by (metric, labels): `labels()` builds and locks a lookup each
        # time, a few microseconds that every request paid four times.
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self._children_lock = threading.Lock()  # a miss never races a collection's removal

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            with self._children_lock:
                child = self._children[key] = metric.labels(*labels)
        return child

    def watch(self, database: Database) -> None:
        """Export the database's state figures at every scrape."""
        self.registry.register(DatabaseCollector(database))

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
        with self._children_lock:  # the removed series must not live on in the cache
            self.queries_total.remove_by_labels({"collection": collection})
            self.writes.remove_by_labels({"collection": collection})
            self._children.clear()


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
