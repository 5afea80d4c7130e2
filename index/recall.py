"""Recall self-checks by selectivity band: does an approximate plan keep recall@10 >= 0.95?

An index measures itself against an exact search, with queries drawn from the whole collection
(a tenant's queries are not confined to its own points, and those from elsewhere are the
harder ones: the Curator measured 0.95 on member queries and 0.88 on collection-wide ones, as
held-out queries found); a query that is itself a member is dropped from its own answers.
Recall depends on the filter's selectivity (a post-filtered graph fetches more as the filter
narrows; the Curator's stop rule behaves differently with few matches), so it is measured per
band: random subsets of the members keeping 100%, 50%, 20%, 10% and 5% of them. A query of
selectivity `s` is judged by the band of the smallest share at least `s` (below 5%, the 5%
band).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from index.arena import Metric

BANDS = (1.0, 0.5, 0.2, 0.1, 0.05)
TARGET = 0.95
SAMPLES = 128

# (query index, band, allowed-label mask) -> labels answered, nearest first
Answer = Callable[[int, float, np.ndarray], np.ndarray]


def band_of(selectivity: float) -> float:
    for band in reversed(BANDS):
        if selectivity <= band:
            return band
    return BANDS[0]


@dataclass
class Check:
    labels: np.ndarray  # the members, by row
    queries: np.ndarray  # query vectors
    query_labels: np.ndarray  # their labels (dropped from their own answers)
    allowed: dict[float, np.ndarray]  # band -> bool mask over rows
    expected: dict[float, list[set[int]]]  # band -> per query, the true top-k labels
    masks: dict[float, np.ndarray]  # band -> bool mask over labels (0..max label)


def prepare(
    labels: np.ndarray,
    vectors: np.ndarray,
    metric: Metric,
    k: int = 10,
    seed: int = 7,
    query_labels: np.ndarray | None = None,
    query_vectors: np.ndarray | None = None,
) -> Check | None:
    """The queries and exact answers of a check; None when there are too few members.
    Queries default to sampled members; the server passes a sample of the collection."""
    labels = np.asarray(labels, dtype=np.int64)
    count = len(labels)
    if count <= 4 * k / BANDS[-1]:
        return None
    rng = np.random.default_rng(seed)
    if query_labels is None or query_vectors is None:
        picks = rng.choice(count, size=min(SAMPLES, count), replace=False)
        query_labels, query_vectors = labels[picks], vectors[picks]
    query_labels = np.asarray(query_labels, dtype=np.int64)
    scores = _scores(vectors, query_vectors, metric)
    row_of = {label: row for row, label in enumerate(labels.tolist())}
    for i, label in enumerate(query_labels.tolist()):  # a member query is not its own answer
        row = row_of.get(label)
        if row is not None:
            scores[i, row] = np.inf
    allowed, expected, masks = {}, {}, {}
    for band in BANDS:
        keep = rng.random(count) < band if band < 1.0 else np.ones(count, dtype=bool)
        banded = np.where(keep[None, :], scores, np.inf)
        top = np.argpartition(banded, k - 1, axis=1)[:, :k]
        allowed[band] = keep
        expected[band] = [
            set(labels[row[np.isfinite(banded[i, row])]].tolist()) for i, row in enumerate(top)
        ]
        mask = np.zeros(int(labels.max()) + 1, dtype=np.bool_)
        mask[labels[keep]] = True
        masks[band] = mask
    return Check(labels, np.asarray(query_vectors), query_labels, allowed, expected, masks)


def measure(
    check: Check, answer: Answer, k: int = 10, bands: tuple[float, ...] = BANDS
) -> dict[float, float]:
    """Recall@k per band of `answer` (which must leave out labels outside the mask)."""
    recalls = {}
    for band in bands:
        found = wanted = 0
        for i, own in enumerate(check.query_labels.tolist()):
            truth = check.expected[band][i]
            got = answer(i, band, check.masks[band])
            got = got[got != own][:k]
            found += len(set(got.tolist()) & truth)
            wanted += len(truth)
        recalls[band] = found / max(1, wanted)
    return recalls


def meets(recalls: dict[float, float] | None, selectivity: float) -> bool:
    if recalls is None:
        return True
    return recalls[band_of(selectivity)] >= TARGET


def _scores(vectors: np.ndarray, queries: np.ndarray, metric: Metric) -> np.ndarray:
    """Smaller is nearer (for ranking only)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    if metric is Metric.COSINE:
        norms = np.linalg.norm(vectors, axis=1)
        return -(queries @ vectors.T) / np.maximum(norms, 1e-30)[None, :]
    if metric is Metric.IP:
        return -(queries @ vectors.T)
    return np.einsum("ij,ij->i", vectors, vectors)[None, :] - 2.0 * (queries @ vectors.T)
