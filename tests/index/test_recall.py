"""The recall self-check (index/recall.py): bands, leave-one-out truth, and its verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from index import recall
from index.arena import Metric
from index.hnsw import HnswGraph


def clustered(n: int = 3000, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, dim)) * 4
    return (centres[rng.integers(0, 30, n)] + rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize(
    ("selectivity", "band"), [(1.0, 1.0), (0.7, 1.0), (0.5, 0.5), (0.3, 0.5), (0.15, 0.2),
                              (0.1, 0.1), (0.06, 0.1), (0.05, 0.05), (0.001, 0.05)]
)  # fmt: skip
def test_a_query_is_judged_by_the_smallest_band_at_least_its_selectivity(
    selectivity: float, band: float
) -> None:
    assert recall.band_of(selectivity) == band


def test_an_exact_answer_has_recall_one_and_a_wrong_one_fails_every_band() -> None:
    vectors = clustered()
    labels = np.arange(10, 10 + len(vectors), dtype=np.int64)  # labels are not row numbers
    check = recall.prepare(labels, vectors, Metric.L2)
    assert check is not None

    def exact(i: int, band: float, mask: np.ndarray) -> np.ndarray:
        keep = check.allowed[band] & (labels != check.query_labels[i])
        rows = np.flatnonzero(keep)
        distances = np.linalg.norm(vectors[rows] - check.queries[i], axis=1)
        found = labels[rows[np.argsort(distances)[:11]]]
        assert mask[found].all()  # the mask and the allowed rows agree
        return found

    def far(i: int, band: float, mask: np.ndarray) -> np.ndarray:
        rows = np.flatnonzero(check.allowed[band])
        distances = np.linalg.norm(vectors[rows] - check.queries[i], axis=1)
        return labels[rows[np.argsort(-distances)[:10]]]

    perfect = recall.measure(check, exact)
    assert perfect == dict.fromkeys(recall.BANDS, 1.0)
    assert all(recall.meets(perfect, s) for s in (1.0, 0.3, 0.01))
    worst = recall.measure(check, far)
    assert max(worst.values()) < 0.2 and not recall.meets(worst, 0.5)


def test_too_few_members_are_not_checked_and_count_as_meeting() -> None:
    vectors = clustered(500)
    assert recall.prepare(np.arange(500), vectors, Metric.COSINE) is None
    assert recall.meets(None, 0.01)


def test_a_graph_measures_itself_per_band_and_survives_persistence() -> None:
    vectors = clustered(4000)
    labels = np.arange(len(vectors), dtype=np.int64)
    graph = HnswGraph(16, Metric.L2)
    graph.build(labels, vectors)
    graph.calibrate(labels, vectors, ef=64)
    assert graph.recall_by_band is not None and set(graph.recall_by_band) == set(recall.BANDS)
    assert graph.ef_floor in (64, 128, 256, 512)
    assert graph.recall >= 0.96 or graph.ef_floor == 512
    restored = HnswGraph.from_bytes(graph.to_bytes())
    assert restored.recall_by_band == graph.recall_by_band
    assert (restored.ef_floor, restored.recall) == (graph.ef_floor, graph.recall)


def test_queries_from_outside_the_members_are_judged_against_the_members() -> None:
    vectors = clustered(3000)
    members, outsiders = np.arange(0, 2000), np.arange(2000, 2064)
    check = recall.prepare(
        members, vectors[:2000], Metric.L2, query_labels=outsiders, query_vectors=vectors[2000:2064]
    )
    assert check is not None and len(check.queries) == 64
    for i, truth in enumerate(check.expected[1.0]):
        distances = np.linalg.norm(vectors[:2000] - vectors[2000 + i], axis=1)
        assert truth == set(np.argsort(distances)[:10].tolist())
