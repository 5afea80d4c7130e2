"""Schema changes (PATCH /v1/collections/{c} {"schema": {...}}): declaring a field makes the
points already stored filterable once the background pass is done, checks new writes against
it, never changes a declared type, and survives a restart; stored values of the wrong type stay
unindexed (they match as missing)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import (
    assert_error,
    collection_url,
    count,
    create_collection,
    point_url,
    points_url,
    scroll_all,
    tenant_url,
    upsert,
)
from tests.support import app_client

C = "docs"
DIM = 4
# Written before any field is declared: values of every type, wrong-typed ones, nulls, gaps.
EARLY: dict[str, dict[str, Any]] = {
    "p0": {"color": "red", "size": 10, "seen": "2024-05-01T12:00:00+02:00", "tags": ["a", "b"]},
    "p1": {"color": "blue", "size": 20.5, "seen": "2024-05-01T10:00:00Z", "tags": []},
    "p2": {"color": 5, "size": "big", "seen": "yesterday", "tags": "a", "flag": True},
    "p3": {"color": None, "size": True, "seen": "2024-05-01", "flag": "yes"},
    "p4": {"size": 30, "tags": ["b", 1]},
    "p5": {"color": ["red"], "seen": 1714564800, "flag": False},
}
NEW_FIELDS = {
    "color": "keyword",
    "size": "integer",
    "seen": "datetime",
    "tags": "keyword[]",
    "flag": "boolean",
}


def _vector(i: int) -> list[float]:
    return [1.0, float(i), 0.0, 0.5]


def wait_indexed(client: TestClient, collection: str = C, timeout_s: float = 30.0) -> None:
    """Poll the collection until no field is still being indexed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get(collection_url(collection))
        assert response.status_code == 200, response.text
        if response.json()["indexing"] == []:
            return
        time.sleep(0.01)
    raise AssertionError("the new fields are still being indexed")


def patch_schema(client: TestClient, fields: dict[str, str], collection: str = C) -> Any:
    return client.patch(collection_url(collection), json={"schema": fields})


def matching(client: TestClient, raw: dict[str, Any], tenant: str = "alice") -> list[str]:
    response = client.post(f"{points_url(C, tenant)}/scroll", json={"filter": raw})
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return sorted(p["id"] for p in response.json()["points"])


def filtered_count(client: TestClient, raw: dict[str, Any], tenant: str = "alice") -> int:
    response = client.post(f"{points_url(C, tenant)}/count", json={"filter": raw})
    assert response.status_code == 200, response.text
    return response.json()["count"]


@pytest.fixture
def early(client: TestClient) -> TestClient:
    """Collection `docs` with only `kind` declared; alice wrote EARLY (untyped attributes)."""
    create_collection(client, C, dim=DIM, schema={"kind": "keyword"})
    points = [
        {"id": pid, "vector": _vector(i), "attributes": {**attributes, "kind": "doc"}}
        for i, (pid, attributes) in enumerate(EARLY.items())
    ]
    upsert(client, C, "alice", points)
    return client


# What each declared field should match once indexed: wrong types, nulls and gaps are missing.
EXPECTED = [
    ({"color": "red"}, ["p0"]),  # not p5 (a list) nor p2 (a number)
    ({"color": {"$in": ["red", "blue"]}}, ["p0", "p1"]),
    ({"color": {"$exists": False}}, ["p2", "p3", "p4", "p5"]),
    ({"color": {"$ne": "red"}}, ["p1", "p2", "p3", "p4", "p5"]),
    ({"size": {"$gte": 10}}, ["p0", "p4"]),  # 20.5 is not an integer, True not a number
    ({"size": {"$exists": True}}, ["p0", "p4"]),
    ({"seen": "2024-05-01T10:00:00Z"}, ["p0", "p1"]),  # the same instant, two offsets
    ({"seen": {"$lt": "2024-05-01T00:00:01Z"}}, ["p3"]),  # a date alone: midnight UTC
    ({"seen": {"$exists": False}}, ["p2", "p4", "p5"]),
    ({"tags": "a"}, ["p0"]),  # p2's "a" is a string, not a list
    ({"tags": {"$exists": True}}, ["p0", "p1"]),  # [] is present; ["b", 1] is not a keyword[]
    ({"tags": {"$all": []}}, ["p0", "p1"]),
    ({"flag": True}, ["p2"]),
    ({"flag": {"$in": [True, False]}}, ["p2", "p5"]),
    ({"$or": [{"color": "blue"}, {"flag": False}]}, ["p1", "p5"]),
]


def test_a_declared_field_makes_existing_points_filterable_once_indexed(early: TestClient) -> None:
    for name in NEW_FIELDS:
        message = assert_error(
            early.post(f"{points_url(C, 'alice')}/count", json={"filter": {name: 1}}),
            422,
            "invalid",
            f"filter.{name}",
        )
        assert "declare" in message
    response = patch_schema(early, NEW_FIELDS)
    assert response.status_code == 200, response.text
    assert response.json()["schema"] == {"kind": "keyword", **NEW_FIELDS}
    assert set(response.json()["indexing"]) <= set(NEW_FIELDS)
    wait_indexed(early)
    for raw, expected in EXPECTED:
        assert matching(early, raw) == expected, raw
        assert filtered_count(early, raw) == len(expected), raw
    # The stored attributes are kept as written, wrong types included.
    points = {p["id"]: p["attributes"] for p in scroll_all(early, C, "alice")[0]}
    assert points == {pid: {**attributes, "kind": "doc"} for pid, attributes in EARLY.items()}


def test_exact_query_and_delete_use_a_newly_declared_field(early: TestClient) -> None:
    assert patch_schema(early, {"color": "keyword"}).status_code == 200
    wait_indexed(early)
    body = {"vector": _vector(0), "k": 10, "exact": True, "filter": {"color": {"$ne": "red"}}}
    hits = early.post(f"{tenant_url(C, 'alice')}/query", json=body).json()["results"]
    assert sorted(hit["id"] for hit in hits) == ["p1", "p2", "p3", "p4", "p5"]
    response = early.post(f"{points_url(C, 'alice')}/delete", json={"filter": {"color": "red"}})
    assert response.json() == {"deleted": 1, "not_found": []}
    assert count(early, C, "alice") == 5
    assert matching(early, {"color": "red"}) == []


def test_new_writes_are_checked_against_a_declared_field(early: TestClient) -> None:
    assert patch_schema(early, {"color": "keyword", "size": "integer"}).status_code == 200
    wait_indexed(early)
    before = scroll_all(early, C, "alice")[0]
    bad = [
        {"id": "n0", "vector": _vector(9), "attributes": {"color": "green"}},
        {"id": "n1", "vector": _vector(9), "attributes": {"size": 1.5}},
    ]
    response = early.put(points_url(C, "alice"), json={"points": bad})
    assert_error(response, 422, "invalid", "points[1].attributes.size")
    response = early.put(points_url(C, "alice"), json={"points": [{**bad[0], "id": "p0"}]})
    assert response.status_code == 200  # a good value is fine, and indexed at once
    assert matching(early, {"color": "green"}) == ["p0"]
    response = early.patch(point_url(C, "alice", "p1"), json={"attributes": {"color": 7}})
    assert_error(response, 422, "invalid", "attributes.color")
    after = {p["id"]: p["attributes"] for p in scroll_all(early, C, "alice")[0]}
    assert len(after) == len(before) and after["p1"] == {**EARLY["p1"], "kind": "doc"}


def test_a_point_holding_a_wrong_typed_value_is_patched_only_to_fix_it(early: TestClient) -> None:
    assert patch_schema(early, {"color": "keyword"}).status_code == 200
    wait_indexed(early)
    url = point_url(C, "alice", "p2")  # "color": 5
    assert_error(
        early.patch(url, json={"attributes": {"x": 1}}), 422, "invalid", "attributes.color"
    )
    response = early.patch(url, json={"attributes": {"color": "blue"}})
    assert response.status_code == 200, response.text
    assert matching(early, {"color": "blue"}) == ["p1", "p2"]


def test_changing_a_declared_type_is_409_and_changes_nothing(early: TestClient) -> None:
    assert patch_schema(early, {"color": "keyword"}).status_code == 200
    for fields in [
        {"color": "integer"},
        {"kind": "keyword[]"},
        {"added": "float", "kind": "float"},
    ]:
        name = next(n for n in fields if n != "added")
        message = assert_error(patch_schema(early, fields), 409, "conflict", f"schema.{name}")
        assert "cannot change" in message
    schema = early.get(collection_url(C)).json()["schema"]
    assert schema == {"kind": "keyword", "color": "keyword"}  # `added` was not added either
    # The same type again is no change at all; nor is an empty schema.
    for fields in [{"color": "keyword"}, {}]:
        response = patch_schema(early, fields)
        assert response.status_code == 200 and response.json()["schema"] == schema


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"color": "string"}, "schema.color"),
        ({"ok": "keyword", "color": "keywords"}, "schema.color"),
        ({"color": "Keyword"}, "schema.color"),
        ({"$color": "keyword"}, "schema.$color"),
        ({"a.b": "keyword"}, "schema.a.b"),
        ({"": "keyword"}, "schema"),
    ],
)
def test_an_invalid_type_or_field_name_is_422_and_changes_nothing(
    early: TestClient, fields: dict[str, str], path: str
) -> None:
    assert_error(patch_schema(early, fields), 422, "invalid", path)
    body = early.get(collection_url(C)).json()
    assert body["schema"] == {"kind": "keyword"} and body["indexing"] == []


def test_only_the_schema_can_be_patched(early: TestClient) -> None:
    response = early.patch(collection_url(C), json={"dim": 8})
    assert_error(response, 422, "invalid", "dim")
    assert early.get(collection_url(C)).json()["dim"] == DIM


def test_a_filter_on_an_undeclared_field_says_to_declare_it(early: TestClient) -> None:
    for where, raw in [("filter.color", {"color": "red"}), ("filter.$or[1].size", {
        "$or": [{"kind": "doc"}, {"size": {"$gt": 1}}]
    })]:  # fmt: skip
        for response in [
            early.post(f"{points_url(C, 'alice')}/count", json={"filter": raw}),
            early.post(f"{points_url(C, 'alice')}/delete", json={"filter": raw}),
            early.post(
                f"{tenant_url(C, 'alice')}/query", json={"vector": _vector(0), "filter": raw}
            ),
        ]:
            message = assert_error(response, 422, "invalid", where)
            assert "not in the collection schema" in message and "declare it" in message
    assert count(early, C, "alice") == len(EARLY)


def test_the_schema_and_its_index_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with app_client(data) as client:
        create_collection(client, C, dim=DIM, schema={"kind": "keyword"})
        points = [
            {"id": pid, "vector": _vector(i), "attributes": attributes}
            for i, (pid, attributes) in enumerate(EARLY.items())
        ]
        upsert(client, C, "alice", points)
        assert patch_schema(client, NEW_FIELDS).status_code == 200
        wait_indexed(client)
        upsert(client, C, "bob", [{"id": "b0", "vector": _vector(1), "attributes": {"size": 11}}])
    with app_client(data) as client:
        body = client.get(collection_url(C)).json()
        assert body["schema"] == {"kind": "keyword", **NEW_FIELDS}
        assert body["indexing"] == []
        for raw, expected in EXPECTED:  # rebuilt by recovery, wrong types still unindexed
            assert matching(client, raw) == expected, raw
        assert matching(client, {"size": {"$gt": 10}}, "bob") == ["b0"]
        response = client.put(
            points_url(C, "bob"),
            json={"points": [{"id": "b1", "vector": _vector(2), "attributes": {"size": "x"}}]},
        )
        assert_error(response, 422, "invalid", "points[0].attributes.size")
        assert_error(patch_schema(client, {"size": "float"}), 409, "conflict", "schema.size")


# -- while the background pass runs -------------------------------------------------------------

MANY = 12_000  # three chunks of the background pass (4,096 points per write-mutex hold)


@pytest.fixture
def big(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(tmp_path / "data", max_batch_points=MANY) as client:
        create_collection(client, C, dim=2, metric="l2")
        rng = np.random.default_rng(3)
        vectors = rng.normal(size=(MANY, 2)).round(3).tolist()
        points = [
            {"id": f"p{i}", "vector": vectors[i], "attributes": {"n": i % 10}} for i in range(MANY)
        ]
        upsert(client, C, "alice", points)
        yield client


def test_filters_on_a_field_being_indexed_answer_503_until_it_is_done(big: TestClient) -> None:
    """The background pass takes the collection's write mutex per chunk. The test takes that
    mutex (the real lock, from the app's database) as soon as the declaration is applied, before
    the pass can start its first chunk, and looks while the pass waits."""
    collection = big.app.state.database.collection(C)
    with ThreadPoolExecutor(1) as pool:
        patched = pool.submit(patch_schema, big, {"n": "integer"})
        deadline = time.monotonic() + 30
        while not collection.indexing:  # set while the PATCH holds the mutex
            assert time.monotonic() < deadline and not patched.done(), "no declaration seen"
            time.sleep(0.0001)
        with collection.write_mutex():
            response = patched.result(timeout=30)
            assert response.status_code == 200, response.text
            assert response.json()["indexing"] == ["n"]
            assert big.get(collection_url(C)).json()["indexing"] == ["n"]
            vector = {"vector": [1, 0]}
            for response in [
                big.post(f"{points_url(C, 'alice')}/count", json={"filter": {"n": 3}}),
                big.post(f"{points_url(C, 'alice')}/scroll", json={"filter": {"n": 3}}),
                big.post(f"{tenant_url(C, 'alice')}/query", json={**vector, "filter": {"n": 3}}),
                big.post(f"{collection_url(C)}/query", json={**vector, "filter": {"n": 3}}),
            ]:
                message = assert_error(response, 503, "not_ready", "filter")
                assert "'n'" in message and "still being indexed" in message
            # Requests without that field are served meanwhile.
            assert big.post(f"{points_url(C, 'alice')}/count", json={}).json()["count"] == MANY
    wait_indexed(big)
    assert filtered_count(big, {"n": 3}) == MANY // 10
    assert filtered_count(big, {"n": {"$gte": 5}, "$not": {"n": 9}}) == MANY // 10 * 4


def test_writes_during_the_background_pass_are_kept(big: TestClient) -> None:
    """Points rewritten or deleted right after the declaration (usually while the pass still
    runs: it takes about 50 ms here) end up indexed with their new values, whatever the
    interleaving: the pass re-reads each point under the write mutex."""
    assert patch_schema(big, {"n": "integer"}).status_code == 200
    rewritten = [
        {"id": f"p{i}", "vector": [1.0, 0.0], "attributes": {"n": 100}} for i in range(0, 600, 3)
    ]
    upsert(big, C, "alice", rewritten)
    doomed = [f"p{i}" for i in range(1, 600, 3)]
    response = big.post(f"{points_url(C, 'alice')}/delete", json={"ids": doomed})
    assert response.json() == {"deleted": len(doomed), "not_found": []}
    wait_indexed(big)
    kept = {i: i % 10 for i in range(MANY) if not (i < 600 and i % 3 == 1)}
    kept.update({i: 100 for i in range(0, 600, 3)})
    assert filtered_count(big, {"n": 100}) == len(rewritten)
    assert filtered_count(big, {}) == len(kept)
    for value in (0, 3, 9):
        expected = sum(1 for n in kept.values() if n == value)
        assert filtered_count(big, {"n": value}) == expected
