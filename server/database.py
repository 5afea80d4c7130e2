"""The Database: the store, the collections in it, and recovery on open.

Lifecycle: `open()` opens RocksDB and rebuilds every collection's indexes (a scan per column
family); until it returns, every call raises `NotReady`. `close()` syncs and closes the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from index import arena, curator
from index.arena import Metric
from server import audit, validation
from server.apikeys import KeyRecord, KeyStore, Role
from server.auth import Authenticator
from server.changes import Change, collection_changed
from server.collection import Collection
from server.errors import Conflict, Forbidden, Invalid, NotReady, collection_not_found
from server.metrics import Observer
from server.model import CollectionConfig, IndexSettings, Limits
from server.quotas import QuotaBook, Quotas
from server.settings import Settings
from storage import keys
from storage.store import Batch, Store

log = logging.getLogger("shoal.database")

# Keys minted while anyone may call the API would be valid once an admin key is set.
KEYS_NEED_ADMIN = "API keys can be created only when the server has an admin key (SHOAL_ADMIN_KEY)"


class Database:
    def __init__(
        self,
        settings: Settings,
        observer: Observer | None = None,
        *,
        follower_dir: Path | None = None,
        on_change: Callable[[int], None] | None = None,
        trim_floor: Callable[[], int] | None = None,
    ):
        """`follower_dir`: a read worker's Database, a follower of the writer's store (see
        `server.follower`). `on_change(seq)`: the writer of a server with read workers records
        the change feed and publishes each record's number (and, at open, the newest);
        `trim_floor()`: the newest record every worker has applied."""
        self.settings = settings
        self.follower_dir = follower_dir
        self._on_change = on_change
        self._trim_floor = trim_floor
        self.change_seq = 0  # a follower: the last change record its memory holds
        self.observer = observer or Observer()  # metrics: queries, writes, WAL syncs
        self.limits = Limits(
            settings.max_batch_points, settings.max_attributes_bytes, settings.max_delete_points
        )
        self.keys = KeyStore()  # tenant API keys (server/apikeys.py)
        self.authenticator = Authenticator(settings, self.keys)
        self.quotas = QuotaBook(Quotas.from_settings(settings))
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
            _warm_up()
            follower_dir = None if self.follower_dir is None else str(self.follower_dir)
            if follower_dir is None:
                self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            store = Store(
                str(self.settings.data_dir),
                self.settings.durability,
                self.observer.synced,
                follower_dir=follower_dir,
                on_change=self._on_change,
                trim_floor=self._trim_floor,
            )
            self._store = store
            self.change_seq = store.change_seq
            if self._on_change is not None:
                self._on_change(store.change_seq)
            for _, value in store.scan(keys.CF_META, keys.COLLECTION_PREFIX):
                config = CollectionConfig.from_json(value)
                collection = self._collection(config, store)
                collection.load()
                self._collections[config.name] = collection
            self.quotas.load(self._collections.values())
            self.keys.load(store)
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
            raise collection_not_found(name)
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
            batch = Batch(change=collection_changed("create", name))
            batch.put(keys.CF_META, keys.collection_key(name), config.to_json())
            batch.put(keys.CF_META, keys.NEXT_COLLECTION_ID, keys.u32(cid + 1))
            store.write(batch)
            self._collections[name] = self._collection(config, store)
        audit.note(collection=name)
        log.info("created collection %s", config.to_json().decode())
        return config

    def delete_collection(self, name: str) -> None:
        with self._ddl_lock:
            collection = self.collection(name)
            collection.drop()  # its quotas too, in the same batch
            del self._collections[name]
            self.quotas.forget(name)
            # A collection created later under this name is another one: its keys must not
            # open it.
            audit.note(keys_revoked=self.keys.revoke_collection(name))
        self.observer.collection_dropped(name)
        log.info("deleted collection %s", name)

    # -- API keys ---------------------------------------------------------------------------

    def create_key(
        self,
        collection: str,
        tenant: str,
        role: str,
        expires_at: float | None = None,
        description: str = "",
    ) -> tuple[KeyRecord, str]:
        """A tenant key for an existing collection; returns its record and the key, once."""
        if not self.authenticator.required:
            raise Forbidden(KEYS_NEED_ADMIN)
        self.collection(collection)
        record, token = self.keys.create(collection, tenant, Role(role), expires_at, description)
        audit.note(key_id=record.key_id, key_scope=f"{collection}/{tenant}", role=role)
        return record, token

    # -- following the writer (read workers) ----------------------------------------------

    def follow(self, change: Change) -> None:
        """Apply one change record to a follower's memory (`server.follower` calls this in feed
        order, with the store caught up to at least that record)."""
        store = self.store
        collections = self._collections
        if change.kind == "keys":
            self.keys.load(store)
            return
        collection = collections.get(change.collection)
        if change.kind == "create":
            raw = store.get(keys.CF_META, keys.collection_key(change.collection))
            if raw is None:
                return  # dropped again since: its `drop` record follows
            config = CollectionConfig.from_json(raw)
            if collection is not None:
                if collection.config.cid == config.cid:
                    return
                collection.graphs.stop(persist=False)  # replaced by a namesake
            fresh = self._collection(config, store)
            fresh.load()
            collections[config.name] = fresh
            self.quotas.load([fresh])
            return
        if collection is None:
            return  # created and dropped within the records replayed
        if change.kind == "points":
            collection.follow_points(change)
        elif change.kind == "schema":
            collection.follow_schema()
        elif change.kind == "tree":
            collection.curator.follow_tree()
        elif change.kind == "graph":
            collection.graphs.follow_snapshot(change.graph, change.labels[0])
        elif change.kind == "quotas":
            self.quotas.load([collection])
        elif change.kind == "drop":
            collection.dropped = True
            collections.pop(change.collection, None)
            collection.graphs.stop(persist=False)
            self.quotas.forget(change.collection)
            self.observer.collection_dropped(change.collection)

    def _collection(self, config: CollectionConfig, store: Store) -> Collection:
        collection = Collection(
            config,
            store,
            self.limits,
            self.observer,
            self._graph_dir(config.cid),
            follower=self.follower_dir is not None,
        )
        collection.admission = self.quotas.admission(config.name)
        return collection


def _warm_up() -> None:
    """Compile the search kernels (or load them from numba's cache) before the first query
    needs them: 0.2 s that query would wait otherwise. Only an optimisation: a failure (the
    cache volume full or read-only when numba writes to it) is logged, and the first query
    compiles instead."""
    try:
        arena.warm_up()
        curator.warm_up()
    except Exception:
        log.warning("could not compile the search kernels ahead of the first query", exc_info=True)
