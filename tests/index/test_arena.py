from __future__ import annotations

import numpy as np
import pytest

from index.arena import Metric, VectorArena
from tests.index.reference import brute_distances


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)) * 4
    return (centers[rng.integers(clusters, size=n)] + rng.normal(size=(n, dim))).astype(np.float32)


# 1 and 4 queries are scanned one by one by the compiled kernel, 20 share a matrix product.
@pytest.mark.parametrize("n_queries", [1, 4, 20])
@pytest.mark.parametrize("metric", list(Metric))
def test_exact_search_matches_brute_force_on_a_label_subset(metric: Metric, n_queries: int) -> None:
    data = clustered(3000, 24, 12, seed=1)
    arena = VectorArena(24, metric, initial_capacity=16)
    labels = arena.allocate(len(data))
    arena.put(labels, data)
    subset = np.sort(np.random.default_rng(2).choice(labels, 700, replace=False))
    queries = clustered(n_queries, 24, 12, seed=3)
    for query, top in zip(queries, arena.search(queries, subset, 10), strict=True):
        expected = brute_distances(data[subset], query, metric)
        order = np.argsort(expected, kind="stable")[:10]
        np.testing.assert_array_equal(top.labels, subset[order])
        np.testing.assert_allclose(top.distances, expected[order], rtol=1e-4, atol=1e-4)


def test_single_query_and_batch_agree() -> None:
    data = clustered(500, 16, 5, seed=4)
    arena = VectorArena(16, Metric.L2)
    labels = arena.allocate(500)
    arena.put(labels, data)
    queries = clustered(8, 16, 5, seed=5)
    batch = arena.search(queries, labels, 7)
    for query, top in zip(queries, batch, strict=True):
        [single] = arena.search(query[None, :], labels, 7)
        np.testing.assert_array_equal(single.labels, top.labels)


def test_k_above_the_set_returns_the_whole_set_sorted() -> None:
    arena = VectorArena(2, Metric.L2)
    labels = arena.allocate(3)
    arena.put(labels, np.array([[3, 0], [1, 0], [2, 0]], dtype=np.float32))
    [top] = arena.search(np.array([[0, 0]], dtype=np.float32), labels, 10)
    assert top.labels.tolist() == [1, 2, 0]
    np.testing.assert_allclose(top.distances, [1, 2, 3])


def test_deleted_labels_are_reused_lowest_first_and_growth_keeps_rows() -> None:
    arena = VectorArena(4, Metric.IP, initial_capacity=16)
    data = clustered(100, 4, 3, seed=6)
    labels = arena.allocate(100)
    arena.put(labels, data)
    arena.remove(np.array([40, 7, 90]))
    assert arena.count == 97
    assert arena.allocate(2).tolist() == [7, 40]
    assert arena.allocate(2).tolist() == [90, 100]
    np.testing.assert_array_equal(arena.vector(99), data[99])
    assert not arena.is_live(7)


def test_restore_free_list_after_recovery() -> None:
    arena = VectorArena(2, Metric.L2)
    arena.put(np.array([0, 3, 5]), np.ones((3, 2), dtype=np.float32))
    arena.restore_free_list()
    assert arena.count == 3
    assert arena.allocate(4).tolist() == [1, 2, 4, 6]


def test_empty_label_set_returns_no_hits() -> None:
    arena = VectorArena(3, Metric.COSINE)
    [top] = arena.search(np.ones((1, 3), dtype=np.float32), np.empty(0, dtype=np.int64), 5)
    assert len(top.labels) == 0


@pytest.mark.parametrize("n_queries", [1, 20])
@pytest.mark.parametrize("metric", list(Metric))
def test_ties_are_broken_by_label_on_either_path(metric: Metric, n_queries: int) -> None:
    """Three copies of each vector: equally near, so the label decides which make the top k
    and in what order, whichever path (the kernel's heap, the product's partition) found them
    and in whatever order the labels came. Queries that are stored vectors (a self-distance
    comes out exact) and queries that are not (the distances are rounded to float32)."""
    base = clustered(40, 8, 4, seed=6)
    data = np.concatenate([base, base, base])
    arena = VectorArena(8, metric)
    labels = arena.allocate(len(data))
    arena.put(labels, data)
    rng = np.random.default_rng(7)
    for query in (base[0], base[17], *clustered(6, 8, 4, seed=9)):
        queries = np.repeat(query[None, :], n_queries, axis=0)
        answers = [
            arena.search(queries, order, 7)[0] for order in (labels, rng.permutation(labels))
        ]
        answers.append(arena.search(queries, labels[::-1].copy(), 7)[0])
        first = answers[0]
        for other in answers[1:]:
            np.testing.assert_array_equal(other.labels, first.labels)
        found = set(first.labels.tolist())
        for label in first.labels.tolist():  # a copy with a smaller label is never left out
            assert all(copy in found for copy in range(label % 40, label, 40)), first.labels
        by_distance = first.distances.tolist()
        assert by_distance == sorted(by_distance)
        for i in range(1, len(by_distance)):
            if by_distance[i] == by_distance[i - 1]:
                assert first.labels[i] > first.labels[i - 1]


def test_a_nan_distance_never_hides_the_others() -> None:
    top = VectorArena.top_k(
        np.arange(4, dtype=np.int64), np.array([np.nan, 0.5, np.nan, 0.2], dtype=np.float32), 3
    )
    assert top.labels[:2].tolist() == [3, 1] and len(top.labels) == 3


@pytest.mark.parametrize("n_queries", [1, 5])
def test_labels_outside_the_arena_are_refused_on_either_path(n_queries: int) -> None:
    arena = VectorArena(2, Metric.L2)
    arena.put(arena.allocate(3), np.eye(3, 2, dtype=np.float32))
    queries = np.ones((n_queries, 2), dtype=np.float32)
    for labels in ([-1, 0], [0, 3]):
        with pytest.raises(IndexError):
            arena.search(queries, np.array(labels, dtype=np.int64), 2)
