"""HnswGraph on its own: membership, the arena's distance conventions, growth, persistence and
the gate that lets readers with different `ef` and a writer share one hnswlib index.

Graph answers are approximate in general; on a few hundred points with a large `ef` hnswlib is
exact in practice, which is what the convention tests rely on. The concurrency test needs no
such luck: hnswlib is deterministic for a given sequence of writes (seeded levels, one insert
thread), so every answer a reader gets while the writer runs must equal the single-threaded
answer of one of the states the writer passed through while that reader was searching.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from index.arena import Metric
from index.hnsw import GraphParams, HnswGraph
from tests.index.reference import brute_distances

DIM = 16
CLUSTERS = 12
K = 10
BIG_EF = 400


def clustered(n: int, seed: int) -> np.ndarray:
    """Gaussian clusters around fixed centres (the same centres for every seed)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(CLUSTERS, DIM)) * 3
    return (centres[rng.integers(CLUSTERS, size=n)] + rng.normal(size=(n, DIM))).astype(np.float32)


class Model:
    """What the graph must hold: label -> vector of its live members."""

    def __init__(self) -> None:
        self.vectors: dict[int, np.ndarray] = {}

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        for label, vector in zip(labels.tolist(), vectors, strict=True):
            self.vectors[label] = vector

    def remove(self, labels: np.ndarray) -> None:
        for label in labels.tolist():
            self.vectors.pop(label, None)

    def exact(self, query: np.ndarray, k: int, metric: Metric) -> tuple[np.ndarray, np.ndarray]:
        labels = np.asarray(sorted(self.vectors), dtype=np.int64)
        distances = brute_distances(
            np.stack([self.vectors[x] for x in labels.tolist()]), query, metric
        )
        order = np.argsort(distances, kind="stable")[:k]
        return labels[order], distances[order]


def assert_exact_answer(
    graph: HnswGraph, model: Model, query: np.ndarray, k: int, what: str
) -> None:
    labels, distances = graph.search(query, k, BIG_EF)
    want_labels, want_distances = model.exact(query, k, graph.metric)
    assert labels.dtype == np.int64 and distances.dtype == np.float32, what
    assert labels.tolist() == want_labels.tolist(), what
    np.testing.assert_allclose(distances, want_distances, rtol=1e-4, atol=1e-4, err_msg=what)


def test_new_graph_is_empty_and_answers_nothing() -> None:
    graph = HnswGraph(DIM, Metric.COSINE)
    labels, distances = graph.search(clustered(1, 1)[0], K, 50)
    assert len(labels) == len(distances) == 0
    assert graph.slots == 0 and graph.tombstone_fraction == 0.0


@pytest.mark.parametrize("metric", list(Metric))
def test_search_uses_the_arena_distance_conventions(metric: Metric) -> None:
    data = clustered(500, 1)
    if metric is Metric.IP:
        data /= np.linalg.norm(data, axis=1, keepdims=True) * 1.5  # norms 2/3: dots below 1
    graph = HnswGraph(DIM, metric)
    labels = np.arange(1000, 1500, dtype=np.int64)  # labels are arena rows, not 0..n
    graph.build(labels, data)
    model = Model()
    model.add(labels, data)
    queries = clustered(20, 2)
    if metric is Metric.IP:
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for i, query in enumerate(queries):
        assert_exact_answer(graph, model, query, K, f"{metric} query {i}")
    # l2 is the Euclidean distance, not its square (hnswlib's own convention).
    if metric is Metric.L2:
        got_labels, got = graph.search(queries[0], 1, BIG_EF)
        diff = data[got_labels[0] - 1000] - queries[0]
        assert got[0] == pytest.approx(np.sqrt(diff @ diff), rel=1e-5)


def test_add_replace_remove_and_readd() -> None:
    metric = Metric.L2
    graph, model = HnswGraph(DIM, metric), Model()
    data = clustered(600, 3)
    labels = np.arange(600, dtype=np.int64)
    graph.add(labels, data)
    model.add(labels, data)
    assert set(graph.members) == set(range(600)) and not graph.tombstones
    query = clustered(1, 4)[0]
    assert_exact_answer(graph, model, query, K, "after add")

    # Replace: the nearest point moves far away, and a far point moves onto the query.
    nearest, _ = graph.search(query, 1, BIG_EF)
    far = int(model.exact(query, 600, metric)[0][-1])
    moved = np.stack([query + 100.0, query + 1e-3]).astype(np.float32)
    graph.add(np.asarray([nearest[0], far]), moved)
    model.add(np.asarray([nearest[0], far]), moved)
    assert len(graph.members) == 600 and graph.slots == 600  # replaced in place
    top, distances = graph.search(query, K, BIG_EF)
    assert top[0] == far and distances[0] == pytest.approx(np.sqrt(DIM) * 1e-3, rel=1e-3)
    assert nearest[0] not in top.tolist()
    assert_exact_answer(graph, model, query, K, "after replace")

    # Remove: gone from answers, still a slot (a tombstone).
    doomed = model.exact(query, 5, metric)[0]
    graph.remove(doomed)
    model.remove(doomed)
    assert set(graph.tombstones) == set(doomed.tolist())
    assert len(graph.members) == 595 and graph.slots == 600
    assert graph.tombstone_fraction == pytest.approx(5 / 600)
    assert_exact_answer(graph, model, query, K, "after remove")
    graph.remove(doomed)  # removing again changes nothing
    graph.remove(np.asarray([10_000]))  # nor does removing a label never added
    assert set(graph.tombstones) == set(doomed.tolist()) and len(graph.members) == 595

    # Re-add a removed label with a new vector: it is a member again, found at the new place.
    assert far in doomed.tolist()  # the point moved onto the query went with the nearest five
    revived = int(doomed[-1])
    vector = (query + 2e-3)[None, :].astype(np.float32)
    graph.add(np.asarray([revived]), vector)
    model.add(np.asarray([revived]), vector)
    assert revived in graph.members and revived not in graph.tombstones
    assert graph.slots == 600 and len(graph.tombstones) == 4
    assert_exact_answer(graph, model, query, K, "after re-add")
    top, distances = graph.search(query, 1, BIG_EF)
    assert top[0] == revived and distances[0] == pytest.approx(np.sqrt(DIM) * 2e-3, rel=1e-3)


def test_k_beyond_members_answers_every_member() -> None:
    graph = HnswGraph(DIM, Metric.COSINE)
    data = clustered(30, 5)
    graph.add(np.arange(30), data)
    graph.remove(np.arange(20))
    labels, distances = graph.search(data[25], 50, 50)
    assert sorted(labels.tolist()) == list(range(20, 30))
    assert np.all(np.diff(distances) >= 0)


def test_grows_beyond_the_initial_capacity() -> None:
    graph, model = HnswGraph(DIM, Metric.COSINE), Model()
    initial = graph._index.get_max_elements()
    data = clustered(3 * initial, 6)
    for start in range(0, len(data), 500):  # batches that cross the capacity mid-batch
        labels = np.arange(start, min(start + 500, len(data)), dtype=np.int64)
        graph.add(labels, data[labels])
        model.add(labels, data[labels])
    assert len(graph.members) == len(data) > initial
    assert graph._index.get_max_elements() >= len(data)
    for i, query in enumerate(clustered(10, 7)):
        assert_exact_answer(graph, model, query, K, f"query {i}")


@pytest.mark.parametrize("metric", list(Metric))
def test_bytes_round_trip_answers_identically(metric: Metric) -> None:
    graph = HnswGraph(DIM, metric, GraphParams(m=8, ef_construction=50, seed=3))
    data = clustered(1500, 8)  # past the initial capacity: a resized index
    labels = np.arange(1500, dtype=np.int64) * 3
    graph.build(labels, data)
    graph.remove(labels[:100])
    graph.add(labels[:10], clustered(10, 9))  # re-added with new vectors
    graph.pending.update([1, 2, 3])  # the owner's business: not part of the bytes
    queries = clustered(30, 10)
    before = {ef: [graph.search(q, K, ef) for q in queries] for ef in (10, 64, 300)}

    restored = HnswGraph.from_bytes(graph.to_bytes())
    assert restored.dim == DIM and restored.metric is metric
    assert restored.params == graph.params
    assert restored.members == graph.members and restored.tombstones == graph.tombstones
    assert not restored.pending
    assert restored.memory_bytes() == graph.memory_bytes()
    for ef, answers in before.items():
        for query, (labels_before, distances_before) in zip(queries, answers, strict=True):
            labels_after, distances_after = restored.search(query, K, ef)
            assert labels_after.tolist() == labels_before.tolist(), ef
            assert distances_after.tobytes() == distances_before.tobytes(), ef
    # The copy is independent and still writable.
    restored.remove(labels[100:200])
    assert len(graph.members) == 1410 and len(restored.members) == 1310


def test_from_bytes_rejects_another_format() -> None:
    import pickle

    graph = HnswGraph(DIM, Metric.L2)
    graph.add(np.arange(5), clustered(5, 11))
    state, members, tombstones = pickle.loads(graph.to_bytes())
    forged = pickle.dumps(((99, *state[1:]), members, tombstones))
    with pytest.raises(ValueError, match="format 99"):
        HnswGraph.from_bytes(forged)


# -- concurrency ---------------------------------------------------------------------------


def writer_steps(seed: int) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """A fixed sequence of single-gate writes: new labels (past the initial capacity),
    replacements, removals, re-adds of removed labels."""
    rng = np.random.default_rng(seed)
    steps: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    next_label, removed = 800, []
    for i in range(16):
        kind = ("add", "replace", "remove", "readd")[i % 4]
        if kind == "add":
            labels = np.arange(next_label, next_label + 120, dtype=np.int64)
            next_label += 120
        elif kind == "replace":
            labels = rng.choice(next_label, size=60, replace=False).astype(np.int64)
            labels = np.setdiff1d(labels, removed)
        elif kind == "remove":
            labels = rng.choice(next_label, size=50, replace=False).astype(np.int64)
            labels = np.setdiff1d(labels, removed)
            removed = sorted(set(removed) | set(labels.tolist()))
        else:
            labels = np.asarray(removed[:25], dtype=np.int64)
            removed = removed[25:]
        vectors = None if kind == "remove" else clustered(len(labels), 100 + i)
        steps.append(("remove" if kind == "remove" else "add", labels, vectors))
    return steps


def apply_step(graph: HnswGraph, step: tuple[str, np.ndarray, np.ndarray | None]) -> None:
    kind, labels, vectors = step
    if kind == "add":
        graph.add(labels, vectors)
    else:
        graph.remove(labels)


def test_readers_with_different_ef_and_a_writer_share_one_graph() -> None:
    params = GraphParams(m=4, ef_construction=20, seed=11)  # small: low ef really costs recall
    base = clustered(800, 12)
    steps = writer_steps(13)
    queries = clustered(24, 14)
    efs = (10, 24, 80, 250)

    # Single-threaded: the answer to every (query, ef) in every state the writer passes through.
    reference = HnswGraph(DIM, Metric.L2, params)
    reference.build(np.arange(800), base)
    expected: list[dict[tuple[int, int], tuple[list[int], bytes]]] = []

    def record() -> None:
        answers = {}
        for q, query in enumerate(queries):
            for ef in efs:
                labels, distances = reference.search(query, K, ef)
                answers[(q, ef)] = (labels.tolist(), distances.tobytes())
        expected.append(answers)

    record()
    for step in steps:
        apply_step(reference, step)
        record()
    assert reference._index.get_max_elements() > 1024  # the writer resizes the index
    # ef matters on this graph, so a reader searching with another reader's ef would show.
    differing = sum(expected[-1][(q, 10)] != expected[-1][(q, 250)] for q in range(len(queries)))
    assert differing >= 3, differing

    # The same writes from a writer thread, while readers with different ef search.
    graph = HnswGraph(DIM, Metric.L2, params)
    graph.build(np.arange(800), base)
    done = [0]  # states completed by the writer
    searches = [0]  # searches completed by all readers
    progress = threading.Condition()
    start = threading.Barrier(6)
    failures: list[str] = []
    seen: list[tuple[int, int, int, int, list[int], bytes]] = []

    def writer() -> None:
        start.wait()
        for i, step in enumerate(steps):
            if i:
                # Let readers in between writes (the gate favours a waiting writer): wait
                # until they have searched a few times more, so searches overlap every state.
                with progress:
                    target = searches[0] + 12
                    progress.wait_for(lambda target=target: searches[0] >= target, timeout=30)
            apply_step(graph, step)
            done[0] += 1

    def reader(index: int) -> None:
        rng = np.random.default_rng(index)
        start.wait()
        mine = []
        try:
            while True:
                finished = done[0] == len(steps)
                q = int(rng.integers(len(queries)))
                ef = efs[(index + int(rng.integers(2))) % len(efs)]
                before = done[0]
                labels, distances = graph.search(queries[q], K, ef)
                after = done[0]
                mine.append((q, ef, before, after, labels.tolist(), distances.tobytes()))
                with progress:
                    searches[0] += 1
                    progress.notify_all()
                if finished and len(mine) > 100:
                    break
        except Exception as exc:  # a crash inside hnswlib would end the process instead
            failures.append(f"reader {index}: {exc!r}")
        with progress:
            seen.extend(mine)

    def writer_guarded() -> None:
        try:
            writer()
        except Exception as exc:
            failures.append(f"writer: {exc!r}")
            done[0] = len(steps)

    threads = [threading.Thread(target=writer_guarded)]
    threads += [threading.Thread(target=reader, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a thread is stuck (a gate deadlock?)"
    assert not failures, failures

    assert graph.members == reference.members and graph.tombstones == reference.tombstones
    during = 0
    for q, ef, before, after, labels, distances in seen:
        # The state searched is one the writer completed between the two reads of `done`, or
        # the one it was finishing (its counter is bumped after it leaves the gate).
        states = range(before, min(after + 1, len(steps)) + 1)
        assert any(expected[s][(q, ef)] == (labels, distances) for s in states), (
            f"query {q} ef {ef} between states {before} and {after}: {labels} matches no "
            "single-threaded answer of those states"
        )
        during += after < len(steps)
    assert during >= 12 * (len(steps) - 1), f"only {during} searches overlapped the writer"
