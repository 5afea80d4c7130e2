"""Filters through HTTP: count, scroll, exact query, admin query and delete by filter, checked
against the reference evaluator of `tests/index/test_filters.py`, always within the tenant's
readable set; then every way a filter can be refused (422 naming the path, nothing changed).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.api.helpers import (
    assert_error,
    collection_url,
    create_collection,
    points_url,
    scroll_all,
    tenant_url,
    upsert,
)
from tests.index.test_filters import TYPES, attribute_dicts, filters, reference_match
from tests.support import app_client

DIM = 4
TENANTS = ["alice", "bob", "carol"]
TOL = 1e-4

Key = tuple[str, str]  # (owner, id)


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the property test; every example makes (and drops) its own collection."""
    with app_client(tmp_path_factory.mktemp("filters") / "data") as client:
        yield client


# -- a model of the stored points -------------------------------------------------------------


class Model:
    """What the server should hold: points by (owner, id), with attributes, vector, grantees."""

    def __init__(self) -> None:
        self.attributes: dict[Key, dict[str, Any]] = {}
        self.vectors: dict[Key, np.ndarray] = {}
        self.grantees: dict[Key, set[str]] = {}

    def readable(self, tenant: str) -> set[Key]:
        return {key for key in self.attributes if key[0] == tenant or tenant in self.grantees[key]}

    def matching(self, tenant: str, raw: dict[str, Any] | None) -> set[Key]:
        return {
            key
            for key in self.readable(tenant)
            if raw is None or reference_match(raw, self.attributes[key])
        }

    def remove(self, key: Key) -> None:
        del self.attributes[key], self.vectors[key], self.grantees[key]


def scroll_keys(
    client: TestClient, collection: str, tenant: str, raw: Any, limit: int
) -> list[Key]:
    """Every page of a filtered scroll, each point checked against the reference evaluator."""
    points, _ = scroll_all(client, collection, tenant, limit, filter=raw)
    for point in points:
        assert reference_match(raw, point["attributes"]), (raw, point)
    return [(p["owner"], p["id"]) for p in points]


def count_of(client: TestClient, collection: str, tenant: str, raw: Any) -> int:
    response = client.post(f"{points_url(collection, tenant)}/count", json={"filter": raw})
    assert response.status_code == 200, response.text
    return response.json()["count"]


def assert_exact_top_k(
    hits: list[dict[str, Any]], model: Model, candidates: set[Key], q: np.ndarray, k: int
) -> None:
    """Hits are the k nearest candidates (l2), up to ties at the boundary, with true distances."""
    ranked = sorted(
        (float(np.linalg.norm(model.vectors[key].astype(np.float64) - q)), key)
        for key in candidates
    )
    keys = [(hit["owner"], hit["id"]) for hit in hits]
    assert len(keys) == len(set(keys)) == min(k, len(candidates))
    distance = dict((key, d) for d, key in ranked)
    for hit, key in zip(hits, keys, strict=True):
        assert key in candidates, key
        assert abs(hit["distance"] - distance[key]) < TOL
    if len(ranked) > k and ranked[k][0] - ranked[k - 1][0] < TOL:
        return  # a tie at the boundary: either point is right
    assert set(keys) == {key for _, key in ranked[:k]}


# -- the property -----------------------------------------------------------------------------

_names = itertools.count()


@st.composite
def stored_points(draw: st.DrawFn) -> list[tuple[str, dict[str, Any], list[str]]]:
    """(owner, attributes, shared_with) for 8 to 30 points over three tenants."""
    rows = []
    for _ in range(draw(st.integers(8, 30))):
        owner = draw(st.sampled_from(TENANTS))
        others = [t for t in TENANTS if t != owner]
        shared = draw(st.lists(st.sampled_from(others), max_size=2, unique=True))
        rows.append((owner, draw(attribute_dicts()), shared))
    return rows


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=stored_points(),
    raws=st.lists(filters, min_size=2, max_size=4),
    doomed=st.tuples(st.sampled_from(TENANTS), filters),
    seed=st.integers(0, 2**32 - 1),
    limit=st.integers(1, 5),
    k=st.integers(1, 8),
)
def test_filtered_reads_and_deletes_match_the_reference(
    shared_client: TestClient,
    rows: list[tuple[str, dict[str, Any], list[str]]],
    raws: list[dict[str, Any]],
    doomed: tuple[str, dict[str, Any]],
    seed: int,
    limit: int,
    k: int,
) -> None:
    client, name = shared_client, f"f{next(_names)}"
    rng = np.random.default_rng(seed)
    create_collection(client, name, dim=DIM, metric="l2", schema=TYPES)
    model = Model()
    for tenant in TENANTS:
        response = client.put(tenant_url(name, tenant))  # every tenant exists, even empty ones
        assert response.status_code == 201, response.text
    for i, (owner, attributes, shared) in enumerate(rows):
        key = (owner, f"p{i}")
        model.attributes[key], model.grantees[key] = attributes, set(shared)
        model.vectors[key] = rng.normal(size=DIM).astype(np.float32)
    for tenant in TENANTS:
        own = [key for key in model.attributes if key[0] == tenant]
        if own:
            points = [
                {
                    "id": key[1],
                    "vector": model.vectors[key].tolist(),
                    "attributes": model.attributes[key],
                    "shared_with": sorted(model.grantees[key]),
                }
                for key in own
            ]
            upsert(client, name, tenant, points)

    for raw in raws:
        for tenant in TENANTS:
            expected = model.matching(tenant, raw)
            splits = 0 < len(expected) < len(model.readable(tenant))
            event("a filter split a readable set" if splits else "a filter took all or none")
            assert count_of(client, name, tenant, raw) == len(expected), raw
            scrolled = scroll_keys(client, name, tenant, raw, limit)
            assert len(scrolled) == len(set(scrolled)) and set(scrolled) == expected, raw
            q = rng.normal(size=DIM)
            response = client.post(
                f"{tenant_url(name, tenant)}/query",
                json={"vector": q.tolist(), "k": k, "exact": True, "filter": raw},
            )
            assert response.status_code == 200, response.text
            hits = response.json()["results"]
            for hit in hits:
                assert reference_match(raw, hit["attributes"]), (raw, hit)
            assert_exact_top_k(hits, model, expected, q, k)
            # The planner's choice: never a point outside the filter, never short.
            response = client.post(
                f"{tenant_url(name, tenant)}/query",
                json={"vector": q.tolist(), "k": k, "filter": raw, "include": []},
            )
            keys = {(hit["owner"], hit["id"]) for hit in response.json()["results"]}
            assert keys <= expected and len(keys) == min(k, len(expected)), raw
        q = rng.normal(size=DIM)
        response = client.post(
            f"{collection_url(name)}/query",
            json={"vector": q.tolist(), "k": k, "exact": True, "filter": raw},
        )
        assert response.status_code == 200, response.text
        everything = {
            key for key in model.attributes if reference_match(raw, model.attributes[key])
        }
        assert_exact_top_k(response.json()["results"], model, everything, q, k)

    tenant, raw = doomed
    gone = {key for key in model.matching(tenant, raw) if key[0] == tenant}  # owned only
    event("the delete took some points" if gone else "the delete took none")
    response = client.post(f"{points_url(name, tenant)}/delete", json={"filter": raw})
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": len(gone), "not_found": []}
    for key in gone:
        model.remove(key)
    for reader in TENANTS:
        points, _ = scroll_all(client, name, reader)
        assert {(p["owner"], p["id"]) for p in points} == model.readable(reader)
        assert count_of(client, name, reader, {}) == len(model.readable(reader))
    assert client.delete(collection_url(name)).status_code == 200


# -- tenant scoping, by hand ------------------------------------------------------------------

C = "scoped"


@pytest.fixture
def scoped(client: TestClient) -> TestClient:
    """alice: a0 (kw a), a1 (kw b); bob: b0 (kw a, shared with alice), b1 (kw a);
    carol: c0, c1 (kw carol-only, n 7), shared with nobody."""
    create_collection(client, C, dim=DIM, schema={"kw": "keyword", "n": "integer"})
    upsert(client, C, "alice", [
        {"id": "a0", "vector": [1, 0, 0, 0], "attributes": {"kw": "a", "n": 1}},
        {"id": "a1", "vector": [0, 1, 0, 0], "attributes": {"kw": "b", "n": 2}},
    ])  # fmt: skip
    upsert(client, C, "bob", [
        {"id": "b0", "vector": [1, 1, 0, 0], "attributes": {"kw": "a"}, "shared_with": ["alice"]},
        {"id": "b1", "vector": [1, 0, 1, 0], "attributes": {"kw": "a"}},
    ])  # fmt: skip
    upsert(client, C, "carol", [
        {"id": "c0", "vector": [0, 0, 1, 0], "attributes": {"kw": "carol-only", "n": 7}},
        {"id": "c1", "vector": [0, 0, 0, 1], "attributes": {"kw": "carol-only", "n": 7}},
    ])  # fmt: skip
    return client


def _ids(points: list[dict[str, Any]]) -> list[Key]:
    return sorted((p["owner"], p["id"]) for p in points)


def test_a_filter_on_another_tenants_value_finds_nothing(scoped: TestClient) -> None:
    for raw in [
        {"kw": "carol-only"},
        {"n": 7},
        {"n": {"$gte": 7}},
        {"kw": {"$in": ["carol-only"]}},
    ]:
        assert count_of(scoped, C, "alice", raw) == 0
        assert scroll_keys(scoped, C, "alice", raw, 10) == []
        body = {"vector": [0, 0, 1, 0], "k": 10, "filter": raw}
        for exact in (True, False):
            response = scoped.post(f"{tenant_url(C, 'alice')}/query", json={**body, "exact": exact})
            assert response.status_code == 200 and response.json()["results"] == [], response.text
        response = scoped.post(f"{points_url(C, 'alice')}/delete", json={"filter": raw})
        assert response.json() == {"deleted": 0, "not_found": []}
        assert count_of(scoped, C, "carol", raw) == 2  # still there
    # The admin sees them; a tenant-scoped admin query does not.
    body = {"vector": [0, 0, 1, 0], "k": 10, "filter": {"kw": "carol-only"}, "exact": True}
    hits = scoped.post(f"{collection_url(C)}/query", json=body).json()["results"]
    assert _ids(hits) == [("carol", "c0"), ("carol", "c1")]
    hits = scoped.post(f"{collection_url(C)}/query", json={**body, "tenants": ["alice"]}).json()
    assert hits["results"] == []


def test_negations_stay_inside_the_readable_set(scoped: TestClient) -> None:
    """$ne, $nin, $not and $exists: false match missing fields, but only among the points the
    tenant can read (alice: a0, a1 and bob's b0; not bob's b1 nor carol's)."""
    everything = [("alice", "a0"), ("alice", "a1"), ("bob", "b0")]
    cases = [
        ({"kw": {"$ne": "zz"}}, everything),
        ({"n": {"$nin": [7]}}, everything),
        ({"$not": {"kw": "carol-only"}}, everything),
        ({"n": {"$not": {"$gte": 2}}}, [("alice", "a0"), ("bob", "b0")]),
        ({"n": {"$exists": False}}, [("bob", "b0")]),
    ]
    for raw, expected in cases:
        assert sorted(scroll_keys(scoped, C, "alice", raw, 1)) == expected, raw
        assert count_of(scoped, C, "alice", raw) == len(expected), raw


def test_delete_by_filter_spares_points_shared_by_others(scoped: TestClient) -> None:
    response = scoped.post(f"{points_url(C, 'alice')}/delete", json={"filter": {"kw": "a"}})
    assert response.status_code == 200
    assert response.json() == {"deleted": 1, "not_found": []}  # a0; never bob's b0
    assert _ids(scroll_all(scoped, C, "alice")[0]) == [("alice", "a1"), ("bob", "b0")]
    assert _ids(scroll_all(scoped, C, "bob")[0]) == [("bob", "b0"), ("bob", "b1")]
    # Everything alice owns, by filter: still only her own.
    response = scoped.post(f"{points_url(C, 'alice')}/delete", json={"filter": {}})
    assert response.json() == {"deleted": 1, "not_found": []}
    assert _ids(scroll_all(scoped, C, "alice")[0]) == [("bob", "b0")]
    assert count_of(scoped, C, "bob", None) == 2 and count_of(scoped, C, "carol", None) == 2


def test_scroll_with_filter_and_cursor_pages_through_every_match(scoped: TestClient) -> None:
    pages = []
    cursor = None
    while True:
        body: dict[str, Any] = {"limit": 1, "filter": {"kw": "a"}}
        if cursor:
            body["cursor"] = cursor
        page = scoped.post(f"{points_url(C, 'bob')}/scroll", json=body).json()
        pages.append([(p["owner"], p["id"]) for p in page["points"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(key for page in pages for key in page) == [("bob", "b0"), ("bob", "b1")]
    assert all(len(page) == 1 for page in pages)


# -- refused filters: 422 naming the path, nothing changed ------------------------------------

F = "refusals"
F_SCHEMA = TYPES
BAD: list[tuple[Any, str, str]] = [
    ({"nope": 1}, "filter.nope", "declare"),
    ({"note": "x"}, "filter.note", "declare"),  # an untyped attribute
    ({"n": {"$foo": 1}}, "filter.n.$foo", "unknown operator"),
    ({"$nor": [{"n": 1}]}, "filter.$nor", "unknown operator"),
    ({"kw": 5}, "filter.kw", "string"),
    ({"n": "5"}, "filter.n", "number"),
    ({"x": True}, "filter.x", "number"),
    ({"b": "true"}, "filter.b", "true or false"),
    ({"tags": 5}, "filter.tags", "string"),
    ({"tags": ["a"]}, "filter.tags", "$in or $all"),
    ({"at": 1714564800}, "filter.at", "datetime"),
    ({"at": "yesterday"}, "filter.at", "RFC 3339"),
    ({"at": {"$gt": "2024-13-01T00:00:00Z"}}, "filter.at.$gt", "RFC 3339"),
    ({"kw": {"$gt": "a"}}, "filter.kw.$gt", "integer, float and datetime"),
    ({"b": {"$lte": True}}, "filter.b.$lte", "integer, float and datetime"),
    ({"tags": {"$gte": "a"}}, "filter.tags.$gte", "integer, float and datetime"),
    ({"kw": {"$all": ["a"]}}, "filter.kw.$all", "keyword[]"),
    ({"n": {"$all": [1]}}, "filter.n.$all", "keyword[]"),
    ({"kw": {"$in": "a"}}, "filter.kw.$in", "list"),
    ({"kw": {"$nin": "a"}}, "filter.kw.$nin", "list"),
    ({"$or": []}, "filter.$or", "non-empty"),
    ({"$and": {"kw": "a"}}, "filter.$and", "non-empty"),
    ({"kw": None}, "filter.kw", "null"),
    ({"n": {"$in": [1, None]}}, "filter.n.$in[1]", "null"),
    ({"$or": [{"kw": "a"}, {"x": {"$gt": "big"}}]}, "filter.$or[1].x.$gt", "number"),
    ({"$and": [{"kw": "a"}, 3]}, "filter.$and[1]", "JSON object"),
    ({"$not": "kw"}, "filter.$not", "JSON object"),
    ({"n": {}}, "filter.n", "empty"),
    ({"n": {"$exists": "yes"}}, "filter.n.$exists", "true or false"),
    ({"n": {"$not": 3}}, "filter.n.$not", "operator object"),
    ([{"kw": "a"}], "filter", "dictionary"),  # not an object: refused by the request model
    ("kw", "filter", "dictionary"),
]


def _deep(levels: int) -> dict[str, Any]:
    raw: dict[str, Any] = {"kw": "a"}
    for _ in range(levels):
        raw = {"$not": raw}
    return raw


BAD.append((_deep(40), "filter" + ".$not" * 17, "16 levels"))


@pytest.fixture
def refusals(client: TestClient) -> Iterator[TestClient]:
    """Collection `refusals` with points for alice and bob; the test's requests must change
    nothing (counts and scrolls equal before and after)."""
    create_collection(client, F, dim=DIM, schema=F_SCHEMA)
    attributes = {"kw": "a", "n": 1, "x": 0.5, "b": True, "tags": ["a"], "at": "2024-01-01"}
    upsert(client, F, "alice", [
        {"id": "a0", "vector": [1, 0, 0, 0], "attributes": attributes, "shared_with": ["bob"]},
        {"id": "a1", "vector": [0, 1, 0, 0], "attributes": {}},
    ])  # fmt: skip
    upsert(client, F, "bob", [{"id": "b0", "vector": [0, 0, 1, 0], "attributes": attributes}])

    def state() -> dict[str, Any]:
        return {
            t: (count_of(client, F, t, None), _ids(scroll_all(client, F, t)[0]))
            for t in ("alice", "bob")
        }

    before = state()
    assert before["alice"][0] == 2 and before["bob"][0] == 2
    yield client
    assert state() == before


def refused_everywhere(client: TestClient, raw: Any) -> list[tuple[str, httpx.Response]]:
    """(path prefix, response) of every endpoint that takes a filter, given `raw`."""
    q = {"vector": [1, 0, 0, 0], "k": 3}
    ok = {**q, "filter": {"kw": "a"}}
    return [
        ("", client.post(f"{points_url(F, 'alice')}/count", json={"filter": raw})),
        ("", client.post(f"{points_url(F, 'alice')}/scroll", json={"filter": raw})),
        ("", client.post(f"{points_url(F, 'alice')}/delete", json={"filter": raw})),
        ("", client.post(f"{tenant_url(F, 'alice')}/query", json={**q, "filter": raw})),
        ("", client.post(f"{collection_url(F)}/query", json={**q, "filter": raw})),
        (
            "queries[2].",
            client.post(
                f"{tenant_url(F, 'alice')}/query/batch",
                json={"queries": [ok, q, {**q, "filter": raw}, ok]},
            ),
        ),
    ]


@pytest.mark.parametrize(("raw", "path", "words"), BAD, ids=[f"{p}:{w}" for _, p, w in BAD])
def test_bad_filter_is_422_naming_the_path_and_changes_nothing(
    refusals: TestClient, raw: Any, path: str, words: str
) -> None:
    for prefix, response in refused_everywhere(refusals, raw):
        message = assert_error(response, 422, "invalid", prefix + path)
        assert words in message, message


def test_unknown_field_message_says_to_declare_it(refusals: TestClient) -> None:
    response = refusals.post(f"{points_url(F, 'alice')}/count", json={"filter": {"size": 3}})
    message = assert_error(response, 422, "invalid", "filter.size")
    assert "schema" in message and "declare" in message


@pytest.mark.parametrize(
    "body",
    [{"ids": ["a0"], "filter": {"kw": "a"}}, {}, {"ids": None, "filter": None}],
    ids=["both", "neither", "both-null"],
)
def test_delete_takes_ids_or_a_filter_exactly(refusals: TestClient, body: dict[str, Any]) -> None:
    response = refusals.post(f"{points_url(F, 'alice')}/delete", json=body)
    message = assert_error(response, 422, "invalid", "ids")
    assert "filter" in message


def test_batch_query_names_the_query_with_the_bad_filter(refusals: TestClient) -> None:
    q = {"vector": [1, 0, 0, 0], "k": 2}
    queries = [
        {**q, "filter": {"kw": "a"}},
        {**q, "filter": {"n": {"$gt": 0}}},
        {**q, "filter": {"n": {"$gt": 0}, "x": {"$lt": "small"}}},
    ]
    response = refusals.post(f"{tenant_url(F, 'alice')}/query/batch", json={"queries": queries})
    assert_error(response, 422, "invalid", "queries[2].filter.x.$lt")
    del queries[2]
    response = refusals.post(f"{tenant_url(F, 'alice')}/query/batch", json={"queries": queries})
    assert response.status_code == 200, response.text
    assert [len(r["results"]) for r in response.json()["queries"]] == [1, 1]


def test_delete_by_filter_past_the_limit_is_413_and_deletes_nothing(tmp_path: Path) -> None:
    with app_client(tmp_path / "data", max_delete_points=2) as client:
        create_collection(client, "small", dim=DIM, schema={"kw": "keyword"})
        points = [
            {"id": f"p{i}", "vector": [1, i, 0, 0], "attributes": {"kw": "a" if i < 3 else "b"}}
            for i in range(5)
        ]
        upsert(client, "small", "alice", points)
        response = client.post(
            f"{points_url('small', 'alice')}/delete", json={"filter": {"kw": "a"}}
        )
        message = assert_error(response, 413, "too_large", "filter")
        assert "3 points" in message
        assert count_of(client, "small", "alice", None) == 5
        response = client.post(
            f"{points_url('small', 'alice')}/delete", json={"filter": {"kw": "b"}}
        )
        assert response.json() == {"deleted": 2, "not_found": []}


def test_integer_bounds_beyond_int64_match_no_point(client: TestClient) -> None:
    """Regression: such bounds were clamped inclusively, so `n > 2**63 - 1` counted the point
    holding 2**63 - 1 (fixed in 0c586e0)."""
    create_collection(client, "edge", dim=DIM, schema={"n": "integer"})
    upsert(client, "edge", "alice", [
        {"id": "max", "vector": [1, 0, 0, 0], "attributes": {"n": 2**63 - 1}},
        {"id": "min", "vector": [0, 1, 0, 0], "attributes": {"n": -(2**63)}},
    ])  # fmt: skip
    for raw in [{"n": {"$gt": 2**63 - 1}}, {"n": {"$gt": 1e30}}, {"n": {"$lt": -1e30}}]:
        assert count_of(client, "edge", "alice", raw) == 0, raw
    assert count_of(client, "edge", "alice", {"n": {"$gte": 2**63 - 1}}) == 1
    assert count_of(client, "edge", "alice", {"n": {"$lte": -(2**63)}}) == 1


@pytest.mark.parametrize("text", ["2024-05-10X10:00:00Z", "2024-05-10_10:00", "2024-05-10T"])
def test_a_datetime_with_a_separator_other_than_t_or_space_is_422(
    client: TestClient, text: str
) -> None:
    create_collection(client, "dates", dim=DIM, schema={"at": "datetime"})
    upsert(client, "dates", "alice", [{"id": "p", "vector": [1, 0, 0, 0], "attributes": {}}])
    response = client.post(f"{points_url('dates', 'alice')}/count", json={"filter": {"at": text}})
    assert_error(response, 422, "invalid", "filter.at")
    point = {"id": "q", "vector": [1, 0, 0, 0], "attributes": {"at": text}}
    response = client.put(points_url("dates", "alice"), json={"points": [point]})
    assert_error(response, 422, "invalid", "points[0].attributes.at")


def test_rfc3339_lowercase_t_and_z_are_the_same_instant(client: TestClient) -> None:
    create_collection(client, "lower", dim=DIM, schema={"at": "datetime"})
    points = [
        {"id": "lower", "vector": [1, 0, 0, 0], "attributes": {"at": "2024-05-10t10:00:00z"}},
        {"id": "upper", "vector": [0, 1, 0, 0], "attributes": {"at": "2024-05-10T12:00:00+02:00"}},
    ]
    upsert(client, "lower", "alice", points)
    assert count_of(client, "lower", "alice", {"at": "2024-05-10T10:00:00Z"}) == 2
    assert count_of(client, "lower", "alice", {"at": {"$gt": "2024-05-10t09:59:59z"}}) == 2
