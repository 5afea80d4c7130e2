"""Compiled kernels (numba, `nogil`): distances read straight from arena rows, no gather.

A shortlist scan folds each row's distance into a bounded max-heap of the best `ef` so far
(`heap_distances[0]` is the worst kept). Distances inside the kernels are "scan distances":
cosine `1 - cos`, ip `1 - dot`, l2 the *squared* Euclidean distance (monotone in the real one;
`finish_distances` converts).
"""

from __future__ import annotations

import numba
import numpy as np

from index.arena import Metric

METRIC_CODES = {Metric.COSINE: 0, Metric.IP: 1, Metric.L2: 2}


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
        acc = 0.0
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
        if size < capacity:
            _push(heap_distances, heap_labels, size, distance, label)
            size += 1
            entered += 1
        elif distance < heap_distances[0]:
            _replace_top(heap_distances, heap_labels, size, distance, label)
            entered += 1
    return size, entered, computed


@numba.njit(nogil=True, cache=True)
def _push(
    distances: np.ndarray, labels: np.ndarray, size: int, distance: float, label: int
) -> None:
    position = size
    while position > 0:
        parent = (position - 1) // 2
        if distances[parent] >= distance:
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
        if child + 1 < size and distances[child + 1] > distances[child]:
            child += 1
        if distances[child] <= distance:
            break
        distances[position] = distances[child]
        labels[position] = labels[child]
        position = child
    distances[position] = distance
    labels[position] = label


def finish_distances(distances: np.ndarray, metric: Metric) -> np.ndarray:
    if metric is Metric.L2:
        return np.sqrt(np.maximum(distances, 0.0))
    return distances
