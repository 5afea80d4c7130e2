"""Queries: exact top-k against a numpy brute force, include/explain, batch, admin, isolation.

One app per module holds the same clustered data set in a collection per metric: 2,000 points in
20 gaussian clusters, dim 32, owned by 30 tenants of Zipf-like sizes, 15% of them shared with
one to three other tenants; ids repeat across owners (each owner has its own `doc-0`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from index.planner import CostModel
from server import search
from tests.api.helpers import assert_error, tenant_url
from tests.index.reference import in_sequence
from tests.support import app_client

METRICS = ["cosine", "l2", "ip"]
DIM, N, CLUSTERS, TENANTS = 32, 2000, 20, 30
TOL = 1e-4

Key = tuple[str, str]  # (owner, id)


@dataclass
class DataSet:
    client: TestClient
    vectors: np.ndarray  # float32 (N, DIM)
    centers: np.ndarray
    keys: list[Key]  # row -> (owner, id)
    attributes: list[dict[str, Any]]
    readable: dict[str, np.ndarray] = field(default_factory=dict)  # tenant -> rows
    row_of: dict[Key, int] = field(default_factory=dict)
    written: list[int] = field(default_factory=list)  # rows in the order they were upserted

    def distances(self, metric: str, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        x = self.vectors[rows].astype(np.float64)
        q = np.asarray(q, dtype=np.float64)
        if metric == "ip":
            return 1.0 - x @ q
        if metric == "cosine":
            return 1.0 - (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))
        return np.linalg.norm(x - q, axis=1)

    def brute_force(
        self, metric: str, q: np.ndarray, rows: np.ndarray, k: int
    ) -> list[tuple[Key, float]]:
        d = self.distances(metric, q, rows)
        order = np.argsort(d, kind="stable")[:k]
        return [(self.keys[rows[i]], float(d[i])) for i in order]

    def true_distance(self, metric: str, q: np.ndarray, key: Key) -> float:
        return float(self.distances(metric, q, np.asarray([self.row_of[key]]))[0])


def _zipf_sizes(rng: np.random.Generator) -> list[int]:
    weights = 1.0 / np.arange(1, TENANTS + 1) ** 1.1
    sizes = np.maximum(2, np.floor(weights / weights.sum() * N)).astype(int)
    sizes[0] += N - sizes.sum()
    order = rng.permutation(TENANTS)  # the big tenant is not always t00
    return [int(sizes[i]) for i in order]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataSet]:
    rng = np.random.default_rng(20240611)
    centers = rng.normal(size=(CLUSTERS, DIM))
    cluster = rng.integers(0, CLUSTERS, size=N)
    vectors = (centers[cluster] + rng.normal(scale=0.3, size=(N, DIM))).astype(np.float32)
    tenants = [f"t{i:02d}" for i in range(TENANTS)]
    sizes = _zipf_sizes(rng)
    owners = np.repeat(np.arange(TENANTS), sizes)
    rng.shuffle(owners)
    keys: list[Key] = []
    seen: dict[int, int] = {}
    for o in owners.tolist():
        keys.append((tenants[o], f"doc-{seen.get(o, 0)}"))
        seen[o] = seen.get(o, 0) + 1
    grants: list[list[str]] = []
    for o in owners.tolist():
        if rng.random() < 0.15:
            others = [t for t in range(TENANTS) if t != o]
            chosen = rng.choice(others, size=int(rng.integers(1, 4)), replace=False)
            grants.append([tenants[t] for t in sorted(chosen.tolist())])
        else:
            grants.append([])
    attributes = [{"row": i, "cluster": int(cluster[i])} for i in range(N)]

    with app_client(tmp_path_factory.mktemp("queries") / "data") as client:
        for metric in METRICS:
            response = client.post(
                "/v1/collections", json={"name": metric, "dim": DIM, "metric": metric}
            )
            assert response.status_code == 201, response.text
            for t, name in enumerate(tenants):
                rows = np.flatnonzero(owners == t)
                points = [
                    {
                        "id": keys[r][1],
                        "vector": vectors[r].tolist(),
                        "attributes": attributes[r],
                        "shared_with": grants[r],
                    }
                    for r in rows.tolist()
                ]
                response = client.put(f"{tenant_url(metric, name)}/points", json={"points": points})
                assert response.status_code == 200, response.text
        dataset = DataSet(client, vectors, centers, keys, attributes)
        dataset.row_of = {key: i for i, key in enumerate(keys)}
        dataset.written = [r for t in range(TENANTS) for r in np.flatnonzero(owners == t).tolist()]
        for t, name in enumerate(tenants):
            rows = {i for i in range(N) if owners[i] == t or name in grants[i]}
            dataset.readable[name] = np.asarray(sorted(rows), dtype=np.int64)
        yield dataset


def random_query(data: DataSet, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.8:
        center = data.centers[rng.integers(0, CLUSTERS)]
        return (center + rng.normal(scale=0.4, size=DIM)).astype(np.float32)
    return rng.normal(scale=2.0, size=DIM).astype(np.float32)


def post_query(data: DataSet, metric: str, tenant: str, body: dict[str, Any]) -> dict[str, Any]:
    response = data.client.post(f"{tenant_url(metric, tenant)}/query", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def assert_matches(
    data: DataSet,
    metric: str,
    q: np.ndarray,
    hits: list[dict[str, Any]],
    expected: list[tuple[Key, float]],
) -> None:
    """Same length, same distances in the same order, each hit at its true distance; keys equal
    except where brute-force distances tie within the tolerance."""
    assert len(hits) == len(expected)
    got_keys = [(h["owner"], h["id"]) for h in hits]
    assert len(set(got_keys)) == len(got_keys), "a point was returned twice"
    distances = [h["distance"] for h in hits]
    assert distances == sorted(distances), "results are not nearest first"
    for hit_key, hit, (want_key, want) in zip(got_keys, hits, expected, strict=True):
        assert abs(hit["distance"] - want) <= TOL, (hit_key, hit["distance"], want_key, want)
        assert abs(data.true_distance(metric, q, hit_key) - hit["distance"]) <= TOL
        if hit_key != want_key:
            assert abs(data.true_distance(metric, q, hit_key) - want) <= 2 * TOL


def tenants_sample(data: DataSet) -> list[str]:
    by_size = sorted(data.readable, key=lambda t: len(data.readable[t]))
    return [*by_size[:3], *by_size[-3:], *by_size[10:14]]


@pytest.mark.parametrize("metric", METRICS)
def test_exact_top_k_matches_brute_force(data: DataSet, metric: str) -> None:
    rng = np.random.default_rng(METRICS.index(metric))
    for tenant in tenants_sample(data):
        for k in (1, 10):
            for _ in range(3):
                q = random_query(data, rng)
                hits = post_query(data, metric, tenant, {"vector": q.tolist(), "k": k})["results"]
                expected = data.brute_force(metric, q, data.readable[tenant], k)
                assert_matches(data, metric, q, hits, expected)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_querying_a_stored_vector_finds_it_at_distance_zero(data: DataSet, metric: str) -> None:
    tenant = tenants_sample(data)[-1]
    for row in data.readable[tenant][:20].tolist():
        q = data.vectors[row]
        hits = post_query(data, metric, tenant, {"vector": q.tolist(), "k": 1})["results"]
        assert (hits[0]["owner"], hits[0]["id"]) == data.keys[row]
        assert hits[0]["distance"] == pytest.approx(0.0, abs=TOL)


@pytest.mark.parametrize("metric", METRICS)
def test_k_larger_than_readable_count_returns_all(data: DataSet, metric: str) -> None:
    rng = np.random.default_rng(5)
    for tenant in tenants_sample(data)[:3]:
        readable = data.readable[tenant]
        assert len(readable) < 1000
        q = random_query(data, rng)
        hits = post_query(data, metric, tenant, {"vector": q.tolist(), "k": 1000})["results"]
        assert len(hits) == len(readable)
        assert_matches(data, metric, q, hits, data.brute_force(metric, q, readable, 1000))


def test_include_chooses_attributes_vector_or_neither(data: DataSet) -> None:
    tenant = tenants_sample(data)[-1]
    q = data.vectors[data.readable[tenant][0]].tolist()
    default = post_query(data, "l2", tenant, {"vector": q, "k": 5})["results"]
    for hit in default:
        assert set(hit) == {"id", "owner", "distance", "attributes"}
        row = data.row_of[(hit["owner"], hit["id"])]
        assert hit["attributes"] == data.attributes[row]
    with_vector = post_query(data, "l2", tenant, {"vector": q, "k": 5, "include": ["vector"]})
    for hit in with_vector["results"]:
        assert set(hit) == {"id", "owner", "distance", "vector"}
        row = data.row_of[(hit["owner"], hit["id"])]
        assert np.array_equal(np.asarray(hit["vector"], dtype=np.float32), data.vectors[row])
    both = post_query(
        data, "l2", tenant, {"vector": q, "k": 5, "include": ["attributes", "vector"]}
    )
    assert all(
        set(h) == {"id", "owner", "distance", "attributes", "vector"} for h in both["results"]
    )
    bare = post_query(data, "l2", tenant, {"vector": q, "k": 5, "include": []})
    assert all(set(h) == {"id", "owner", "distance"} for h in bare["results"])
    order = [(h["owner"], h["id"]) for h in default]
    for response in (with_vector["results"], both["results"], bare["results"]):
        assert [(h["owner"], h["id"]) for h in response] == order


def test_explain_reports_an_exact_plan_over_the_readable_set(data: DataSet) -> None:
    for tenant in tenants_sample(data):
        q = data.centers[0].tolist()
        body = post_query(data, "cosine", tenant, {"vector": q, "k": 3, "explain": True})
        plan = body["plan"]
        assert plan["strategy"] == "exact"
        assert plan["candidates"] == len(data.readable[tenant])
        # A tenant's own points went in with one request, so they lie side by side; points
        # shared with it from other tenants' blocks mostly do not.
        assert plan["sequential_candidates"] == _in_sequence(data, data.readable[tenant])
        assert isinstance(plan["timings_ms"], dict)
        assert all(v >= 0 for v in plan["timings_ms"].values())
        plain = post_query(data, "cosine", tenant, {"vector": q, "k": 3})
        assert "plan" not in plain
        assert plain["results"] == body["results"]


def test_explain_counts_the_candidates_that_continue_a_run(data: DataSet) -> None:
    """Tenant a written in two requests with b's in between: two runs of 50 labels. A filter
    that keeps one of them keeps its sequence; one that keeps every other point, none. The
    admin scope (everything) is one run of 150."""
    client, lead = data.client, CostModel().exact_run_lead
    schema = {"part": "integer", "i": "integer"}
    response = client.post("/v1/collections", json={"name": "runs", "dim": 4, "schema": schema})
    assert response.status_code == 201, response.text
    try:
        rng = np.random.default_rng(5)
        for tenant, part in (("a", 0), ("b", 0), ("a", 1)):
            points = [
                {
                    "id": f"{part}-{i}",
                    "vector": rng.normal(size=4).tolist(),
                    "attributes": {"part": part, "i": i},
                }
                for i in range(50)
            ]
            response = client.put(f"{tenant_url('runs', tenant)}/points", json={"points": points})
            assert response.status_code == 200, response.text

        def plan(url: str, body: dict[str, Any]) -> tuple[int, int]:
            body = {"vector": [1.0, 0.0, 0.0, 0.0], "k": 3, "explain": True, **body}
            response = client.post(url, json=body)
            assert response.status_code == 200, response.text
            return response.json()["plan"]["candidates"], response.json()["plan"][
                "sequential_candidates"
            ]

        a = f"{tenant_url('runs', 'a')}/query"
        assert plan(a, {}) == (100, 2 * (50 - lead))
        assert plan(a, {"filter": {"part": 0}}) == (50, 50 - lead)
        assert plan(a, {"filter": {"i": {"$in": list(range(1, 50, 2))}}}) == (50, 0)
        assert plan("/v1/collections/runs/query", {}) == (150, 150 - lead)
    finally:
        client.delete("/v1/collections/runs")


def _in_sequence(data: DataSet, rows: np.ndarray) -> int:
    """Candidates after `lead` others in write order (labels are given in write order here)."""
    lead = CostModel().exact_run_lead
    position = {row: i for i, row in enumerate(data.written)}
    return in_sequence({position[r] for r in rows.tolist()}, lead)


def test_exact_and_ef_are_accepted(data: DataSet) -> None:
    tenant = tenants_sample(data)[-1]
    q = data.centers[1].tolist()
    plain = post_query(data, "ip", tenant, {"vector": q, "k": 10})
    tuned = post_query(data, "ip", tenant, {"vector": q, "k": 10, "exact": True, "ef": 64})
    assert tuned["results"] == plain["results"]


def test_a_forced_exact_scan_weighs_plans_only_when_explained(
    data: DataSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`exact: true` runs the scan without gathering the planner's inputs, unless `explain`
    asks for the prices; the answers are the same either way."""
    weighed: list[int] = []
    situation = search._situation
    monkeypatch.setattr(search, "_situation", lambda *a: weighed.append(1) or situation(*a))
    tenant = tenants_sample(data)[-1]
    q = data.centers[1].tolist()
    forced = post_query(data, "ip", tenant, {"vector": q, "k": 10, "exact": True})
    assert weighed == [] and "plan" not in forced
    explained = post_query(
        data, "ip", tenant, {"vector": q, "k": 10, "exact": True, "explain": True}
    )
    assert weighed == [1] and explained["plan"]["strategy"] == "exact"
    assert "exact" in explained["plan"]["estimates_us"]
    assert explained["results"] == forced["results"]


@pytest.mark.parametrize("metric", METRICS)
def test_batch_equals_individual_queries(data: DataSet, metric: str) -> None:
    rng = np.random.default_rng(11)
    tenant = tenants_sample(data)[-2]
    specs = [
        {"k": 1},
        {"k": 5, "include": []},
        {"k": 10},
        {"k": 10},
        {"k": 10, "explain": True},  # shares the plan of the two above
        {"k": 37, "include": ["vector"]},
        {"k": 5, "explain": True},
        {"k": 10, "include": ["attributes", "vector"]},
        {"k": 1000},
    ]
    queries = [{"vector": random_query(data, rng).tolist(), **spec} for spec in specs]
    response = data.client.post(
        f"{tenant_url(metric, tenant)}/query/batch", json={"queries": queries}
    )
    assert response.status_code == 200, response.text
    batch = response.json()["queries"]
    assert len(batch) == len(queries)
    for body, answer in zip(queries, batch, strict=True):
        single = post_query(data, metric, tenant, body)
        assert ("plan" in answer) == bool(body.get("explain"))
        if "plan" in answer:
            assert answer["plan"]["chosen"] == single["plan"]["chosen"]
        assert len(answer["results"]) == len(single["results"])
        for got, want in zip(answer["results"], single["results"], strict=True):
            assert set(got) == set(want)
            assert got["distance"] == pytest.approx(want["distance"], abs=1e-5)
            if (got["owner"], got["id"]) != (want["owner"], want["id"]):
                assert got["distance"] == pytest.approx(want["distance"], abs=TOL)
            else:
                assert {k: v for k, v in got.items() if k != "distance"} == {
                    k: v for k, v in want.items() if k != "distance"
                }
        q = np.asarray(body["vector"], dtype=np.float32)
        expected = data.brute_force(metric, q, data.readable[tenant], body["k"])
        assert_matches(data, metric, q, answer["results"], expected)


@pytest.mark.parametrize("metric", METRICS)
def test_admin_query_searches_every_tenant(data: DataSet, metric: str) -> None:
    rng = np.random.default_rng(3)
    everything = np.arange(N)
    for k in (1, 10, 100):
        q = random_query(data, rng)
        response = data.client.post(
            f"/v1/collections/{metric}/query", json={"vector": q.tolist(), "k": k, "explain": True}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["plan"]["candidates"] == N
        assert_matches(data, metric, q, body["results"], data.brute_force(metric, q, everything, k))


@pytest.mark.parametrize("metric", METRICS)
def test_admin_query_with_tenants_covers_their_readable_points_once(
    data: DataSet, metric: str
) -> None:
    rng = np.random.default_rng(4)
    names = sorted(data.readable)
    for size in (1, 3, 6):
        chosen = sorted(rng.choice(names, size=size, replace=False).tolist())
        union = np.unique(np.concatenate([data.readable[t] for t in chosen]))
        q = random_query(data, rng)
        for k in (10, 1000):
            body = {"vector": q.tolist(), "k": k, "tenants": chosen, "explain": True}
            response = data.client.post(f"/v1/collections/{metric}/query", json=body)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["plan"]["candidates"] == len(union)
            assert len(answer["results"]) == min(k, len(union))
            expected = data.brute_force(metric, q, union, k)
            assert_matches(data, metric, q, answer["results"], expected)


def test_tenant_never_receives_another_tenants_unshared_points(data: DataSet) -> None:
    rng = np.random.default_rng(99)
    names = sorted(data.readable)
    for metric in METRICS:
        for _ in range(3):
            batch_tenants = rng.choice(names, size=4, replace=False).tolist()
            for tenant in batch_tenants:
                allowed = {data.keys[r] for r in data.readable[tenant].tolist()}
                queries = [
                    {"vector": random_query(data, rng).tolist(), "k": 50, "include": []}
                    for _ in range(25)
                ]
                response = data.client.post(
                    f"{tenant_url(metric, tenant)}/query/batch", json={"queries": queries}
                )
                assert response.status_code == 200, response.text
                for answer in response.json()["queries"]:
                    keys = {(h["owner"], h["id"]) for h in answer["results"]}
                    assert keys <= allowed, keys - allowed
                    assert len(answer["results"]) == min(50, len(allowed))


def test_owner_field_names_the_owner_of_shared_hits(data: DataSet) -> None:
    tenant = max(
        data.readable,
        key=lambda t: (
            len(data.readable[t])
            - sum(1 for r in data.readable[t].tolist() if data.keys[r][0] == t)
        ),
    )
    shared_rows = [r for r in data.readable[tenant].tolist() if data.keys[r][0] != tenant]
    assert shared_rows
    for row in shared_rows[:10]:
        hits = post_query(data, "l2", tenant, {"vector": data.vectors[row].tolist(), "k": 1})
        assert (hits["results"][0]["owner"], hits["results"][0]["id"]) == data.keys[row]


def test_empty_tenant_gets_no_results(data: DataSet) -> None:
    assert data.client.put(tenant_url("l2", "empty")).status_code == 201
    body = post_query(data, "l2", "empty", {"vector": [1.0] * DIM, "k": 10, "explain": True})
    assert body["results"] == []
    assert body["plan"]["candidates"] == 0
    assert data.client.delete(tenant_url("l2", "empty")).status_code == 200


def test_query_vector_of_wrong_dimension_is_422(data: DataSet) -> None:
    response = data.client.post(
        f"{tenant_url('l2', 't00')}/query", json={"vector": [1.0] * (DIM - 1)}
    )
    assert_error(response, 422, "invalid", "vector")


def test_l2_is_exact_for_points_far_from_the_origin(client: TestClient) -> None:
    rng = np.random.default_rng(8)
    vectors = (100.0 + rng.normal(scale=0.3, size=(300, DIM))).astype(np.float32)
    client.post("/v1/collections", json={"name": "far", "dim": DIM, "metric": "l2"})
    points = [{"id": str(i), "vector": v.tolist()} for i, v in enumerate(vectors)]
    assert (
        client.put(f"{tenant_url('far', 't')}/points", json={"points": points}).status_code == 200
    )
    for _ in range(5):
        q = (100.0 + rng.normal(scale=0.3, size=DIM)).astype(np.float32)
        hits = client.post(
            f"{tenant_url('far', 't')}/query", json={"vector": q.tolist(), "k": 10}
        ).json()["results"]
        d = np.linalg.norm(vectors.astype(np.float64) - q.astype(np.float64), axis=1)
        expected = np.argsort(d)[:10]
        assert [h["id"] for h in hits] == [str(i) for i in expected]
        for hit in hits:
            assert abs(hit["distance"] - d[int(hit["id"])]) <= TOL
