"""Hybrid queries through the API on clustered synthetic data: what the planner chooses, and
that every plan answers right, from a filter matching 0.01% of the points to one matching all.

Collection: 6,000 points of 32 dimensions in 12 gaussian clusters (cosine). Owners: `big`
(2,000 points, plus 10% of the small tenants' points shared with it: a tenant graph), `mid`
(1,200, plus 5% shared: the Curator), 28 small tenants of 100. Attributes: `bucket`, uniform
in 0..9,999 (so `{"bucket": {"$lt": x}}` keeps a share x/10,000 of any scope, independent of
the query), and `cluster`, the point's cluster (a filter on it is correlated with the query).
Thresholds low enough that the Curator, the shared graph and `big`'s graph exist in seconds.

Ground truth is numpy: brute force over the readable, filtered set. The planner's choice must
reach recall@10 >= 0.95 at every selectivity; every plan (chosen or forced) must return
min(k, candidates) hits, each readable by the tenant and matching the filter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.support import app_client

NAME = "hybrid"
DIM = 32
CLUSTERS = 12
BUCKETS = 10_000
K = 10
QUERIES = 20
SETTINGS = {
    "curator_min_points": 1000,
    "shared_graph_min_points": 1000,
    "tenant_graph_min_points": 1500,
}
THRESHOLDS = [1, 5, 10, 50, 100, 300, 1000, 3000, 10_000]  # 0.01% .. 100% of the points
TARGET = 0.95
ADMIN = "(admin)"
APPROXIMATE = ("curator", "tenant_hnsw", "shared_hnsw")


class Corpus:
    """The points and who may read them, as numpy arrays indexed by row (id `p<row>`)."""

    def __init__(self, seed: int = 7):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.centres = rng.normal(size=(CLUSTERS, DIM)) * 3
        self.cluster = rng.integers(CLUSTERS, size=6000)
        self.vectors = (self.centres[self.cluster] + rng.normal(size=(6000, DIM))).astype(
            np.float32
        )
        self.bucket = rng.integers(BUCKETS, size=6000)
        owners = ["big"] * 2000 + ["mid"] * 1200 + [f"s{i % 28:02d}" for i in range(2800)]
        self.owner = np.asarray(owners)
        self.grants: list[list[str]] = []
        for i in range(6000):
            shared = []
            if i >= 3200 and i % 10 == 0:
                shared.append("big")
            if i >= 3200 and i % 20 == 5:
                shared.append("mid")
            self.grants.append(shared)

    def readable(self, tenant: str) -> np.ndarray:
        if tenant == ADMIN:
            return np.ones(len(self.owner), dtype=bool)
        granted = np.asarray([tenant in g for g in self.grants])
        return (self.owner == tenant) | granted

    def queries(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        centres = self.centres[rng.integers(CLUSTERS, size=n)]
        return (centres + rng.normal(size=(n, DIM))).astype(np.float32)

    def distances(self, query: np.ndarray) -> np.ndarray:
        rows = self.vectors.astype(np.float64)
        q = query.astype(np.float64)
        return 1 - rows @ q / (np.linalg.norm(rows, axis=1) * np.linalg.norm(q))

    def truth(self, query: np.ndarray, mask: np.ndarray, k: int = K) -> list[int]:
        rows = np.flatnonzero(mask)
        distances = self.distances(query)[rows]
        return rows[np.argsort(distances, kind="stable")[:k]].tolist()

    def load(self, client: TestClient) -> None:
        body = {
            "name": NAME,
            "dim": DIM,
            "metric": "cosine",
            "schema": {"bucket": "integer", "cluster": "integer"},
            "index": SETTINGS,
        }
        response = client.post("/v1/collections", json=body)
        assert response.status_code == 201, response.text
        order = self.rng.permutation(len(self.owner))
        for start in range(0, len(order), 500):
            by_owner: dict[str, list[int]] = {}
            for i in order[start : start + 500].tolist():
                by_owner.setdefault(str(self.owner[i]), []).append(i)
            for owner, rows in by_owner.items():
                points = [
                    {
                        "id": f"p{i}",
                        "vector": self.vectors[i].tolist(),
                        "attributes": {
                            "bucket": int(self.bucket[i]),
                            "cluster": int(self.cluster[i]),
                        },
                        "shared_with": self.grants[i],
                    }
                    for i in rows
                ]
                url = f"/v1/collections/{NAME}/tenants/{owner}/points"
                response = client.put(url, json={"points": points})
                assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Corpus]]:
    """One loaded collection for the module: these tests only read."""
    corpus = Corpus()
    with app_client(Path(tmp_path_factory.mktemp("selectivity")) / "data") as client:
        corpus.load(client)
        collection = client.app.state.database.collection(NAME)  # type: ignore[attr-defined]
        assert collection.curator.wait_trained(60)
        assert collection.graphs.wait_idle(120)
        graphs = client.get(f"/v1/collections/{NAME}").json()["graphs"]
        assert graphs["shared_graph"] and graphs["shared_graph_points"] == 6000
        assert graphs["tenant_graphs"] == 1 and graphs["pending"] == 0
        yield client, corpus


def ask(
    client: TestClient, tenant: str, vectors: np.ndarray, **options: Any
) -> list[dict[str, Any]]:
    """One response per vector (hits and plan); tenant queries go through the batch endpoint
    (one plan for the batch), admin queries one by one."""
    if tenant == ADMIN:
        out = []
        for vector in vectors:
            body = {"vector": vector.tolist(), "k": K, "explain": True, **options}
            response = client.post(f"/v1/collections/{NAME}/query", json=body)
            assert response.status_code == 200, response.text
            out.append(response.json())
        return out
    queries = [
        {"vector": v.tolist(), "k": K, "explain": True, "include": [], **options} for v in vectors
    ]
    response = client.post(
        f"/v1/collections/{NAME}/tenants/{tenant}/query/batch", json={"queries": queries}
    )
    assert response.status_code == 200, response.text
    return response.json()["queries"]


def rows_of(response: dict[str, Any], corpus: Corpus) -> list[int]:
    rows = []
    for hit in response["results"]:
        row = int(hit["id"][1:])
        assert hit["owner"] == corpus.owner[row], hit
        rows.append(row)
    return rows


def check_answer(
    response: dict[str, Any],
    corpus: Corpus,
    query: np.ndarray,
    mask: np.ndarray,
    what: str,
) -> list[int]:
    """The invariants of every plan: min(k, n) distinct hits, readable and matching, nearest
    first, with true distances; `plan.fallback` means an exact answer. Returns the rows."""
    plan = response["plan"]
    candidates = int(mask.sum())
    assert plan["candidates"] == candidates, what
    rows = rows_of(response, corpus)
    assert len(rows) == min(K, candidates), f"{what}: {len(rows)} hits of {candidates}; {plan}"
    assert len(set(rows)) == len(rows), f"{what}: duplicate hits"
    outside = [r for r in rows if not mask[r]]
    assert not outside, f"{what}: hits not readable or not matching the filter: {outside}"
    true = corpus.distances(query)
    got = [hit["distance"] for hit in response["results"]]
    np.testing.assert_allclose(got, true[rows], atol=1e-5, err_msg=what)
    assert got == sorted(got), what
    if plan["fallback"]:
        assert plan["strategy"] == "exact" and plan["chosen"] != "exact", (what, plan)
    else:
        assert plan["strategy"] == plan["chosen"], (what, plan)
    if plan["strategy"] == "exact":
        assert rows == corpus.truth(query, mask), f"{what}: an exact answer that is not exact"
    return rows


def recall(rows: list[int], truth: list[int]) -> float:
    return 1.0 if not truth else len(set(rows) & set(truth)) / len(truth)


# -- the planner's choice ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant", "raw_filter", "expected"),
    [
        # 1.6k points of 32 dims: curator, exact and the graph are close (calibrated at
        # 384 dims, where the graph wins for big tenants); whichever it is, it was cheapest.
        ("big", None, {"tenant_hnsw", "curator", "exact"}),
        ("big", {"bucket": {"$lt": 5}}, {"exact"}),  # about one candidate
        ("big", {"bucket": {"$lt": 20}}, {"exact"}),  # a few: k or fewer
        ("mid", None, {"curator", "shared_hnsw"}),
        ("mid", {"bucket": {"$lt": 50}}, {"exact"}),
        ("s03", None, {"exact"}),  # 100 points: below every index threshold
        # 6,000 rows of 32 dims: the compiled scan (about 140 us by the model) and the
        # graph (about 220 us, its fixed cost fitted at 384 dims) are close.
        (ADMIN, None, {"shared_hnsw", "exact"}),
        (ADMIN, {"bucket": {"$lt": 10}}, {"exact"}),
    ],
)
def test_planner_scans_tiny_candidate_sets_and_indexes_broad_ones(
    loaded: tuple[TestClient, Corpus], tenant: str, raw_filter: Any, expected: set[str]
) -> None:
    client, corpus = loaded
    vectors = corpus.queries(5, seed=1)
    mask = corpus.readable(tenant)
    if raw_filter is not None:
        mask &= corpus.bucket < raw_filter["bucket"]["$lt"]
    for i, (vector, response) in enumerate(
        zip(vectors, ask(client, tenant, vectors, filter=raw_filter), strict=True)
    ):
        plan = response["plan"]
        assert plan["chosen"] in expected, (tenant, raw_filter, plan["estimates_us"])
        costs = plan["estimates_us"]
        eligible = [cost for name, cost in costs.items() if name not in plan["below_recall"]]
        assert costs[plan["chosen"]] == min(eligible), plan
        check_answer(response, corpus, vector, mask, f"{tenant} {raw_filter} query {i}")


# -- the selectivity sweep -----------------------------------------------------------------------


@pytest.mark.parametrize("tenant", ["big", "mid", ADMIN])
def test_every_selectivity_answers_in_full_and_the_choice_has_recall(
    loaded: tuple[TestClient, Corpus], tenant: str
) -> None:
    client, corpus = loaded
    vectors = corpus.queries(QUERIES, seed=2)
    readable = corpus.readable(tenant)
    lines, failing = [], []
    forced_seen: set[str] = set()
    chosen_seen: set[str] = set()
    for threshold in THRESHOLDS:
        raw_filter = {"bucket": {"$lt": threshold}}
        mask = readable & (corpus.bucket < threshold)
        truths = [corpus.truth(v, mask) for v in vectors]
        responses = ask(client, tenant, vectors, filter=raw_filter)
        recalls, chosen, fallbacks = [], set(), 0
        for i, (vector, response) in enumerate(zip(vectors, responses, strict=True)):
            what = f"{tenant} bucket<{threshold} query {i} (planner)"
            rows = check_answer(response, corpus, vector, mask, what)
            recalls.append(recall(rows, truths[i]))
            chosen.add(response["plan"]["chosen"])
            fallbacks += response["plan"]["fallback"]
        available = set(responses[0]["plan"]["estimates_us"])
        forced_recall = {}
        for strategy in sorted(available):
            forced = ask(client, tenant, vectors, filter=raw_filter, strategy=strategy)
            scores = []
            for i, (vector, response) in enumerate(zip(vectors, forced, strict=True)):
                what = f"{tenant} bucket<{threshold} query {i} (forced {strategy})"
                assert response["plan"]["chosen"] == strategy, what
                rows = check_answer(response, corpus, vector, mask, what)
                scores.append(recall(rows, truths[i]))
            forced_recall[strategy] = float(np.mean(scores))
            forced_seen.add(strategy)
        # Strategies not on offer are refused, not silently replaced.
        for strategy in sorted(set(APPROXIMATE) - available):
            body = {"vector": vectors[0].tolist(), "k": K, "filter": raw_filter}
            body["strategy"] = strategy
            url = (
                f"/v1/collections/{NAME}/query"
                if tenant == ADMIN
                else f"/v1/collections/{NAME}/tenants/{tenant}/query"
            )
            response = client.post(url, json=body)
            assert response.status_code == 422, (strategy, threshold, response.text)
        chosen_seen |= chosen
        mean = float(np.mean(recalls))
        forced_text = " ".join(f"{s}={r:.3f}" for s, r in forced_recall.items())
        lines.append(
            f"{threshold / BUCKETS:8.2%} n={int(mask.sum()):5d} chosen={'/'.join(sorted(chosen))}"
            f" recall={mean:.3f} fallbacks={fallbacks} | forced: {forced_text}"
        )
        if mean < TARGET:
            failing.append(threshold)
    table = f"\n{tenant}: recall@{K} of the planner's choice by selectivity\n" + "\n".join(lines)
    print(table)
    assert not failing, table
    # The sweep starts with scans and, unfiltered, `mid` crosses to the Curator (priced at
    # about a third of a scan of its 1,340 rows). At 32 dims the compiled scan is cheap enough
    # that the other two may scan at every selectivity: `big`'s Curator runs at the effort its
    # recall check asks for (x1, x2 or x4 of ef, decided when its graph is built), which puts
    # it on either side of a scan; the collection's 6,000 rows scan for less than the shared
    # graph's fixed cost. bench.planner shows both crossovers at 384 dims (docs/benchmarks.md,
    # "Planner: selectivity sweep").
    assert "exact" in chosen_seen, table
    if tenant == "mid":
        assert chosen_seen - {"exact"}, table
    expected_forced = {"exact", "shared_hnsw"} | (
        {"tenant_hnsw", "curator"} if tenant == "big" else set()
    )
    assert expected_forced <= forced_seen, table


def test_filter_far_from_the_query_still_returns_k(loaded: tuple[TestClient, Corpus]) -> None:
    """The query sits in cluster 0; the filter keeps only the clusters farthest from it, so
    the graph's nearest neighbours are all filtered out and a plan may come back short: then
    the server answers with an exact scan (`fallback`), never with fewer than k."""
    client, corpus = loaded
    centre = corpus.centres[0]
    by_distance = np.argsort(np.linalg.norm(corpus.centres - centre, axis=1))
    vectors = (centre + np.random.default_rng(3).normal(size=(QUERIES, DIM)) * 0.5).astype(
        np.float32
    )
    lines = []
    fallbacks_seen = 0
    for kept in (1, 3, 9):  # the farthest cluster; the three farthest; all but the 3 nearest
        far = sorted(int(c) for c in by_distance[-kept:])
        raw_filter = {"cluster": {"$in": far}}
        for tenant in ("big", "mid", ADMIN):
            mask = corpus.readable(tenant) & np.isin(corpus.cluster, far)
            chosen = ask(client, tenant, vectors, filter=raw_filter)
            strategies = [None, *sorted(set(chosen[0]["plan"]["estimates_us"]) - {"exact"})]
            for strategy in strategies:
                responses = (
                    chosen
                    if strategy is None
                    else ask(client, tenant, vectors, filter=raw_filter, strategy=strategy)
                )
                scores, fell = [], 0
                for i, (vector, response) in enumerate(zip(vectors, responses, strict=True)):
                    what = f"{tenant} clusters {far} query {i} ({strategy or 'planner'})"
                    rows = check_answer(response, corpus, vector, mask, what)
                    assert len(rows) == K, what
                    truth = corpus.truth(vector, mask)
                    if response["plan"]["fallback"]:
                        fell += 1
                        assert rows == truth, what  # the fallback is the exact answer
                    scores.append(recall(rows, truth))
                fallbacks_seen += fell
                lines.append(
                    f"{tenant:7s} clusters={far} n={int(mask.sum())} "
                    f"{strategy or 'planner=' + responses[0]['plan']['chosen']}: "
                    f"recall {np.mean(scores):.3f}, fallbacks {fell}/{len(vectors)}"
                )
    report = "\n".join(lines)
    print("\n" + report)
    # The far filter really defeats post-filtering somewhere, or this test shows nothing.
    assert fallbacks_seen > 0, report
