"""Collections: create, list, describe, delete; their validation; 404 below an unknown one."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import assert_error, create_collection, points_url, tenant_url, upsert

ALL_TYPES = {
    "section": "keyword",
    "size": "integer",
    "score": "float",
    "essential": "boolean",
    "tags": "keyword[]",
    "updated": "datetime",
}


def test_create_returns_201_with_the_collection(client: TestClient) -> None:
    before = time.time()
    response = client.post(
        "/v1/collections",
        json={"name": "docs", "dim": 384, "metric": "l2", "schema": ALL_TYPES},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {
        "name", "dim", "metric", "schema", "created_at", "points", "tenants", "index", "curator",
        "graphs", "indexing",
    }  # fmt: skip
    assert body["index"]["ef"] == 128
    assert body["curator"] == {"trained": False}
    assert body["name"] == "docs"
    assert body["dim"] == 384
    assert body["metric"] == "l2"
    assert body["schema"] == ALL_TYPES
    assert before - 5 <= body["created_at"] <= time.time() + 5
    assert body["points"] == 0
    assert body["tenants"] == 0


def test_metric_defaults_to_cosine_and_schema_to_empty(client: TestClient) -> None:
    response = client.post("/v1/collections", json={"name": "plain", "dim": 3})
    assert response.status_code == 201, response.text
    assert response.json()["metric"] == "cosine"
    assert response.json()["schema"] == {}


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_every_metric_is_accepted(client: TestClient, metric: str) -> None:
    assert create_collection(client, f"c-{metric}", 8, metric)["metric"] == metric


@pytest.mark.parametrize("dim", [1, 4096])
def test_dimension_bounds_are_inclusive(client: TestClient, dim: int) -> None:
    assert create_collection(client, f"d{dim}", dim)["dim"] == dim


def test_list_returns_every_collection_by_name(client: TestClient) -> None:
    assert client.get("/v1/collections").json() == {"collections": []}
    for name in ["zeta", "alpha", "mid.dle_1-x"]:
        create_collection(client, name, 3)
    response = client.get("/v1/collections")
    assert response.status_code == 200
    names = [c["name"] for c in response.json()["collections"]]
    assert names == ["alpha", "mid.dle_1-x", "zeta"]


def test_get_describes_the_collection_with_counts(client: TestClient) -> None:
    created = create_collection(client, "docs", 3, "ip", {"section": "keyword"})
    upsert(client, "docs", "a", [{"id": "1", "vector": [1, 0, 0], "shared_with": ["b"]}])
    upsert(client, "docs", "a", [{"id": "2", "vector": [0, 1, 0]}])
    upsert(client, "docs", "c", [{"id": "1", "vector": [0, 0, 1]}])
    response = client.get("/v1/collections/docs")
    assert response.status_code == 200
    body = response.json()
    assert body == {**created, "points": 3, "tenants": 3}
    listed = client.get("/v1/collections").json()["collections"]
    assert listed == [body]


def test_delete_removes_the_collection_then_it_is_404(client: TestClient) -> None:
    create_collection(client, "docs", 3)
    upsert(client, "docs", "a", [{"id": "1", "vector": [1, 0, 0]}])
    response = client.delete("/v1/collections/docs")
    assert response.status_code == 200
    assert response.json() == {"deleted": True}
    assert_error(client.get("/v1/collections/docs"), 404, "not_found")
    assert_error(client.delete("/v1/collections/docs"), 404, "not_found")
    assert client.get("/v1/collections").json() == {"collections": []}


def test_a_recreated_collection_starts_empty(client: TestClient) -> None:
    create_collection(client, "docs", 3)
    upsert(client, "docs", "a", [{"id": "1", "vector": [1, 0, 0], "shared_with": ["b"]}])
    assert client.delete("/v1/collections/docs").status_code == 200
    recreated = create_collection(client, "docs", 5, "l2")
    assert recreated["dim"] == 5
    assert recreated["points"] == 0
    assert recreated["tenants"] == 0
    assert_error(client.get(f"{tenant_url('docs', 'a')}"), 404, "not_found")
    assert client.get("/v1/collections/docs/tenants").json()["tenants"] == []


def test_duplicate_name_is_409(client: TestClient) -> None:
    create_collection(client, "docs", 3)
    response = client.post("/v1/collections", json={"name": "docs", "dim": 8})
    assert_error(response, 409, "conflict")
    assert client.get("/v1/collections/docs").json()["dim"] == 3


INVALID_NAMES = ["", "-dash", ".dot", "has space", "slash/name", "ünïcode", "a" * 129, "a$b"]


def test_invalid_name_is_422(client: TestClient) -> None:
    for name in INVALID_NAMES:
        response = client.post("/v1/collections", json={"name": name, "dim": 3})
        assert_error(response, 422, "invalid", "name")
    assert client.get("/v1/collections").json() == {"collections": []}


def test_longest_name_is_accepted(client: TestClient) -> None:
    assert create_collection(client, "a" * 128, 3)["name"] == "a" * 128


@pytest.mark.parametrize("dim", [0, -1, 4097, 1_000_000])
def test_dimension_out_of_range_is_422(client: TestClient, dim: int) -> None:
    response = client.post("/v1/collections", json={"name": "docs", "dim": dim})
    assert_error(response, 422, "invalid", "dim")
    assert client.get("/v1/collections").json() == {"collections": []}


@pytest.mark.parametrize("dim", [3.5, "x", None])
def test_non_integer_dimension_is_422(client: TestClient, dim: Any) -> None:
    response = client.post("/v1/collections", json={"name": "docs", "dim": dim})
    assert_error(response, 422, "invalid", "dim")


def test_boolean_dimension_is_422(client: TestClient) -> None:
    response = client.post("/v1/collections", json={"name": "docs", "dim": True})
    assert_error(response, 422, "invalid", "dim")
    assert client.get("/v1/collections").json() == {"collections": []}


def test_missing_dimension_is_422(client: TestClient) -> None:
    assert_error(client.post("/v1/collections", json={"name": "docs"}), 422, "invalid", "dim")


@pytest.mark.parametrize("metric", ["dot", "euclidean", "COSINE", ""])
def test_unknown_metric_is_422(client: TestClient, metric: str) -> None:
    response = client.post("/v1/collections", json={"name": "docs", "dim": 3, "metric": metric})
    assert_error(response, 422, "invalid", "metric")
    assert client.get("/v1/collections").json() == {"collections": []}


@pytest.mark.parametrize("field_type", ["text", "int", "keywords", "string", "date"])
def test_unknown_schema_type_is_422(client: TestClient, field_type: str) -> None:
    body = {"name": "docs", "dim": 3, "schema": {"ok": "keyword", "color": field_type}}
    assert_error(client.post("/v1/collections", json=body), 422, "invalid", "schema.color")
    assert client.get("/v1/collections").json() == {"collections": []}


@pytest.mark.parametrize("field", ["a.b", "$where"])
def test_invalid_schema_field_name_is_422(client: TestClient, field: str) -> None:
    body = {"name": "docs", "dim": 3, "schema": {field: "keyword"}}
    assert_error(client.post("/v1/collections", json=body), 422, "invalid", "schema")
    assert client.get("/v1/collections").json() == {"collections": []}


def test_unknown_field_in_create_is_422(client: TestClient) -> None:
    body = {"name": "docs", "dim": 3, "metrc": "l2"}
    assert_error(client.post("/v1/collections", json=body), 422, "invalid", "metrc")


def _nested_requests(tenant: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    c = "/v1/collections/nope"
    t = f"{c}/tenants/{tenant}"
    query = {"vector": [1.0, 0.0, 0.0], "k": 3}
    return [
        ("GET", c, None),
        ("DELETE", c, None),
        ("GET", f"{c}/tenants", None),
        ("GET", t, None),
        ("PUT", t, None),
        ("DELETE", t, None),
        ("PUT", f"{t}/points", {"points": [{"id": "p", "vector": [1.0, 0.0, 0.0]}]}),
        ("GET", f"{t}/points/p", None),
        ("PATCH", f"{t}/points/p", {"attributes": {"a": 1}}),
        ("POST", f"{t}/points/delete", {"ids": ["p"]}),
        ("POST", f"{t}/points/p/grants", {"tenant": "b"}),
        ("DELETE", f"{t}/points/p/grants/b", None),
        ("POST", f"{t}/points/scroll", {}),
        ("POST", f"{t}/points/count", {}),
        ("POST", f"{t}/query", query),
        ("POST", f"{t}/query/batch", {"queries": [query]}),
        ("POST", f"{c}/query", query),
    ]


def test_unknown_collection_is_404_on_every_route(client: TestClient) -> None:
    create_collection(client, "other", 3)
    upsert(client, "other", "a", [{"id": "p", "vector": [1, 0, 0], "shared_with": ["b"]}])
    for method, url, body in _nested_requests("a") + _nested_requests("team%2Fa"):
        response = client.request(method, url, json=body)
        assert response.status_code == 404, (method, url, response.text)
        message = assert_error(response, 404, "not_found")
        assert "nope" in message, (method, url, message)
    # The collection that does exist is untouched, and none was created.
    assert client.get("/v1/collections/other").json()["points"] == 1
    assert [c["name"] for c in client.get("/v1/collections").json()["collections"]] == ["other"]


def test_deleted_collection_is_404_for_its_points(client: TestClient) -> None:
    create_collection(client, "docs", 3)
    upsert(client, "docs", "a", [{"id": "p", "vector": [1, 0, 0]}])
    client.delete("/v1/collections/docs")
    assert_error(client.get(f"{points_url('docs', 'a')}/p"), 404, "not_found")
    response = client.post(f"{tenant_url('docs', 'a')}/query", json={"vector": [1, 0, 0]})
    assert_error(response, 404, "not_found")
