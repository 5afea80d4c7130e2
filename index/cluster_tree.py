"""The shared clustering tree of a collection: hierarchical k-means, trained once on a sample.

Node 0 is the root. Each internal node's children are numbered contiguously
(`child_start[n] .. child_start[n] + child_count[n]`), so a node's child centroids are one slice
of `centroids` and routing a query at a node is one matrix-vector product. Leaves have no
children; a node whose sample was too small to split is a leaf above the bottom level.

Routing distance (which child is nearer): for cosine, `1 - cos` to the normalised centroid; for
l2 and ip, squared Euclidean distance (k-means is Euclidean; for ip it is a heuristic that
keeps similar vectors together).
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

from index.arena import Metric

_MAGIC = b"SHCT"
_VERSION = 1
_HEADER = struct.Struct("<4sHHIII")  # magic, version, metric, dim, nodes, max depth


class ClusterTree:
    """Immutable once built; `paths[n]` lists the nodes from the root down to `n` (-1 padded)."""

    def __init__(
        self,
        metric: Metric,
        centroids: np.ndarray,
        parent: np.ndarray,
        child_start: np.ndarray,
        child_count: np.ndarray,
        training_distance: float = 0.0,
    ):
        self.metric = Metric(metric)
        self.centroids = centroids  # (nodes, dim) float32; normalised for cosine
        self.parent = parent  # (nodes,) int32; -1 for the root; parents precede children
        self.child_start = child_start  # (nodes,) int32
        self.child_count = child_count  # (nodes,) int32; 0 for leaves
        # Mean routing distance of the training sample to its leaf: the yardstick for drift.
        self.training_distance = training_distance
        self.depth = np.zeros(len(parent), dtype=np.int32)
        for node in range(1, len(parent)):
            self.depth[node] = self.depth[parent[node]] + 1
        levels = int(self.depth.max()) + 1 if len(parent) else 1
        self.paths = np.full((len(parent), levels), -1, dtype=np.int32)
        for node in range(len(parent)):
            ancestor = node
            for level in range(int(self.depth[node]), -1, -1):
                self.paths[node, level] = ancestor
                ancestor = int(parent[ancestor])
        self.centroid_norms_sq = np.einsum("ij,ij->i", centroids, centroids).astype(np.float32)

    @property
    def node_count(self) -> int:
        return len(self.parent)

    def is_leaf(self, node: int) -> bool:
        return self.child_count[node] == 0

    def children(self, node: int) -> range:
        start = int(self.child_start[node])
        return range(start, start + int(self.child_count[node]))

    # -- training -----------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        sample: np.ndarray,
        metric: Metric,
        branching: int = 32,
        depth: int = 2,
        seed: int = 0,
        iterations: int = 12,
        min_leaf: int = 8,
    ) -> ClusterTree:
        """Hierarchical k-means over `sample`: `branching` children per node, `depth` levels.

        A tenth of the sample is held out of the k-means and gives the drift yardstick:
        points a clustering was fitted to sit closer to its centroids than new points of the
        same distribution do, which would read as drift where there is none.
        """
        rng = np.random.default_rng(seed)
        sample = np.asarray(sample, dtype=np.float32)
        order = rng.permutation(len(sample))
        held = order[: len(sample) // 10] if len(sample) >= 20 else order
        fitted = order[len(sample) // 10 :] if len(sample) >= 20 else order
        data = _routing_space(sample[fitted], metric)
        centroids = [_centre(data, metric)]
        parent, child_start, child_count = [-1], [0], [0]
        members = [np.arange(len(data))]
        frontier = [0]
        for _ in range(depth):
            next_frontier = []
            for node in frontier:
                rows = members[node]
                k = min(branching, len(rows) // min_leaf)
                if k < 2:
                    continue
                centres, assignment = _kmeans(data[rows], k, iterations, rng, metric)
                child_start[node] = len(parent)
                child_count[node] = len(centres)
                for c, centre in enumerate(centres):
                    parent.append(node)
                    child_start.append(0)
                    child_count.append(0)
                    centroids.append(centre)
                    members.append(rows[assignment == c])
                    next_frontier.append(len(parent) - 1)
            frontier = next_frontier
        tree = cls(
            metric=metric,
            centroids=np.asarray(centroids, dtype=np.float32),
            parent=np.asarray(parent, dtype=np.int32),
            child_start=np.asarray(child_start, dtype=np.int32),
            child_count=np.asarray(child_count, dtype=np.int32),
            training_distance=0.0,
        )
        _, leaf_distances = tree.assign(sample[held])
        tree.training_distance = float(np.mean(leaf_distances))
        return tree

    # -- routing ------------------------------------------------------------------------

    def assign(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Leaf of each vector (greedy descent) and its routing distance to that leaf."""
        data = _routing_space(np.asarray(vectors, dtype=np.float32), self.metric)
        node = np.zeros(len(data), dtype=np.int32)
        distance = np.zeros(len(data), dtype=np.float32)
        for _ in range(self.paths.shape[1] - 1):
            next_node = node.copy()
            for parent in np.unique(node):
                if self.child_count[parent] == 0:
                    continue
                rows = np.flatnonzero(node == parent)
                children = self.children(int(parent))
                d = self.routing_distances(data[rows], children.start, children.stop)
                best = np.argmin(d, axis=1)
                next_node[rows] = children.start + best
                distance[rows] = d[np.arange(len(rows)), best]
            node = next_node
        return node, distance

    def routing_distances(self, data: np.ndarray, start: int, stop: int) -> np.ndarray:
        """(m, stop-start) routing distances of rows already in routing space."""
        centres = self.centroids[start:stop]
        dots = data @ centres.T
        if self.metric is Metric.COSINE:
            return 1.0 - dots
        norms = np.einsum("ij,ij->i", data, data)[:, None]
        return np.maximum(norms - 2.0 * dots + self.centroid_norms_sq[start:stop][None, :], 0.0)

    def to_routing_space(self, query: np.ndarray) -> np.ndarray:
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if self.metric is not Metric.COSINE:
            return query
        # One vector per query: a dot product, not `np.linalg.norm`'s general machinery.
        return query / max(math.sqrt(float(np.dot(query, query))), 1e-30)

    # -- persistence --------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        metric_code = list(Metric).index(self.metric)
        nodes, dim = self.centroids.shape
        header = _HEADER.pack(_MAGIC, _VERSION, metric_code, dim, nodes, self.paths.shape[1])
        body = b"".join(
            [
                struct.pack("<d", self.training_distance),
                self.parent.astype("<i4").tobytes(),
                self.child_start.astype("<i4").tobytes(),
                self.child_count.astype("<i4").tobytes(),
                self.centroids.astype("<f4").tobytes(),
            ]
        )
        return header + body + struct.pack("<I", zlib.crc32(header + body))

    @classmethod
    def from_bytes(cls, raw: bytes) -> ClusterTree:
        if len(raw) < _HEADER.size + 12:
            raise ValueError("cluster tree: truncated")
        magic, version, metric_code, dim, nodes, _ = _HEADER.unpack_from(raw)
        if magic != _MAGIC or version != _VERSION:
            raise ValueError(f"cluster tree: bad magic or version {magic!r} {version}")
        if metric_code >= len(Metric):
            raise ValueError(f"cluster tree: unknown metric code {metric_code}")
        expected = _HEADER.size + 8 + nodes * 12 + nodes * dim * 4 + 4
        if len(raw) != expected:
            raise ValueError(f"cluster tree: {len(raw)} bytes, expected {expected}")
        (checksum,) = struct.unpack_from("<I", raw, len(raw) - 4)
        if zlib.crc32(raw[:-4]) != checksum:
            raise ValueError("cluster tree: checksum mismatch")
        offset = _HEADER.size
        (training_distance,) = struct.unpack_from("<d", raw, offset)
        offset += 8
        arrays = []
        for _ in range(3):
            arrays.append(
                np.frombuffer(raw, dtype="<i4", count=nodes, offset=offset).astype(np.int32)
            )
            offset += nodes * 4
        centroids = np.frombuffer(raw, dtype="<f4", count=nodes * dim, offset=offset)
        return cls(
            metric=list(Metric)[metric_code],
            centroids=centroids.reshape(nodes, dim).astype(np.float32),
            parent=arrays[0],
            child_start=arrays[1],
            child_count=arrays[2],
            training_distance=training_distance,
        )


def _routing_space(data: np.ndarray, metric: Metric) -> np.ndarray:
    if metric is not Metric.COSINE:
        return data
    norms = np.linalg.norm(data, axis=1, keepdims=True)
    return data / np.maximum(norms, 1e-30)


def _centre(data: np.ndarray, metric: Metric) -> np.ndarray:
    centre = data.mean(axis=0) if len(data) else np.zeros(data.shape[1], dtype=np.float32)
    if metric is Metric.COSINE:
        centre = centre / max(float(np.linalg.norm(centre)), 1e-30)
    return centre.astype(np.float32)


def _kmeans(
    data: np.ndarray, k: int, iterations: int, rng: np.random.Generator, metric: Metric
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++-style seeding on a subsample; returns non-empty centres."""
    centres = _seed(data, k, rng)
    assignment = np.zeros(len(data), dtype=np.int64)
    for _ in range(iterations):
        dots = data @ centres.T
        distances = np.einsum("ij,ij->i", centres, centres)[None, :] - 2.0 * dots
        assignment = np.argmin(distances, axis=1)
        one_hot = np.zeros((len(data), k), dtype=np.float32)
        one_hot[np.arange(len(data)), assignment] = 1.0
        sums = one_hot.T @ data  # per-cluster sums as one GEMM (np.add.at is 50x slower)
        counts = np.bincount(assignment, minlength=k)
        filled = counts > 0
        centres[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
        if metric is Metric.COSINE:
            centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-30)
    used = np.unique(assignment)
    remap = np.full(k, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return centres[used], remap[assignment]


def _seed(data: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    candidates = data[rng.choice(len(data), size=min(len(data), 20 * k), replace=False)]
    chosen = [candidates[rng.integers(len(candidates))]]
    nearest = np.full(len(candidates), np.inf, dtype=np.float64)
    for _ in range(1, k):
        diff = candidates - chosen[-1]
        nearest = np.minimum(nearest, np.einsum("ij,ij->i", diff, diff))
        total = nearest.sum()
        if total <= 0:
            chosen.append(candidates[rng.integers(len(candidates))])
            continue
        chosen.append(candidates[rng.choice(len(candidates), p=nearest / total)])
    return np.asarray(chosen, dtype=np.float32)
