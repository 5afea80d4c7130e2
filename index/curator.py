"""Curator: every tenant's index is a sub-tree of one shared clustering tree.

After Jin et al., "Curator: Efficient Indexing for Multi-Tenant Vector Databases" (2024). The
unit is a (label, tenant) pair: a point is indexed once for its owner and once per grantee, and
its vector is stored once, in the arena.

State:
- `leaf_of[label]`: the tree leaf the label's vector routes to (fixed until the label is freed);
  the label's path is `tree.paths[leaf_of[label]]`.
- `counts[node][tenant]`: pairs of that tenant stored at `node` or below it (the membership
  summary: exact, so it supports removal, and it doubles as the split/merge test).
- `shortlists[(node, tenant)]`: the labels of the tenant's pairs stored at `node`, as a flat int32
  array (`array('i')`: 4 bytes a pair, appended in amortised O(1)).

Invariants (`check_invariants`):
1. every pair lives in exactly one shortlist, on its label's path;
2. a tenant with a shortlist at a node has no pairs below that node;
3. a shortlist is at most `max_shortlist` long, except at a leaf;
4. a tenant that is split at a node (pairs below it, no shortlist at it) has more than
   `max_shortlist` pairs there: siblings that fit together are merged back into the parent;
5. `counts` equals the pairs in shortlists at or below each node.

Search is best-first over the tenant's sub-tree by routing distance to node centroids, scanning
each shortlist reached exactly, and stops once `patience` consecutive shortlists improved
nothing among the best `ef` candidates.
"""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass

import numpy as np

from index.arena import Metric, TopK, VectorArena, heap_top_k
from index.cluster_tree import ClusterTree
from index.kernels import METRIC_CODES, NO_MASK, curator_search


@dataclass(frozen=True, slots=True)
class _TenantView:
    present: np.ndarray  # (nodes,) bool: the tenant has pairs at or below the node
    offset: np.ndarray  # (nodes,) int32: start of its shortlist in `labels`, -1 if none
    length: np.ndarray  # (nodes,) int32
    labels: np.ndarray  # int32: every shortlist of the tenant, concatenated


@dataclass(slots=True)
class CuratorStats:
    nodes_visited: int = 0
    shortlists_scanned: int = 0
    distances_computed: int = 0


class Curator:
    def __init__(self, tree: ClusterTree, arena: VectorArena, max_shortlist: int = 256):
        self.tree = tree
        self.arena = arena
        self.max_shortlist = max_shortlist
        self.leaf_of = np.full(1024, -1, dtype=np.int32)
        self.counts: list[dict[int, int]] = [{} for _ in range(tree.node_count)]
        self.shortlists: dict[tuple[int, int], array] = {}
        self.pairs = 0
        self._views: dict[int, _TenantView] = {}
        # Drift: mean routing distance of labels placed since training, against the tree's own.
        self._placed = 0
        self._placed_distance = 0.0

    # -- placement ----------------------------------------------------------------------

    def place(self, labels: np.ndarray) -> None:
        """Route labels (their arena rows) to leaves; needed before their first pair."""
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) == 0:
            return
        if int(labels.max()) >= len(self.leaf_of):
            grown = np.full(max(int(labels.max()) + 1, 2 * len(self.leaf_of)), -1, np.int32)
            grown[: len(self.leaf_of)] = self.leaf_of
            self.leaf_of = grown
        leaves, distances = self.tree.assign(self.arena.rows(labels))
        self.leaf_of[labels] = leaves
        self._placed += len(labels)
        self._placed_distance += float(distances.sum())

    @property
    def placed_since_build(self) -> int:
        return self._placed

    def reset_drift(self) -> None:
        """Start measuring drift from now (after the bulk build of an index)."""
        self._placed = 0
        self._placed_distance = 0.0

    def drift(self) -> float:
        """Mean leaf distance of placed labels over the training mean (1.0: fits as trained)."""
        if self._placed == 0:
            return 1.0
        if self.tree.training_distance <= 0:  # a tree of identical points: anything new drifts
            return float("inf") if self._placed_distance > 0 else 1.0
        return (self._placed_distance / self._placed) / self.tree.training_distance

    def _path(self, label: int) -> np.ndarray:
        leaf = int(self.leaf_of[label])
        if leaf < 0:
            raise KeyError(f"label {label} was not placed")
        return self.tree.paths[leaf][: self.tree.depth[leaf] + 1]

    # -- mutation -----------------------------------------------------------------------

    def insert(self, label: int, tenant: int) -> None:
        """Add the pair (label, tenant); the label must be placed."""
        path = self._path(label)
        self._views.pop(tenant, None)
        for position, node in enumerate(path.tolist()):
            shortlist = self.shortlists.get((node, tenant))
            if shortlist is None and self.counts[node].get(tenant, 0) > 0:
                continue  # the tenant is split here: its pairs live further down
            if shortlist is None:
                shortlist = self.shortlists[(node, tenant)] = array("i")
            shortlist.append(label)
            self._count(path[: position + 1], tenant, +1)
            if len(shortlist) > self.max_shortlist and not self.tree.is_leaf(node):
                self._split(node, tenant)
            return
        raise AssertionError("unreachable: a leaf always takes the pair")

    grant = insert

    def insert_many(self, labels: np.ndarray, tenants: np.ndarray) -> None:
        """Bulk insert of pairs; a tenant new to the index is built top-down in one pass."""
        labels = np.asarray(labels, dtype=np.int64)
        tenants = np.asarray(tenants, dtype=np.int64)
        unplaced = np.unique(labels[self.leaf_of_many(labels) < 0])
        self.place(unplaced)
        order = np.argsort(tenants, kind="stable")
        boundaries = np.flatnonzero(np.diff(tenants[order])) + 1
        for group in np.split(order, boundaries):
            if len(group) == 0:
                continue
            tenant = int(tenants[group[0]])
            if self.counts[0].get(tenant, 0) == 0:
                self._build(0, tenant, labels[group])
            else:
                for label in labels[group].tolist():
                    self.insert(label, tenant)

    def leaf_of_many(self, labels: np.ndarray) -> np.ndarray:
        inside = labels < len(self.leaf_of)
        leaves = np.full(len(labels), -1, dtype=np.int32)
        leaves[inside] = self.leaf_of[labels[inside]]
        return leaves

    def _build(self, node: int, tenant: int, labels: np.ndarray) -> None:
        """Store `labels` of a tenant with no pairs under `node`, splitting while too long."""
        self._views.pop(tenant, None)
        self.counts[node][tenant] = self.counts[node].get(tenant, 0) + len(labels)
        self.pairs += len(labels) if node == 0 else 0
        if len(labels) <= self.max_shortlist or self.tree.is_leaf(node):
            self.shortlists[(node, tenant)] = array("i", labels.astype(np.int32).tobytes())
            return
        level = int(self.tree.depth[node]) + 1
        children = self.tree.paths[self.leaf_of[labels], level]
        order = np.argsort(children, kind="stable")
        boundaries = np.flatnonzero(np.diff(children[order])) + 1
        for group in np.split(order, boundaries):
            self._build(int(children[group[0]]), tenant, labels[group])

    def revoke(self, label: int, tenant: int) -> None:
        """Remove the pair (label, tenant); a no-op if it is not indexed."""
        if not 0 <= label < len(self.leaf_of) or self.leaf_of[label] < 0:
            return
        path = self._path(label).tolist()
        self._views.pop(tenant, None)
        for position, node in enumerate(path):
            shortlist = self.shortlists.get((node, tenant))
            if shortlist is None:
                if self.counts[node].get(tenant, 0) == 0:
                    return
                continue
            try:
                shortlist.remove(label)
            except ValueError:
                return
            if not shortlist:
                del self.shortlists[(node, tenant)]
            self._count(np.asarray(path[: position + 1]), tenant, -1)
            self._merge_on(path[:position], tenant)
            return

    def delete(self, label: int, tenants: list[int]) -> None:
        """Remove every pair of a deleted point and forget its placement."""
        for tenant in tenants:
            self.revoke(label, tenant)
        if label < len(self.leaf_of):
            self.leaf_of[label] = -1

    def _count(self, nodes: np.ndarray, tenant: int, delta: int) -> None:
        for node in nodes.tolist():
            counts = self.counts[node]
            value = counts.get(tenant, 0) + delta
            if value:
                counts[tenant] = value
            else:
                del counts[tenant]
        self.pairs += delta

    def _split(self, node: int, tenant: int) -> None:
        self._views.pop(tenant, None)
        labels = np.frombuffer(self.shortlists.pop((node, tenant)), dtype=np.int32)
        level = int(self.tree.depth[node]) + 1
        children = self.tree.paths[self.leaf_of[labels], level]
        order = np.argsort(children, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(children[order])) + 1):
            self._build(int(children[group[0]]), tenant, labels[group].astype(np.int64))

    def _merge_on(self, ancestors: list[int], tenant: int) -> None:
        """Merge the tenant's sub-tree into the highest ancestor whose pairs now fit one list."""
        for node in ancestors:
            count = self.counts[node].get(tenant, 0)
            if 0 < count <= self.max_shortlist and (node, tenant) not in self.shortlists:
                gathered = array("i")
                self._collect(node, tenant, gathered)
                self.shortlists[(node, tenant)] = gathered
                return

    def _collect(self, node: int, tenant: int, into: array) -> None:
        """Move the tenant's pairs below `node` into `into` (counts at `node` are unchanged)."""
        for child in self.tree.children(node):
            if self.counts[child].get(tenant, 0) == 0:
                continue
            shortlist = self.shortlists.pop((child, tenant), None)
            if shortlist is not None:
                into.extend(shortlist)
            else:
                self._collect(child, tenant, into)
            del self.counts[child][tenant]

    # -- search -------------------------------------------------------------------------

    def search(
        self,
        query: np.ndarray,
        tenant: int,
        k: int,
        ef: int = 64,
        allowed: np.ndarray | None = None,
        patience: int = 5,
    ) -> tuple[TopK, CuratorStats]:
        """The tenant's `k` nearest labels (restricted to `allowed[label]` when given)."""
        stats = CuratorStats()
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        ef = max(ef, k)
        heap_distances = np.empty(ef, dtype=np.float32)
        heap_labels = np.empty(ef, dtype=np.int64)
        size = 0
        if tenant in self.counts[0]:
            view = self._view(tenant)
            tree = self.tree
            size, visited, scanned, computed = curator_search(
                self.arena.matrix,
                self.arena.norms_sq,
                query,
                tree.to_routing_space(query),
                METRIC_CODES[self.arena.metric],
                tree.metric is Metric.COSINE,
                tree.centroids,
                tree.centroid_norms_sq,
                tree.child_start,
                tree.child_count,
                view.present,
                view.offset,
                view.length,
                view.labels,
                NO_MASK if allowed is None else allowed,
                patience,
                heap_distances,
                heap_labels,
            )
            stats = CuratorStats(visited, scanned, computed)
        return heap_top_k(heap_distances, heap_labels, size, k, self.arena.metric), stats

    def _view(self, tenant: int) -> _TenantView:
        """The tenant's sub-tree as flat arrays for the compiled search; cached until the
        tenant's pairs change (writers drop it under the collection's write lock).

        A view costs 9 bytes per tree node (about 9 KiB at the default 1,000 nodes) whatever
        the tenant's size; the server searches only tenants above `curator_min_tenant_points`
        through the index, so only those have one."""
        view = self._views.get(tenant)
        if view is not None:
            return view
        nodes = self.tree.node_count
        present = np.zeros(nodes, dtype=np.bool_)
        offset = np.full(nodes, -1, dtype=np.int32)
        length = np.zeros(nodes, dtype=np.int32)
        chunks: list[np.ndarray] = []
        total = 0
        stack = [0]
        while stack:
            node = stack.pop()
            present[node] = True
            shortlist = self.shortlists.get((node, tenant))
            if shortlist is None:
                stack.extend(c for c in self.tree.children(node) if tenant in self.counts[c])
                continue
            offset[node], length[node] = total, len(shortlist)
            chunks.append(np.frombuffer(shortlist, dtype=np.int32))
            total += len(shortlist)
        labels = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int32)
        view = _TenantView(present, offset, length, labels)
        self._views[tenant] = view
        return view

    # -- size and invariants ------------------------------------------------------------

    def memory_bytes(self) -> int:
        """Index memory beyond the arena: shortlists, summaries, placements, centroids."""
        shortlists = sum(sys.getsizeof(s) for s in self.shortlists.values())
        keys = len(self.shortlists) * (sys.getsizeof((0, 0)) + 2 * 28)
        summaries = sum(sys.getsizeof(c) + 2 * 28 * len(c) for c in self.counts)
        tree = self.tree.centroids.nbytes + self.tree.paths.nbytes
        views = sum(
            v.present.nbytes + v.offset.nbytes + v.length.nbytes + v.labels.nbytes
            for v in list(self._views.values())
        )
        return (
            shortlists
            + views
            + keys
            + sys.getsizeof(self.shortlists)
            + summaries
            + self.leaf_of.nbytes
            + tree
        )

    def check_invariants(self, expected_pairs: set[tuple[int, int]] | None = None) -> None:
        seen: set[tuple[int, int]] = set()
        stored_at: dict[tuple[int, int], int] = {}
        for (node, tenant), shortlist in self.shortlists.items():
            assert len(shortlist) > 0, f"empty shortlist at {(node, tenant)}"
            if not self.tree.is_leaf(node):
                assert len(shortlist) <= self.max_shortlist, f"oversize shortlist {node, tenant}"
            for label in shortlist:
                assert (label, tenant) not in seen, f"pair {(label, tenant)} stored twice"
                seen.add((label, tenant))
                assert node in self._path(label).tolist(), f"{label} stored off its path"
                for ancestor in self.tree.paths[node][: self.tree.depth[node] + 1].tolist():
                    stored_at[(ancestor, tenant)] = stored_at.get((ancestor, tenant), 0) + 1
        for node, counts in enumerate(self.counts):
            for tenant, count in counts.items():
                assert stored_at.get((node, tenant), 0) == count, f"count wrong {node, tenant}"
                if (node, tenant) in self.shortlists:
                    assert count == len(self.shortlists[(node, tenant)]), (
                        f"pairs below the shortlist of {tenant} at {node}"
                    )
                else:
                    assert count > self.max_shortlist, f"mergeable split {node, tenant}"
        assert len(stored_at) == sum(len(c) for c in self.counts), "summary missing entries"
        assert len(seen) == self.pairs, "pair count drifted"
        if expected_pairs is not None:
            assert seen == expected_pairs, "indexed pairs differ from the expected set"


def warm_up() -> None:
    """Compile the Curator's search kernel (or load it from numba's cache) now, with the types
    every search passes, rather than in the first Curator query after a start."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(64, 2)).astype(np.float32)
    arena = VectorArena(2, Metric.COSINE)
    labels = arena.allocate(len(data))
    arena.put(labels, data)
    curator = Curator(ClusterTree.train(data, Metric.COSINE, branching=2, depth=1), arena, 8)
    curator.place(labels)
    curator.insert_many(labels, np.ones(len(labels), dtype=np.int64))
    query = np.ones(2, dtype=np.float32)
    curator.search(query, 1, 1)
    allowed = np.ones(len(arena.norms_sq), dtype=np.bool_)
    curator.search(query, 1, 1, allowed=allowed)
