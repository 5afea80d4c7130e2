"""The Curator index on its own (VectorArena + ClusterTree + Curator), on clustered synthetic data.

The layout of a tenant's sub-tree is a function of its pair set alone: a tenant is split at a
node exactly when it has more than `max_shortlist` pairs there (and the node is not a leaf),
otherwise its pairs there are one shortlist. So an index reached through any sequence of
inserts, grants, revokes and deletes must equal, shortlist for shortlist, a fresh bulk build of
the same pairs, and must answer every search the same way. Several tests lean on that.
"""

from __future__ import annotations

import struct
import zlib
from collections import defaultdict

import numpy as np
import pytest

from index.arena import Metric, VectorArena
from index.cluster_tree import ClusterTree
from index.curator import Curator
from tests.index.reference import brute_distances

DIM = 16
POINTS = 3000
TENANTS = 20
CLUSTERS = 24
MAX_SHORTLIST = 24
BRANCHING = 6
DEPTH = 2
K = 10


# -- data and models ----------------------------------------------------------------------


def centres(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(CLUSTERS, DIM)) * 3


def clustered(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Gaussian clusters around fixed centres (the same centres for every seed)."""
    rng = np.random.default_rng(seed)
    means = centres()[rng.integers(CLUSTERS, size=n)] + shift
    return (means + rng.normal(size=(n, DIM))).astype(np.float32)


def zipf(n: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1)
    return weights / weights.sum()


def exact_top(arena: VectorArena, labels: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    labels = np.asarray(sorted(labels), dtype=np.int64)
    if len(labels) == 0:
        return labels
    distances = brute_distances(arena.rows(labels), query, arena.metric)
    return labels[np.argsort(distances, kind="stable")[:k]]


def assert_exact(
    arena: VectorArena,
    got_labels: np.ndarray,
    got_distances: np.ndarray,
    readable: np.ndarray,
    query: np.ndarray,
    k: int,
    what: str,
) -> None:
    """`got` is the exact top-k of `query` among `readable` (ties at the k-th in any order)."""
    readable = np.asarray(sorted(readable), dtype=np.int64)
    assert len(got_labels) == min(k, len(readable)), what
    assert len(set(got_labels.tolist())) == len(got_labels), f"{what}: duplicates"
    assert set(got_labels.tolist()) <= set(readable.tolist()), f"{what}: unreadable label"
    if len(readable) == 0:
        return
    distances = brute_distances(arena.rows(readable), query, arena.metric)
    order = np.argsort(distances, kind="stable")
    true = dict(zip(readable.tolist(), distances.tolist(), strict=True))
    tol = 1e-4 * max(1.0, float(np.abs(distances).max()))
    np.testing.assert_allclose(got_distances, [true[x] for x in got_labels.tolist()], atol=tol)
    np.testing.assert_allclose(got_distances, distances[order[: len(got_labels)]], atol=tol)
    kth = distances[order[len(got_labels) - 1]]
    must = {int(readable[i]) for i in order if distances[i] < kth - tol}
    assert must <= set(got_labels.tolist()), f"{what}: missing {sorted(must - set(got_labels))}"


def structure(curator: Curator) -> tuple[dict, list[dict[int, int]]]:
    """What the index holds, independent of the order within shortlists."""
    lists = {key: frozenset(shortlist) for key, shortlist in curator.shortlists.items()}
    return lists, [dict(c) for c in curator.counts]


def indexed_pairs(curator: Curator) -> set[tuple[int, int]]:
    return {(label, tenant) for (_, tenant), sl in curator.shortlists.items() for label in sl}


def non_root_shortlists(curator: Curator) -> int:
    return sum(1 for node, _ in curator.shortlists if node != 0)


def layout(curator: Curator, tenant: int) -> tuple[set[int], set[int]]:
    """(nodes holding a shortlist of the tenant, nodes where the tenant is split)."""
    lists, split = set(), set()
    for node in range(curator.tree.node_count):
        if (node, tenant) in curator.shortlists:
            lists.add(node)
        elif curator.counts[node].get(tenant, 0) > 0:
            split.add(node)
    return lists, split


def make_arena(data: np.ndarray, metric: Metric) -> tuple[VectorArena, np.ndarray]:
    arena = VectorArena(DIM, metric, initial_capacity=16)
    labels = arena.allocate(len(data))
    arena.put(labels, data)
    return arena, labels


def train(data: np.ndarray, metric: Metric, seed: int = 0) -> ClusterTree:
    return ClusterTree.train(data, metric, branching=BRANCHING, depth=DEPTH, seed=seed)


def random_pairs(labels: np.ndarray, seed: int) -> tuple[dict[int, int], dict[int, set[int]]]:
    """Zipf-sized owners, each point shared with 0-2 other tenants (also Zipf)."""
    rng = np.random.default_rng(seed)
    owners = rng.choice(TENANTS, size=len(labels), p=zipf(TENANTS))
    owner_of = dict(zip(labels.tolist(), owners.tolist(), strict=True))
    grantees: dict[int, set[int]] = {}
    for label in labels.tolist():
        picks = rng.choice(TENANTS, size=int(rng.integers(0, 3)), replace=False, p=zipf(TENANTS))
        grantees[label] = {int(g) for g in picks} - {owner_of[label]}
    return owner_of, grantees


def pair_set(owner_of: dict[int, int], grantees: dict[int, set[int]]) -> set[tuple[int, int]]:
    pairs = {(label, owner) for label, owner in owner_of.items()}
    pairs |= {(label, g) for label, gs in grantees.items() for g in gs}
    return pairs


def readable_sets(pairs: set[tuple[int, int]]) -> dict[int, np.ndarray]:
    readers: dict[int, list[int]] = defaultdict(list)
    for label, tenant in pairs:
        readers[tenant].append(label)
    return {t: np.asarray(sorted(ls), dtype=np.int64) for t, ls in readers.items()}


def bulk(curator: Curator, pairs: set[tuple[int, int]], seed: int = 0) -> None:
    ordered = sorted(pairs)
    np.random.default_rng(seed).shuffle(ordered)
    array = np.asarray(ordered, dtype=np.int64).reshape(-1, 2)
    curator.insert_many(array[:, 0], array[:, 1])


class Built:
    def __init__(self, metric: Metric, max_shortlist: int = MAX_SHORTLIST):
        self.data = clustered(POINTS, seed=1)
        self.queries = clustered(40, seed=2)
        self.arena, self.labels = make_arena(self.data, metric)
        self.tree = train(self.data, metric)
        self.owner_of, self.grantees = random_pairs(self.labels, seed=3)
        self.pairs = pair_set(self.owner_of, self.grantees)
        self.readable = readable_sets(self.pairs)
        self.curator = Curator(self.tree, self.arena, max_shortlist)
        bulk(self.curator, self.pairs)


@pytest.fixture(scope="module", params=list(Metric), ids=lambda m: m.value)
def built(request: pytest.FixtureRequest) -> Built:
    return Built(request.param)


# -- randomized sequences -----------------------------------------------------------------


class Model:
    """The exact pair set the index must hold, kept in step with the operations."""

    def __init__(self) -> None:
        self.owner_of: dict[int, int] = {}
        self.grantees: dict[int, set[int]] = {}
        self.pairs: set[tuple[int, int]] = set()

    def readers(self, label: int) -> list[int]:
        return [self.owner_of[label], *sorted(self.grantees[label])]


class Sequence:
    """One seeded run of insert / bulk insert / grant / revoke / delete / re-insert."""

    def __init__(self, seed: int, metric: Metric):
        self.rng = np.random.default_rng(seed)
        self.data = clustered(POINTS, seed=100 + seed)
        self.moved = clustered(POINTS, seed=200 + seed)  # other vectors for re-inserted labels
        self.queries = clustered(8, seed=400 + seed)
        self.arena, labels = make_arena(self.data, metric)
        self.tree = train(self.data[:1500], metric, seed=seed)
        self.curator = Curator(self.tree, self.arena, max_shortlist=16)
        self.model = Model()
        self.unused = labels.tolist()  # labels never indexed
        self.rng.shuffle(self.unused)
        self.deleted: list[int] = []  # labels indexed once, deleted since
        self.splits = self.merges = 0
        self.steps = 0
        self.max_non_root = 0

    def _observe(self, tenants: list[int], before: dict[int, tuple[set[int], set[int]]]) -> None:
        for tenant in tenants:
            _, split_before = before[tenant]
            lists_after, split_after = layout(self.curator, tenant)
            if split_after - split_before:
                self.splits += 1
            if split_before & lists_after:
                self.merges += 1

    def _step(self, tenants: list[int], action) -> None:  # type: ignore[no-untyped-def]
        before = {t: layout(self.curator, t) for t in tenants}
        probe = self.steps % 3 == 0
        if probe:  # a search first, so that the step must invalidate what it cached
            self.curator.search(self.queries[0], tenants[0], K, ef=8)
        action()
        self._observe(tenants, before)
        self.curator.check_invariants(self.model.pairs)
        if probe:
            tenant = tenants[0]
            labels = np.asarray([x for x, t in self.model.pairs if t == tenant], dtype=np.int64)
            query = self.queries[self.steps % len(self.queries)]
            top, _ = self.curator.search(query, tenant, K, ef=len(labels) + K)
            assert_exact(self.arena, top.labels, top.distances, labels, query, K, f"t{tenant}")
        self.steps += 1
        self.max_non_root = max(self.max_non_root, non_root_shortlists(self.curator))

    def _new_pairs(self) -> tuple[int, set[int]]:
        owner = int(self.rng.choice(TENANTS, p=zipf(TENANTS)))
        picks = self.rng.choice(TENANTS, size=int(self.rng.integers(0, 3)), replace=False)
        return owner, {int(g) for g in picks} - {owner}

    def _add_to_model(self, label: int, owner: int, grantees: set[int]) -> None:
        self.model.owner_of[label] = owner
        self.model.grantees[label] = set(grantees)
        self.model.pairs.add((label, owner))
        self.model.pairs |= {(label, g) for g in grantees}

    def _take_label(self) -> int | None:
        """A fresh label, or a deleted one re-inserted (half the time with another vector)."""
        if self.deleted and (not self.unused or self.rng.random() < 0.4):
            label = self.deleted.pop(int(self.rng.integers(len(self.deleted))))
            if self.rng.random() < 0.5:
                self.arena.put(np.asarray([label]), self.moved[label][None, :])
            return label
        return self.unused.pop() if self.unused else None

    def insert(self) -> None:
        label = self._take_label()
        if label is None:
            return
        owner, grantees = self._new_pairs()

        def action() -> None:
            self.curator.place(np.asarray([label]))
            for tenant in [owner, *sorted(grantees)]:
                self.curator.insert(label, tenant)
            self._add_to_model(label, owner, grantees)

        self._step([owner, *grantees], action)

    def insert_many(self) -> None:
        taken = [self._take_label() for _ in range(int(self.rng.integers(3, 25)))]
        labels = [label for label in taken if label is not None]
        if not labels:
            return
        batch = {label: self._new_pairs() for label in labels}
        tenants = sorted({t for o, gs in batch.values() for t in (o, *gs)})

        def action() -> None:
            pairs = [(x, t) for x, (o, gs) in batch.items() for t in (o, *gs)]
            array = np.asarray(pairs, dtype=np.int64)
            self.curator.insert_many(array[:, 0], array[:, 1])
            for label, (owner, grantees) in batch.items():
                self._add_to_model(label, owner, grantees)

        self._step(tenants, action)

    def grant(self) -> None:
        if not self.model.owner_of:
            return
        label = self._some_live_label()
        tenant = int(self.rng.choice(TENANTS, p=zipf(TENANTS)))
        if (label, tenant) in self.model.pairs:
            return

        def action() -> None:
            self.curator.grant(label, tenant)
            self.model.grantees[label].add(tenant)
            self.model.pairs.add((label, tenant))

        self._step([tenant], action)

    def revoke(self) -> None:
        shared = [x for x in self._sample_live(30) if self.model.grantees[x]]
        if not shared:
            return
        label = shared[0]
        tenant = int(self.rng.choice(sorted(self.model.grantees[label])))

        def action() -> None:
            self.curator.revoke(label, tenant)
            self.model.grantees[label].discard(tenant)
            self.model.pairs.discard((label, tenant))

        self._step([tenant], action)

    def delete(self) -> None:
        if not self.model.owner_of:
            return
        label = self._some_live_label()
        readers = self.model.readers(label)

        def action() -> None:
            self.curator.delete(label, readers)
            del self.model.owner_of[label]
            del self.model.grantees[label]
            self.model.pairs -= {(label, t) for t in readers}

        self._step(readers, action)
        self.deleted.append(label)

    def _some_live_label(self) -> int:
        return self._sample_live(1)[0]

    def _sample_live(self, n: int) -> list[int]:
        live = list(self.model.owner_of)
        picks = self.rng.choice(len(live), size=min(n, len(live)), replace=False)
        return [live[i] for i in picks.tolist()]

    def run(self, steps: int, weights: dict[str, float]) -> None:
        names = list(weights)
        p = np.asarray([weights[n] for n in names], dtype=np.float64)
        for _ in range(steps):
            getattr(self, names[int(self.rng.choice(len(names), p=p / p.sum()))])()


GROW = {"insert": 0.45, "insert_many": 0.1, "grant": 0.3, "revoke": 0.1, "delete": 0.05}
SHRINK = {"insert": 0.05, "insert_many": 0.01, "grant": 0.04, "revoke": 0.4, "delete": 0.5}
MIXED = {"insert": 0.3, "insert_many": 0.05, "grant": 0.25, "revoke": 0.2, "delete": 0.2}


@pytest.mark.parametrize(("seed", "metric"), [(0, Metric.L2), (1, Metric.COSINE), (2, Metric.IP)])
def test_invariants_hold_after_every_step_of_random_sequences(seed: int, metric: Metric) -> None:
    run = Sequence(seed, metric)
    run.run(350, GROW)
    grown_non_root = non_root_shortlists(run.curator)
    splits_while_growing = run.splits
    run.run(450, SHRINK)
    shrunk_non_root = non_root_shortlists(run.curator)
    run.run(250, MIXED)
    print(
        f"seed {seed}: {run.steps} steps, {run.splits} splits, {run.merges} merges, "
        f"non-root shortlists {grown_non_root} -> {shrunk_non_root} (max {run.max_non_root}), "
        f"{len(run.model.pairs)} pairs at the end"
    )

    assert run.steps > 800
    assert splits_while_growing > 5, "the sequence never split a shortlist"
    assert run.merges > 5, "the sequence never merged a split tenant back"
    assert grown_non_root > 20, grown_non_root
    assert shrunk_non_root < grown_non_root, (shrunk_non_root, grown_non_root)
    assert indexed_pairs(run.curator) == run.model.pairs

    # Whatever path led here, the index equals a fresh bulk build of the same pairs...
    fresh = Curator(run.tree, run.arena, max_shortlist=16)
    bulk(fresh, run.model.pairs, seed=seed)
    fresh.check_invariants(run.model.pairs)
    assert structure(run.curator) == structure(fresh)
    assert run.curator.pairs == fresh.pairs == len(run.model.pairs)

    # ... and searches are exact with an ef covering the tenant (moved vectors included).
    readable = readable_sets(run.model.pairs)
    queries = clustered(6, seed=300 + seed)
    for tenant in range(TENANTS):
        labels = readable.get(tenant, np.empty(0, dtype=np.int64))
        for query in queries:
            top, _ = run.curator.search(query, tenant, K, ef=len(labels) + K)
            assert_exact(run.arena, top.labels, top.distances, labels, query, K, f"t{tenant}")


def test_split_and_merge_at_the_threshold() -> None:
    data = clustered(400, seed=5)
    arena, labels = make_arena(data, Metric.L2)
    tree = train(data, Metric.L2)
    curator = Curator(tree, arena, max_shortlist=16)
    curator.place(labels)
    tenant = 7
    for label in labels[:16].tolist():
        curator.insert(label, tenant)
        curator.check_invariants()
    assert layout(curator, tenant) == ({0}, set())  # 16 pairs fit the root's shortlist
    curator.insert(int(labels[16]), tenant)  # the 17th splits the root
    curator.check_invariants({(int(x), tenant) for x in labels[:17]})
    lists, split = layout(curator, tenant)
    assert split == {0} and 0 not in lists and lists
    assert all(curator.tree.depth[n] >= 1 for n in lists)
    assert curator.counts[0][tenant] == 17
    curator.revoke(int(labels[3]), tenant)  # back to 16: merged into the root again
    expected = {(int(x), tenant) for x in labels[:17]} - {(int(labels[3]), tenant)}
    curator.check_invariants(expected)
    assert layout(curator, tenant) == ({0}, set())
    assert set(curator.shortlists[(0, tenant)]) == {x for x, _ in expected}
    # Revoking what is not indexed changes nothing; deleting the rest empties the tenant.
    curator.revoke(int(labels[3]), tenant)
    curator.revoke(int(labels[200]), tenant)
    curator.check_invariants(expected)
    for label, _ in sorted(expected):
        curator.delete(label, [tenant])
    curator.check_invariants(set())
    assert curator.pairs == 0 and not curator.shortlists
    assert all(not counts for counts in curator.counts)
    top, stats = curator.search(data[0], tenant, K)
    assert len(top.labels) == 0 and stats.shortlists_scanned == 0


def test_a_large_tenant_splits_down_to_the_leaves() -> None:
    data = clustered(2000, seed=6)
    arena, labels = make_arena(data, Metric.L2)
    curator = Curator(train(data, Metric.L2), arena, max_shortlist=16)
    curator.place(labels)
    for label in labels.tolist():
        curator.insert(label, 0)
    curator.check_invariants({(int(x), 0) for x in labels})
    lists, split = layout(curator, 0)
    tree = curator.tree
    assert all(tree.is_leaf(n) or len(curator.shortlists[(n, 0)]) <= 16 for n in lists)
    assert any(tree.is_leaf(n) and len(curator.shortlists[(n, 0)]) > 16 for n in lists)
    assert split and all(not tree.is_leaf(n) for n in split)
    # Deleting all but 16 merges every level back into one root shortlist.
    for label in labels[16:].tolist():
        curator.delete(label, [0])
    curator.check_invariants({(int(x), 0) for x in labels[:16]})
    assert layout(curator, 0) == ({0}, set())


def test_revoking_a_pair_that_is_not_indexed_is_a_no_op() -> None:
    data = clustered(400, seed=5)
    arena, labels = make_arena(data, Metric.L2)
    curator = Curator(train(data, Metric.L2), arena, max_shortlist=16)
    curator.place(labels[:100])
    for label in range(100):
        curator.insert(label, 1)
    expected = {(label, 1) for label in range(1, 100)}
    curator.delete(0, [1])
    curator.revoke(5, 2)  # placed, but not a pair of tenant 2: fine today
    curator.check_invariants(expected)
    curator.revoke(0, 1)  # deleted
    curator.revoke(150, 1)  # never placed
    curator.revoke(10**6, 1)  # past every label
    curator.check_invariants(expected)


# -- search -------------------------------------------------------------------------------


def test_search_with_a_large_ef_is_exact_for_every_tenant(built: Built) -> None:
    c = built.curator
    assert c.pairs == len(built.pairs)
    c.check_invariants(built.pairs)
    for tenant, labels in built.readable.items():
        for query in built.queries[:8]:
            top, stats = c.search(query, tenant, K, ef=len(labels))
            assert_exact(built.arena, top.labels, top.distances, labels, query, K, f"t{tenant}")
            assert stats.distances_computed == len(labels)  # nothing pruned, nothing twice
    top, _ = c.search(built.queries[0], TENANTS + 5, K, ef=64)  # a tenant with no pairs
    assert len(top.labels) == 0


def test_results_are_always_readable_and_never_short(built: Built) -> None:
    c = built.curator
    for tenant, labels in built.readable.items():
        allowed = set(labels.tolist())
        for ef in (1, 10, 32):
            for query in built.queries:
                top, stats = c.search(query, tenant, K, ef=ef, patience=1)
                assert set(top.labels.tolist()) <= allowed
                assert len(top.labels) == min(K, len(labels))
                assert len(set(top.labels.tolist())) == len(top.labels)
                assert np.all(np.diff(top.distances) >= 0)
                assert stats.distances_computed <= len(labels)
    # A big tenant at a small ef scans a fraction of its points.
    biggest = max(built.readable, key=lambda t: len(built.readable[t]))
    _, stats = c.search(built.queries[0], biggest, K, ef=16)
    assert stats.distances_computed < len(built.readable[biggest]) / 2
    assert stats.shortlists_scanned >= 1 and stats.nodes_visited > stats.shortlists_scanned


def recall(
    curator: Curator, arena: VectorArena, readable: dict[int, np.ndarray], queries, ef: int
) -> float:
    """Mean over tenants of the mean recall@K of their queries."""
    per_tenant = []
    for tenant, labels in sorted(readable.items()):
        if len(labels) < 3 * K:
            continue
        hits = []
        for query in queries:
            top, _ = curator.search(query, tenant, K, ef=ef, patience=2)
            truth = set(exact_top(arena, labels, query, K).tolist())
            hits.append(len(truth & set(top.labels.tolist())) / len(truth))
        per_tenant.append(np.mean(hits))
    return float(np.mean(per_tenant))


@pytest.mark.parametrize("metric", [Metric.L2, Metric.COSINE])
def test_deletes_and_revokes_leave_no_trace_and_keep_recall(metric: Metric) -> None:
    built = Built(metric)
    c, arena = built.curator, built.arena
    ef = 12  # low enough that recall is not trivially 1
    before = recall(c, arena, built.readable, built.queries, ef)

    rng = np.random.default_rng(9)
    deleted = set(rng.choice(built.labels, size=POINTS // 5, replace=False).tolist())
    shared = sorted((x, g) for x, gs in built.grantees.items() for g in gs if x not in deleted)
    picks = rng.choice(len(shared), size=len(shared) // 3, replace=False)
    revoked = {shared[i] for i in picks.tolist()}
    for label in sorted(deleted):
        c.delete(label, [built.owner_of[label], *sorted(built.grantees[label])])
    for label, tenant in sorted(revoked):
        c.revoke(label, tenant)
    pairs = {(x, t) for x, t in built.pairs if x not in deleted} - revoked
    c.check_invariants(pairs)
    readable = readable_sets(pairs)

    # A deleted point queried with its own vector, as each of its former readers: not there.
    for label in sorted(deleted)[:150]:
        for tenant in [built.owner_of[label], *built.grantees[label]]:
            top, _ = c.search(built.data[label], tenant, K, ef=ef, patience=2)
            assert label not in top.labels.tolist()
            assert set(top.labels.tolist()) <= set(readable.get(tenant, []))
    for label, tenant in sorted(revoked):
        top, _ = c.search(built.data[label], tenant, K, ef=ef, patience=2)
        assert label not in top.labels.tolist()
        assert set(top.labels.tolist()) <= set(readable.get(tenant, []))
        if (label, built.owner_of[label]) in pairs:  # its owner still finds it first
            top, _ = c.search(built.data[label], built.owner_of[label], 1, ef=ef)
            assert top.labels.tolist() == [label]

    after = recall(c, arena, readable, built.queries, ef)
    fresh = Curator(built.tree, arena, MAX_SHORTLIST)
    bulk(fresh, pairs)
    rebuilt = recall(fresh, arena, readable, built.queries, ef)
    print(f"{metric}: recall@{K} at ef {ef}: before {before:.4f} after {after:.4f} ({rebuilt:.4f})")
    assert after >= before - 0.02
    assert after == rebuilt  # no stale summaries: the same answers as a fresh build
    assert structure(c) == structure(fresh)
    for tenant in sorted(readable):
        for query in built.queries[:5]:
            a, sa = c.search(query, tenant, K, ef=ef, patience=2)
            b, sb = fresh.search(query, tenant, K, ef=ef, patience=2)
            np.testing.assert_array_equal(a.labels, b.labels)
            assert (sa.nodes_visited, sa.shortlists_scanned, sa.distances_computed) == (
                sb.nodes_visited,
                sb.shortlists_scanned,
                sb.distances_computed,
            )


def test_allowed_mask_restricts_results(built: Built) -> None:
    c, arena = built.curator, built.arena
    rng = np.random.default_rng(11)
    allowed = rng.random(arena.high_water) < 0.3
    for tenant, labels in built.readable.items():
        permitted = labels[allowed[labels]]
        for query in built.queries[:5]:
            top, _ = c.search(query, tenant, K, ef=len(labels), allowed=allowed)
            assert_exact(arena, top.labels, top.distances, permitted, query, K, f"t{tenant}")
            top, stats = c.search(query, tenant, K, ef=8, allowed=allowed, patience=1)
            assert allowed[top.labels].all()
            assert len(top.labels) == min(K, len(permitted))
            assert stats.distances_computed <= len(permitted)
    tenant = max(built.readable, key=lambda t: len(built.readable[t]))
    nothing = np.zeros(arena.high_water, dtype=bool)
    top, stats = c.search(built.queries[0], tenant, K, allowed=nothing)
    assert len(top.labels) == 0 and stats.distances_computed == 0
    few = np.zeros(arena.high_water, dtype=bool)
    chosen = built.readable[tenant][[0, 5, 9]]
    few[chosen] = True
    few[built.readable[(tenant + 1) % TENANTS][:50]] = True  # others' labels: still not readable
    top, _ = c.search(built.queries[0], tenant, 100, ef=3 * POINTS, allowed=few)
    readable_few = set(built.readable[tenant].tolist()) & set(np.flatnonzero(few).tolist())
    assert set(top.labels.tolist()) == readable_few


def test_insert_many_equals_one_by_one_inserts() -> None:
    data = clustered(POINTS, seed=21)
    arena, labels = make_arena(data, Metric.COSINE)
    tree = train(data, Metric.COSINE)
    owner_of, grantees = random_pairs(labels, seed=22)
    pairs = pair_set(owner_of, grantees)

    bulk_built = Curator(tree, arena, MAX_SHORTLIST)
    bulk(bulk_built, pairs, seed=1)
    bulk_built.check_invariants(pairs)

    one_by_one = Curator(tree, arena, MAX_SHORTLIST)
    one_by_one.place(labels)
    ordered = sorted(pairs)
    np.random.default_rng(2).shuffle(ordered)
    for label, tenant in ordered:
        one_by_one.insert(label, tenant)
    one_by_one.check_invariants(pairs)

    # In chunks: later chunks meet tenants already indexed (the incremental path), and a
    # tenant first seen in a later chunk is built top-down.
    chunked = Curator(tree, arena, MAX_SHORTLIST)
    late = {(x, t) for x, t in pairs if t == TENANTS - 1}
    rest = sorted(pairs - late)
    for chunk in (rest[:1000], rest[1000:4000], sorted(late), rest[4000:]):
        array = np.asarray(chunk, dtype=np.int64)
        chunked.insert_many(array[:, 0], array[:, 1])
        chunked.check_invariants()
    chunked.check_invariants(pairs)

    assert indexed_pairs(bulk_built) == indexed_pairs(one_by_one) == pairs
    assert structure(bulk_built) == structure(one_by_one) == structure(chunked)
    assert bulk_built.pairs == one_by_one.pairs == chunked.pairs == len(pairs)
    np.testing.assert_array_equal(
        bulk_built.leaf_of[: len(labels)], one_by_one.leaf_of[: len(labels)]
    )
    for tenant in range(TENANTS):
        a, _ = bulk_built.search(data[tenant], tenant, K, ef=16)
        b, _ = one_by_one.search(data[tenant], tenant, K, ef=16)
        np.testing.assert_array_equal(a.labels, b.labels)


# -- the tree -----------------------------------------------------------------------------


@pytest.mark.parametrize("metric", list(Metric))
def test_cluster_tree_round_trips(metric: Metric) -> None:
    data = clustered(POINTS, seed=31)
    tree = train(data, metric)
    raw = tree.to_bytes()
    back = ClusterTree.from_bytes(raw)
    assert back.metric is metric
    assert back.node_count == tree.node_count
    assert back.training_distance == tree.training_distance
    for name in ("centroids", "parent", "child_start", "child_count", "depth", "paths"):
        np.testing.assert_array_equal(getattr(back, name), getattr(tree, name), err_msg=name)
    leaves, distances = tree.assign(data)
    back_leaves, back_distances = back.assign(data)
    np.testing.assert_array_equal(back_leaves, leaves)
    np.testing.assert_array_equal(back_distances, distances)
    assert back.to_bytes() == raw
    assert tree.node_count == 1 + BRANCHING + BRANCHING**2  # the data splits everywhere
    assert all(tree.is_leaf(n) for n in leaves.tolist())


def test_cluster_tree_from_bytes_rejects_damage() -> None:
    raw = train(clustered(1000, seed=32), Metric.L2).to_bytes()
    header = struct.calcsize("<4sHHIII")
    truncated = [b"", raw[:1], raw[:header], raw[: header + 11], raw[: len(raw) // 2], raw[:-1]]
    for damaged in [*truncated, raw + b"\0", raw + raw[-4:]]:
        with pytest.raises(ValueError):
            ClusterTree.from_bytes(damaged)
    positions = [0, 3, 4, 6, 8, 12, 16, header, header + 7, header + 9, len(raw) // 2, len(raw) - 5]
    positions += [len(raw) - 1, *np.random.default_rng(0).integers(len(raw), size=30).tolist()]
    for position in positions:
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(raw)
            damaged[position] ^= flip
            with pytest.raises(ValueError):
                ClusterTree.from_bytes(bytes(damaged))
    # A node count that agrees with a forged length still fails the checksum.
    forged = bytearray(raw)
    struct.pack_into("<I", forged, 12, struct.unpack_from("<I", raw, 12)[0] - 1)
    forged = bytes(forged[: len(raw) - 4 - 12 - 4 * 16]) + raw[-4:]
    with pytest.raises(ValueError):
        ClusterTree.from_bytes(forged)
    assert zlib.crc32(raw[:-4]) == struct.unpack("<I", raw[-4:])[0]


# -- drift --------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", [Metric.L2, Metric.COSINE])
def test_drift(metric: Metric) -> None:
    data = clustered(POINTS, seed=41)
    fresh = clustered(1000, seed=42)  # the same distribution, never trained on
    if metric is Metric.L2:
        far = clustered(1000, seed=43, shift=15.0)
    else:  # other directions entirely
        far = np.random.default_rng(44).normal(size=(1000, DIM)).astype(np.float32) * 5
    arena, _ = make_arena(np.concatenate([data, fresh, far]), metric)
    tree = train(data, metric)
    assert tree.training_distance > 0

    curator = Curator(tree, arena, MAX_SHORTLIST)
    assert curator.drift() == 1.0  # nothing placed yet
    curator.place(np.arange(POINTS))
    # The yardstick is a held-out tenth of the sample, so the fitted points read a bit closer.
    assert 0.85 <= curator.drift() <= 1.02  # the training data itself
    curator.reset_drift()
    curator.place(np.arange(POINTS, POINTS + 1000))
    similar = curator.drift()
    assert 0.85 <= similar <= 1.2, similar
    assert curator.placed_since_build == 1000

    curator.reset_drift()
    assert curator.drift() == 1.0 and curator.placed_since_build == 0
    curator.place(np.arange(POINTS + 1000, POINTS + 2000))
    drifted = curator.drift()
    print(f"{metric}: drift same-distribution {similar:.3f}, far {drifted:.2f}")
    assert drifted > 3.0, drifted
    # Half and half lands in between.
    curator.reset_drift()
    curator.place(np.arange(POINTS + 500, POINTS + 1500))
    assert similar < curator.drift() < drifted
