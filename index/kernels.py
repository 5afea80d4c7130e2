"""Compiled kernels (numba, `nogil`): distances read straight from arena rows, no gather.

A shortlist scan folds each row's distance into a bounded max-heap of the best `ef` so far
(`heap_distances[0]` is the worst kept), ordered by (distance, label): equally near labels
are kept smallest first, whatever the order they are scanned in. Distances inside the
kernels are "scan distances": cosine `1 - cos`, ip `1 - dot`, l2 the *squared* Euclidean
distance (monotone in the real one; `finish_distances` converts).
"""

from __future__ import annotations

import numba
import numpy as np

# By `index.arena.Metric` (a StrEnum: its members are these strings). Not imported from there:
# the arena's exact search runs on these kernels.
METRIC_CODES = {"cosine": 0, "ip": 1, "l2": 2}
NO_MASK = np.zeros(0, dtype=np.bool_)  # `allowed` when every label may be returned


@numba.njit(nogil=True, cache=True, fastmath=True)
def scan_shortlist(
    rows: np.ndarray,
    norms_sq: np.ndarray,
    labels: np.ndarray,
    allowed: np.ndarray,
    query: np.ndarray,
    query_norm_sq: float,
    metric: int,
    heap_distances: np.ndarray,
    heap_labels: np.ndarray,
    size: int,
) -> tuple[int, int, int]:
    """Fold `labels` (skipping those with `allowed[label]` False, if `allowed` is non-empty)
    into the heap. Returns (new size, how many entered the heap, distances computed)."""
    capacity = len(heap_distances)
    dim = rows.shape[1]
    use_mask = len(allowed) > 0
    entered = 0
    computed = 0
    for i in range(len(labels)):
        label = labels[i]
        if use_mask and not allowed[label]:
            continue
        computed += 1
        acc = np.float32(0.0)  # a float64 accumulator would block SIMD
        if metric == 2:
            for j in range(dim):
                diff = rows[label, j] - query[j]
                acc += diff * diff
            distance = acc
        else:
            for j in range(dim):
                acc += rows[label, j] * query[j]
            if metric == 0:
                denominator = np.sqrt(query_norm_sq * norms_sq[label])
                distance = 1.0 - acc / max(denominator, 1e-30)
            else:
                distance = 1.0 - acc
        # Compared as stored: a float64 distance against the heap's float32 ones would let
        # two equal rows differ, and the label would no longer decide between them.
        distance = np.float32(distance)
        if size < capacity:
            _push(heap_distances, heap_labels, size, distance, label)
            size += 1
            entered += 1
        elif _before(distance, label, heap_distances[0], heap_labels[0]):
            _replace_top(heap_distances, heap_labels, size, distance, label)
            entered += 1
    return size, entered, computed


@numba.njit(nogil=True, cache=True)
def _before(distance: float, label: int, other_distance: float, other_label: int) -> bool:
    """Nearer, or as near with a smaller label: the order of every result, so that which of
    several equally near labels makes the top k does not depend on the order of the scan."""
    return distance < other_distance or (distance == other_distance and label < other_label)


@numba.njit(nogil=True, cache=True)
def _push(
    distances: np.ndarray, labels: np.ndarray, size: int, distance: float, label: int
) -> None:
    position = size
    while position > 0:
        parent = (position - 1) // 2
        if not _before(distances[parent], labels[parent], distance, label):
            break
        distances[position] = distances[parent]
        labels[position] = labels[parent]
        position = parent
    distances[position] = distance
    labels[position] = label


@numba.njit(nogil=True, cache=True)
def _replace_top(
    distances: np.ndarray, labels: np.ndarray, size: int, distance: float, label: int
) -> None:
    position = 0
    while True:
        child = 2 * position + 1
        if child >= size:
            break
        if child + 1 < size and _before(
            distances[child], labels[child], distances[child + 1], labels[child + 1]
        ):
            child += 1
        if not _before(distance, label, distances[child], labels[child]):
            break
        distances[position] = distances[child]
        labels[position] = labels[child]
        position = child
    distances[position] = distance
    labels[position] = label


@numba.njit(nogil=True, cache=True)
def scan_exact(
    rows: np.ndarray,
    norms_sq: np.ndarray,
    labels: np.ndarray,
    query: np.ndarray,
    query_norm_sq: float,
    metric: int,
    heap_distances: np.ndarray,
    heap_labels: np.ndarray,
    high_water: int,
) -> int:
    """The exact scan of one query over `labels`: the heap filled by `scan_shortlist`, then
    sorted nearest first (ties by label); returns its size. Returns -1 and reads no row if a
    label is outside 0..high_water-1 (at most the rows there are): the scan reads rows
    unchecked, without the GIL. (Checked and sorted here rather than by numpy around the
    call: two reductions and a lexsort cost about 12 us of a query.)"""
    bound = min(high_water, rows.shape[0])
    for i in range(len(labels)):
        if labels[i] < 0 or labels[i] >= bound:
            return -1
    size, _, _ = scan_shortlist(
        rows, norms_sq, labels, NO_MASK, query, query_norm_sq, metric,
        heap_distances, heap_labels, 0,
    )  # fmt: skip
    # Heap sort: the root is the farthest kept; moved to the end, the rest re-heaped.
    for end in range(size - 1, 0, -1):
        distance, label = heap_distances[end], heap_labels[end]
        heap_distances[end], heap_labels[end] = heap_distances[0], heap_labels[0]
        _replace_top(heap_distances, heap_labels, end, distance, label)
    return size


def finish_distances(distances: np.ndarray, metric: str) -> np.ndarray:
    if metric == "l2":
        return np.sqrt(np.maximum(distances, 0.0))
    return distances


@numba.njit(nogil=True, cache=True, fastmath=True)
def curator_search(
    rows: np.ndarray,
    norms_sq: np.ndarray,
    query: np.ndarray,
    routed: np.ndarray,
    metric: int,
    route_cosine: bool,
    centroids: np.ndarray,
    centroid_norms_sq: np.ndarray,
    child_start: np.ndarray,
    child_count: np.ndarray,
    present: np.ndarray,
    shortlist_offset: np.ndarray,
    shortlist_length: np.ndarray,
    shortlist_labels: np.ndarray,
    allowed: np.ndarray,
    patience: int,
    heap_distances: np.ndarray,
    heap_labels: np.ndarray,
) -> tuple[int, int, int, int]:
    """Best-first over one tenant's sub-tree, scanning its shortlists into the heap.

    `present[n]`: the tenant has pairs at or below node n; `shortlist_offset[n] >= 0`: its
    shortlist at n is `shortlist_labels[offset : offset + length]`. Stops once `patience`
    consecutive shortlists scanned with a full heap added nothing. Returns (heap size, nodes
    visited, shortlists scanned, distances computed). A shortlist with no allowed label
    says nothing about the query, so it does not count toward `patience` (a selective
    filter would otherwise stop the search before it met a single match).
    """
    capacity = len(heap_distances)
    query_norm_sq = 0.0
    for j in range(len(query)):
        query_norm_sq += query[j] * query[j]
    frontier_distances = np.empty(len(present), dtype=np.float32)
    frontier_nodes = np.empty(len(present), dtype=np.int64)
    frontier_size = 1
    frontier_distances[0] = 0.0
    frontier_nodes[0] = 0
    size = visited = scanned = computed = stale = 0
    while frontier_size > 0:
        node = frontier_nodes[0]
        frontier_size -= 1
        if frontier_size > 0:
            _sift_down_min(frontier_distances, frontier_nodes, frontier_size)
        visited += 1
        offset = shortlist_offset[node]
        if offset < 0:
            start = child_start[node]
            for child in range(start, start + child_count[node]):
                if not present[child]:
                    continue
                dot = np.float32(0.0)
                for j in range(len(routed)):
                    dot += routed[j] * centroids[child, j]
                distance = 1.0 - dot if route_cosine else centroid_norms_sq[child] - 2.0 * dot
                _push_min(frontier_distances, frontier_nodes, frontier_size, distance, child)
                frontier_size += 1
            continue
        full = size == capacity
        labels = shortlist_labels[offset : offset + shortlist_length[node]]
        size, entered, count = scan_shortlist(
            rows, norms_sq, labels, allowed, query, query_norm_sq, metric,
            heap_distances, heap_labels, size,
        )  # fmt: skip
        scanned += 1
        computed += count
        if full and entered == 0 and count > 0:
            stale += 1
            if stale >= patience:
                break
        elif entered > 0:
            stale = 0
    return size, visited, scanned, computed


@numba.njit(nogil=True, cache=True)
def _push_min(
    distances: np.ndarray, nodes: np.ndarray, size: int, distance: float, node: int
) -> None:
    position = size
    while position > 0:
        parent = (position - 1) // 2
        if distances[parent] <= distance:
            break
        distances[position] = distances[parent]
        nodes[position] = nodes[parent]
        position = parent
    distances[position] = distance
    nodes[position] = node


@numba.njit(nogil=True, cache=True)
def _sift_down_min(distances: np.ndarray, nodes: np.ndarray, size: int) -> None:
    """After popping the root: move the last entry (at index `size`) into place."""
    distance = distances[size]
    node = nodes[size]
    position = 0
    while True:
        child = 2 * position + 1
        if child >= size:
            break
        if child + 1 < size and distances[child + 1] < distances[child]:
            child += 1
        if distances[child] >= distance:
            break
        distances[position] = distances[child]
        nodes[position] = nodes[child]
        position = child
    distances[position] = distance
    nodes[position] = node
