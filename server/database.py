"""The Database: the store, the collections in it, and recovery on open.

Lifecycle: `open()` opens RocksDB and rebuilds every collection's indexes (a scan per column
family); until it returns, every call raises `NotReady`. `close()` syncs and closes the store.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from index.arena import Metric
from server import validation
from server.collection import Collection
from server.errors import Conflict, Invalid, NotFound, NotReady
from server.metrics import Observer
from server.model import CollectionConfig, IndexSettings, Limits
from server.settings import Settings
from storage import keys
from storage.store import Batch, Store

log = logging.getLogger("shoal.database")


class Database:
    def __init__(self, settings: Settings, observer: Observer | None = None):
        self.settings = settings
        self.observer = observer or Observer()  # metrics: queries, writes, WAL syncs
        self.limits = Limits(
            settings.max_batch_points, settings.max_attributes_bytes, settings.max_delete_points
        )
        self._store: Store | None = None
        self._collections: dict[str, Collection] = {}
        self._ddl_lock = threading.Lock()  # create/delete collection
        self._ready = threading.Event()
        self.failure: BaseException | None = None
        self.recovery_seconds: float | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        started = time.perf_counter()
        try:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            store = Store(
                str(self.settings.data_dir), self.settings.durability, self.observer.synced
            )
            self._store = store
            for _, value in store.scan(keys.CF_META, keys.COLLECTION_PREFIX):
                config = CollectionConfig.from_json(value)
                collection = Collection(
                    config, store, self.limits, self.observer, self._graph_dir(config.cid)
                )
                collection.load()
                self._collections[config.name] = collection
        except BaseException as exc:
            self.failure = exc
            raise
        self.recovery_seconds = time.perf_counter() - started
        points = sum(c.arena.count for c in self._collections.values())
        log.info(
            "recovered %d collections, %d points in %.2f s",
            len(self._collections),
            points,
            self.recovery_seconds,
        )
        self._ready.set()

    def _graph_dir(self, cid: int) -> Path:
        """HNSW graph snapshots live beside RocksDB's files, one directory per collection."""
        return self.settings.data_dir / "graphs" / f"c{cid}"

    def extend_schema(self, name: str, fields: dict[str, Any]) -> CollectionConfig:
        return self.collection(name).extend_schema(validation.schema(fields))

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def close(self) -> None:
        self._ready.clear()
        if self._store is not None:
            # Writers hold their collection's mutex from append to apply; take them all so no
            # batch is half-applied in memory when the store goes away.
            for collection in list(self._collections.values()):
                collection.close()
            self._store.close()
            self._store = None

    @property
    def store(self) -> Store:
        if not self._ready.is_set() or self._store is None:
            raise NotReady("the server is still recovering; retry shortly")
        return self._store

    # -- collections --------------------------------------------------------------------

    def collection(self, name: str) -> Collection:
        self.store  # noqa: B018 - raises NotReady during recovery
        collection = self._collections.get(name)
        if collection is None:
            raise NotFound(f"collection {name!r} not found")
        return collection

    def collections(self) -> list[Collection]:
        self.store  # noqa: B018
        return sorted(self._collections.values(), key=lambda c: c.name)

    def create_collection(
        self,
        name: str,
        dim: int,
        metric: str,
        schema: dict[str, Any] | None = None,
        index: dict[str, Any] | None = None,
    ) -> CollectionConfig:
        validation.collection_name(name)
        validation.dimension(dim)
        try:
            metric_value = Metric(metric)
        except ValueError:
            raise Invalid("metric", f"unknown metric {metric!r}; use cosine, l2 or ip") from None
        fields = validation.schema(schema or {})
        index_settings = IndexSettings(**validation.index_settings(index or {}))
        store = self.store
        with self._ddl_lock:
            if name in self._collections:
                raise Conflict(f"collection {name!r} already exists")
            raw = store.get(keys.CF_META, keys.NEXT_COLLECTION_ID)
            cid = 1 if raw is None else int.from_bytes(raw, "big")
            config = CollectionConfig(name, cid, dim, metric_value, fields, index=index_settings)
            batch = Batch()
            batch.put(keys.CF_META, keys.collection_key(name), config.to_json())
            batch.put(keys.CF_META, keys.NEXT_COLLECTION_ID, keys.u32(cid + 1))
            store.write(batch)
            self._collections[name] = Collection(
                config, store, self.limits, self.observer, self._graph_dir(cid)
            )
        log.info("created collection %s", config.to_json().decode())
        return config

    def delete_collection(self, name: str) -> None:
        with self._ddl_lock:
            collection = self.collection(name)
            collection.drop()
            del self._collections[name]
        self.observer.collection_dropped(name)
        log.info("deleted collection %s", name)
