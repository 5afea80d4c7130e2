"""A collection's Curator index: when it is trained, how it is kept in step, when it is used.

Lifecycle:
- below `curator_min_points` the collection has no tree and every tenant query is exact;
- once it reaches that size, a background thread trains the tree on a sample (no lock held),
  then, holding the collection's write mutex (writers wait, readers go on), indexes every
  (label, reader) pair, persists the tree in `meta`, and swaps it in under the write lock;
- recovery loads the persisted tree and re-inserts the pairs (no re-training, same tree);
- when points placed since the build sit `retrain_drift` times farther from their leaf
  centroids than the training sample did (and they are at least a fifth of the collection),
  the same background path trains a new tree and swaps it in.

Every mutation of the collection calls the matching method here inside its apply step (under
the collection's write lock), so the index never lags the tenant bitmaps.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import numpy as np

from index.cluster_tree import ClusterTree
from index.curator import Curator
from index.tenants import bitmap_labels
from server.changes import collection_changed
from server.errors import NotFound
from storage import keys
from storage.store import Batch

if TYPE_CHECKING:
    from server.collection import Collection

log = logging.getLogger("shoal.curator")


class CuratorHost:
    def __init__(self, collection: Collection):
        self._collection = collection
        self.curator: Curator | None = None
        self._training_lock = threading.Lock()  # guards `_trainer`
        self._trainer: threading.Thread | None = None

    @property
    def settings(self):  # type: ignore[no-untyped-def]
        return self._collection.config.index

    # -- recovery -----------------------------------------------------------------------

    def load(self) -> None:
        """Restore the persisted tree (if any) and index every pair; caller holds no lock."""
        collection = self._collection
        raw = collection.store.get(keys.CF_META, keys.tree_key(collection.config.cid))
        if raw is not None:
            self.curator = self._build(ClusterTree.from_bytes(raw))
        # A crash can come between crossing the threshold and persisting the tree.
        self.maybe_train()

    def _build(self, tree: ClusterTree) -> Curator:
        curator = Curator(tree, self._collection.arena, self.settings.max_shortlist)
        tenants = self._collection.tenants
        numbers = list(tenants.readable)
        # Not `readable_array`: that caches an array per tenant, and most are never queried.
        arrays = [bitmap_labels(tenants.readable[n]) for n in numbers]
        sizes = [len(a) for a in arrays]
        if arrays:
            labels = np.concatenate(arrays)
            owners = np.repeat(np.asarray(numbers, dtype=np.int64), sizes)
            curator.insert_many(labels, owners)
        curator.reset_drift()
        return curator

    # -- keeping in step (called under the collection's write lock) ---------------------

    def add(self, labels: list[int], readers: list[list[int]]) -> None:
        """New points (or re-upserted ones whose old pairs were removed first)."""
        if self.curator is None or not labels:
            return
        self.curator.place(np.asarray(labels, dtype=np.int64))
        for label, label_readers in zip(labels, readers, strict=True):
            for reader in label_readers:
                self.curator.insert(label, reader)

    def remove(self, label: int, readers: list[int]) -> None:
        if self.curator is not None:
            self.curator.delete(label, readers)

    def grant(self, label: int, tenant: int) -> None:
        if self.curator is not None:
            self.curator.grant(label, tenant)

    def revoke(self, label: int, tenant: int) -> None:
        if self.curator is not None:
            self.curator.revoke(label, tenant)

    # -- training -----------------------------------------------------------------------

    def maybe_train(self) -> None:
        """After a write: start a background (re)training if the collection calls for one.
        Followers never train: they load the tree the writer persists (`follow_tree`)."""
        if self._collection.follower:
            return
        count = self._collection.arena.count
        curator = self.curator
        if curator is None:
            due = count >= self.settings.curator_min_points
        else:
            due = (
                curator.drift() >= self.settings.retrain_drift
                and curator.placed_since_build >= count // 5
            )
        if not due:
            return
        with self._training_lock:
            if self._trainer is not None and self._trainer.is_alive():
                return
            self._trainer = threading.Thread(target=self._train, name="curator-train", daemon=True)
            self._trainer.start()

    def follow_tree(self) -> None:
        """A follower: the writer persisted a new tree; index the pairs on it and swap it in."""
        collection = self._collection
        raw = collection.store.get(keys.CF_META, keys.tree_key(collection.config.cid))
        if raw is None:
            return  # the collection was dropped since
        with collection.write_mutex():
            curator = self._build(ClusterTree.from_bytes(raw))
            with collection.write_lock():
                self.curator = curator

    def wait_trained(self, timeout_s: float) -> bool:
        """Wait for a training in progress; True once no training is running."""
        trainer = self._trainer
        if trainer is not None:
            trainer.join(timeout_s)
            return not trainer.is_alive()
        return True

    def _train(self) -> None:
        collection = self._collection
        settings = self.settings
        try:
            with collection.read_lock():
                live = collection.arena.live_labels()
                rng = np.random.default_rng(len(live))
                chosen = rng.choice(
                    live, size=min(len(live), settings.training_sample), replace=False
                )
                sample = collection.arena.rows(np.sort(chosen))
            started = time.perf_counter()
            tree = ClusterTree.train(
                sample, collection.config.metric, settings.branching, settings.depth
            )
            trained = time.perf_counter() - started
            with collection.write_mutex():
                building = time.perf_counter()
                curator = self._build(tree)
                built = time.perf_counter() - building
                batch = Batch(change=collection_changed("tree", collection.name))
                batch.put(keys.CF_META, keys.tree_key(collection.config.cid), tree.to_bytes())
                collection.store.write(batch)
                with collection.write_lock():
                    self.curator = curator
            log.info(
                "collection %s: Curator tree of %d nodes trained in %.2f s on %d points, "
                "%d pairs indexed in %.2f s",
                collection.name,
                tree.node_count,
                trained,
                len(sample),
                curator.pairs,
                built,
            )
        except NotFound:
            return  # the collection was dropped while training
        except Exception:
            log.exception(
                "collection %s: Curator training failed; queries stay exact", collection.name
            )
