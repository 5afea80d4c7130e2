"""Reference answers for index tests: exact distances in float64, nothing shared with the code
under test beyond the conventions (cosine 1 - cos, ip 1 - dot, l2 not squared)."""

from __future__ import annotations

import numpy as np

from index.arena import Metric


def brute_distances(rows: np.ndarray, query: np.ndarray, metric: Metric) -> np.ndarray:
    rows64, q64 = rows.astype(np.float64), query.astype(np.float64)
    if metric is Metric.COSINE:
        return 1 - rows64 @ q64 / (np.linalg.norm(rows64, axis=1) * np.linalg.norm(q64))
    if metric is Metric.IP:
        return 1 - rows64 @ q64
    return np.linalg.norm(rows64 - q64, axis=1)


def in_sequence(labels: set[int], lead: int) -> int:
    """How many of `labels` have the `lead` labels before them in the set too."""
    return sum(all(label - step in labels for step in range(1, lead + 1)) for label in labels)
