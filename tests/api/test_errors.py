"""Every validation error: its status, the envelope, a message naming the field, and that the
failed request changed nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import (
    assert_error,
    collection_url,
    enc,
    point_url,
    points_url,
    scroll_all,
    tenant_url,
)
from tests.support import app_client

C = "errs"
SCHEMA = {
    "kw": "keyword",
    "int": "integer",
    "flt": "float",
    "flag": "boolean",
    "tags": "keyword[]",
    "when": "datetime",
}
GOOD_ATTRS = {
    "kw": "a",
    "int": 1,
    "flt": 0.5,
    "flag": True,
    "tags": ["x", "y"],
    "when": "2024-05-01T12:00:00Z",
    "free": {"any": ["thing", 1, None]},
}
JSON = {"content-type": "application/json"}

# The server turns values beyond float32 into inf with a numpy cast, which warns.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")


def good(point_id: str = "new", **extra: Any) -> dict[str, Any]:
    return {"id": point_id, "vector": [0.1, 0.2, 0.3, 0.4], **extra}


@pytest.fixture
def api(client: TestClient) -> TestClient:
    """Collection `errs` (dim 4, cosine, every field type); alice owns p0 (shared with bob) and
    p1; bob owns b0."""
    response = client.post("/v1/collections", json={"name": C, "dim": 4, "schema": SCHEMA})
    assert response.status_code == 201, response.text
    points = [
        {"id": "p0", "vector": [1, 0, 0, 0], "attributes": GOOD_ATTRS, "shared_with": ["bob"]},
        {"id": "p1", "vector": [0, 1, 0, 0], "attributes": {"kw": "b"}},
    ]
    assert client.put(points_url(C, "alice"), json={"points": points}).status_code == 200
    b0 = {"points": [{"id": "b0", "vector": [0, 0, 1, 0]}]}
    assert client.put(points_url(C, "bob"), json=b0).status_code == 200
    return client


def state(client: TestClient) -> dict[str, Any]:
    """Everything a failed request could have changed."""
    tenants = client.get(f"{collection_url(C)}/tenants").json()["tenants"]
    return {
        "collections": client.get("/v1/collections").json(),
        "tenants": tenants,
        "points": {
            t["name"]: sorted(
                scroll_all(client, C, t["name"], with_vector=True)[0],
                key=lambda p: (p["owner"], p["id"]),
            )
            for t in tenants
        },
    }


@pytest.fixture
def unchanged(api: TestClient) -> Iterator[TestClient]:
    """The test's requests must all fail without changing the store."""
    before = state(api)
    yield api
    assert state(api) == before


def put_points(client: TestClient, points: list[Any], tenant: str = "alice") -> Any:
    return client.put(points_url(C, tenant), json={"points": points})


# -- vectors ----------------------------------------------------------------------------


def test_wrong_dimension_names_the_point(unchanged: TestClient) -> None:
    batch = [good("n0"), {"id": "n1", "vector": [1, 2, 3]}, good("n2")]
    message = assert_error(put_points(unchanged, batch), 422, "invalid", "points[1].vector")
    assert "4" in message and "3" in message
    batch = [good("n0"), good("n1"), {"id": "n2", "vector": [1, 2, 3, 4, 5]}]
    assert_error(put_points(unchanged, batch), 422, "invalid", "points[2].vector")
    assert_error(put_points(unchanged, [{"id": "n", "vector": []}]), 422, "invalid", "points[0]")


def test_wrong_dimension_on_reupsert_keeps_the_old_point(unchanged: TestClient) -> None:
    batch = [{"id": "p0", "vector": [1, 0, 0], "attributes": {"kw": "changed"}}]
    assert_error(put_points(unchanged, batch), 422, "invalid", "points[0].vector")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf"])
def test_non_finite_literals_are_malformed_json(unchanged: TestClient, literal: bytes) -> None:
    body = b'{"points": [{"id": "n", "vector": [' + literal + b", 1.0, 2.0, 3.0]}]}"
    response = unchanged.put(points_url(C, "alice"), content=body, headers=JSON)
    assert_error(response, 400, "malformed")
    query = b'{"vector": [1.0, ' + literal + b", 2.0, 3.0]}"
    response = unchanged.post(f"{tenant_url(C, 'alice')}/query", content=query, headers=JSON)
    assert_error(response, 400, "malformed")


@pytest.mark.parametrize("value", [1e39, -1e39, 3.5e38, 1.7976931348623157e308])
def test_values_beyond_float32_are_422(unchanged: TestClient, value: float) -> None:
    batch = [good("n0"), {"id": "n1", "vector": [0.1, value, 0.2, 0.3]}]
    assert_error(put_points(unchanged, batch), 422, "invalid", "points[1].vector")
    response = unchanged.post(
        f"{tenant_url(C, 'alice')}/query", json={"vector": [0.1, 0.2, value, 0.3]}
    )
    assert_error(response, 422, "invalid", "vector")


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        ([0.0, 0.0, 0.0, 1e23], "its squared length overflows float32: scale it down"),
        ([1e20, 1e20, 1e20, 1e20], "its squared length overflows float32: scale it down"),
        ([0.0, 0.0, 0.0, 1e-30], "its length is too small for float32: scale it up"),
    ],
)
def test_lengths_float32_cannot_square_are_422(
    unchanged: TestClient, vector: list[float], message: str
) -> None:
    """Each value fits float32, but cosine distances divide by the squared length: one that
    overflows or vanishes would rank the point wrongly (all distances 1.0, or 0.0)."""
    batch = [good("n0"), {"id": "n1", "vector": vector}]
    assert_error(put_points(unchanged, batch), 422, "invalid", f"points[1].vector: {message}")
    response = unchanged.post(f"{tenant_url(C, 'alice')}/query", json={"vector": vector})
    assert_error(response, 422, "invalid", f"vector: {message}")


@pytest.mark.parametrize("bad", ["1.5", True, None, [1.0], {"x": 1}])
def test_non_numbers_in_vectors_are_422(unchanged: TestClient, bad: Any) -> None:
    batch = [good("n0"), {"id": "n1", "vector": [0.1, 0.2, bad, 0.3]}]
    assert_error(put_points(unchanged, batch), 422, "invalid", "points[1].vector[2]")
    response = unchanged.post(
        f"{tenant_url(C, 'alice')}/query", json={"vector": [bad, 0.2, 0.3, 0.4]}
    )
    assert_error(response, 422, "invalid", "vector[0]")


@pytest.mark.parametrize("bad", ["1.5", None, {"0": 1.0}, 1.0])
def test_vector_that_is_not_a_list_is_422(unchanged: TestClient, bad: Any) -> None:
    assert_error(
        put_points(unchanged, [{"id": "n", "vector": bad}]), 422, "invalid", "points[0].vector"
    )


def test_missing_vector_or_id_is_422(unchanged: TestClient) -> None:
    assert_error(put_points(unchanged, [{"id": "n"}]), 422, "invalid", "points[0].vector")
    assert_error(put_points(unchanged, [{"vector": [1, 2, 3, 4]}]), 422, "invalid", "points[0].id")


def test_zero_vector_under_cosine_is_422(unchanged: TestClient) -> None:
    batch = [good("n0"), {"id": "n1", "vector": [0, 0, 0, 0]}]
    assert_error(put_points(unchanged, batch), 422, "invalid", "points[1].vector")
    response = unchanged.post(f"{tenant_url(C, 'alice')}/query", json={"vector": [0, 0, 0, 0]})
    assert_error(response, 422, "invalid", "vector")


def test_query_vector_of_wrong_dimension_is_422(unchanged: TestClient) -> None:
    for url in (f"{tenant_url(C, 'alice')}/query", f"{collection_url(C)}/query"):
        message = assert_error(
            unchanged.post(url, json={"vector": [1, 2, 3]}), 422, "invalid", "vector"
        )
        assert "4" in message and "3" in message


def test_batch_query_vector_error_names_the_query(unchanged: TestClient) -> None:
    queries = [{"vector": [1, 2, 3, 4]}, {"vector": [1, 2, 3]}]
    response = unchanged.post(f"{tenant_url(C, 'alice')}/query/batch", json={"queries": queries})
    assert_error(response, 422, "invalid", "queries[1].vector")


# -- ids and tenant names ---------------------------------------------------------------


def test_empty_id_is_422(unchanged: TestClient) -> None:
    assert_error(put_points(unchanged, [good("n0"), good("")]), 422, "invalid", "points[1].id")


def test_id_over_256_bytes_is_422(unchanged: TestClient) -> None:
    message = assert_error(put_points(unchanged, [good("x" * 257)]), 422, "invalid", "points[0].id")
    assert "257" in message
    multibyte = "é" * 200  # 200 characters, 400 bytes
    message = assert_error(put_points(unchanged, [good(multibyte)]), 422, "invalid", "points[0].id")
    assert "400" in message
    assert_error(put_points(unchanged, [good("🐟" * 65)]), 422, "invalid", "points[0].id")


def test_id_of_exactly_256_bytes_is_accepted(api: TestClient) -> None:
    for point_id in ["x" * 256, "é" * 128, "🐟" * 64]:
        response = put_points(api, [good(point_id)])
        assert response.status_code == 200, response.text
        assert api.get(point_url(C, "alice", point_id)).json()["id"] == point_id


CONTROL = ["a\x00b", "a\nb", "\t", "a\rb", "a\x1bb", "a\x1fb", "a\x7fb"]


def test_control_characters_in_ids_are_422(unchanged: TestClient) -> None:
    for bad in CONTROL:
        message = assert_error(
            put_points(unchanged, [good("n0"), good(bad)]), 422, "invalid", "points[1].id"
        )
        assert "control" in message
        response = unchanged.post(f"{points_url(C, 'alice')}/delete", json={"ids": ["p1", bad]})
        assert_error(response, 422, "invalid", "ids[1]")


def test_control_characters_in_tenant_names_are_422(unchanged: TestClient) -> None:
    for bad in CONTROL:
        # In the path: the field is the tenant (or the path, for the separator stand-in \x1f).
        field = "path" if bad == "a\x1fb" else "tenant"
        assert_error(unchanged.put(tenant_url(C, bad)), 422, "invalid", field)
        assert_error(put_points(unchanged, [good()], tenant=bad), 422, "invalid", field)
        # In bodies.
        batch = [good("n0", shared_with=["bob", bad])]
        assert_error(put_points(unchanged, batch), 422, "invalid", "points[0].shared_with[1]")
        response = unchanged.post(f"{point_url(C, 'alice', 'p1')}/grants", json={"tenant": bad})
        assert_error(response, 422, "invalid", "tenant")


def test_c1_control_characters_in_names_are_422(unchanged: TestClient) -> None:
    for bad in ["a\x85b", "a\x9fb"]:
        assert_error(put_points(unchanged, [good(bad)]), 422, "invalid", "points[0].id")
        assert_error(unchanged.put(tenant_url(C, bad)), 422, "invalid", "tenant")


def test_tenant_name_errors_are_422(unchanged: TestClient) -> None:
    assert_error(put_points(unchanged, [good()], tenant="t" * 257), 422, "invalid", "tenant")
    assert_error(unchanged.put(tenant_url(C, "é" * 129)), 422, "invalid", "tenant")
    batch = [good("n0", shared_with=[""])]
    assert_error(put_points(unchanged, batch), 422, "invalid", "points[0].shared_with[0]")
    batch = [good("n0", shared_with=["x" * 257])]
    assert_error(put_points(unchanged, batch), 422, "invalid", "points[0].shared_with[0]")
    batch = [good("n0", shared_with=["bob", "alice"])]
    assert_error(put_points(unchanged, batch), 422, "invalid", "points[0].shared_with[1]")
    response = unchanged.post(f"{point_url(C, 'alice', 'p1')}/grants", json={"tenant": ""})
    assert_error(response, 422, "invalid", "tenant")


def test_duplicate_ids_in_one_batch_are_422(unchanged: TestClient) -> None:
    batch = [good("a"), good("b"), good("a")]
    message = assert_error(put_points(unchanged, batch), 422, "invalid", "points[2].id")
    assert "duplicate" in message
    assert_error(put_points(unchanged, [good("p0"), good("p0")]), 422, "invalid", "points[1].id")


# -- attributes -------------------------------------------------------------------------


@pytest.mark.parametrize("attributes", [[1, 2], "text", 3, True])
def test_non_object_attributes_are_422(unchanged: TestClient, attributes: Any) -> None:
    batch = [good("n0"), good("n1", attributes=attributes)]
    assert_error(put_points(unchanged, batch), 422, "invalid", "points[1].attributes")
    response = unchanged.patch(point_url(C, "alice", "p1"), json={"attributes": attributes})
    assert_error(response, 422, "invalid", "attributes")


BAD_VALUES = {
    "kw": [1, True, ["a"], {"a": 1}, 1.5],
    "int": ["1", 1.5, 1.0, True, [1], 2**63, -(2**63) - 1],
    "flt": ["1.5", True, [1.0], {"v": 1}],
    "flag": [1, 0, "true", [True]],
    "tags": ["a", ["a", 1], [None], [["a"]], {"a": "b"}],
    "when": ["yesterday", 1714564800, "2024-13-01T00:00:00Z", "", True],
}


@pytest.mark.parametrize("field", sorted(BAD_VALUES))
def test_attributes_contradicting_the_schema_are_422(unchanged: TestClient, field: str) -> None:
    for value in BAD_VALUES[field]:
        batch = [good("n0"), good("n1", attributes={"ok": 1, field: value})]
        response = put_points(unchanged, batch)
        assert response.status_code == 422, (field, value, response.text)
        assert_error(response, 422, "invalid", f"points[1].attributes.{field}")
        # The same value in a patch, and in a re-upsert of an existing point.
        response = unchanged.patch(point_url(C, "alice", "p0"), json={"attributes": {field: value}})
        assert_error(response, 422, "invalid", f"attributes.{field}")
        batch = [good("p0", attributes={field: value})]
        assert_error(put_points(unchanged, batch), 422, "invalid", f"points[0].attributes.{field}")


def test_attribute_values_matching_the_schema_are_accepted(api: TestClient) -> None:
    values = {
        "kw": ["", "x"],
        "int": [0, -(2**63), 2**63 - 1],
        "flt": [0, 1, -1.5, 1e300],
        "flag": [True, False],
        "tags": [[], ["a", "b"]],
        "when": ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00+02:00", "2024-05-01T12:00:00.123Z"],
    }
    for field, accepted in values.items():
        for value in [*accepted, None]:
            response = put_points(api, [good("typed", attributes={field: value})])
            assert response.status_code == 200, (field, value, response.text)


def test_attributes_over_the_size_limit_are_422(unchanged: TestClient) -> None:
    batch = [good("n0", attributes={"big": "x" * 70_000})]
    assert_error(put_points(unchanged, batch), 422, "invalid", "points[0].attributes")


# -- atomicity --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "last",
    [
        {"id": "n9", "vector": [1, 2, 3]},
        {"id": "n9", "vector": [1, 2, 3, 1e39]},
        {"id": "n9", "vector": [0, 0, 0, 0]},
        {"id": "", "vector": [1, 2, 3, 4]},
        {"id": "n9", "vector": [1, 2, 3, 4], "attributes": {"int": "one"}},
        {"id": "n9", "vector": [1, 2, 3, 4], "shared_with": ["$owner"]},
        {"id": "n9", "vector": [1, 2, 3, 4], "shared_with": ["bad\n"]},
        {"id": "n0", "vector": [1, 2, 3, 4]},
    ],
    ids=["dim", "overflow", "zero", "empty-id", "schema", "self-grant", "bad-grantee", "dup"],
)
def test_batch_with_only_the_last_point_bad_changes_nothing(
    unchanged: TestClient, last: dict[str, Any]
) -> None:
    batch = [
        {
            "id": "p0",
            "vector": [9, 9, 9, 9],
            "attributes": {"kw": "overwritten"},
            "shared_with": [],
        },
        {"id": "p1", "vector": [8, 8, 8, 8], "shared_with": ["carol"]},
        *[good(f"n{i}", shared_with=["dave"]) for i in range(8)],
        last,
    ]
    for tenant in ("alice", "newcomer"):
        if last.get("shared_with") == ["$owner"]:
            batch[-1] = {**last, "shared_with": [tenant]}
        response = put_points(unchanged, batch, tenant=tenant)
        assert_error(response, 422, "invalid", "points[10]")
    for name in ("carol", "dave", "newcomer"):  # no tenant was created on the way
        assert_error(unchanged.get(tenant_url(C, name)), 404, "not_found")


# -- not found --------------------------------------------------------------------------


def test_unknown_collection_is_404(unchanged: TestClient) -> None:
    response = unchanged.put(points_url("nope", "alice"), json={"points": [good()]})
    assert_error(response, 404, "not_found")
    assert_error(unchanged.get(point_url("nope", "alice", "p0")), 404, "not_found")
    response = unchanged.post(f"{tenant_url('nope', 'alice')}/query", json={"vector": [1, 0, 0, 0]})
    assert_error(response, 404, "not_found")


def test_unknown_tenant_or_point_is_404(unchanged: TestClient) -> None:
    assert_error(unchanged.get(tenant_url(C, "zed")), 404, "not_found")
    assert_error(unchanged.get(point_url(C, "zed", "p0")), 404, "not_found")
    assert_error(unchanged.get(point_url(C, "alice", "zz")), 404, "not_found")
    response = unchanged.patch(point_url(C, "alice", "zz"), json={"attributes": {"kw": "x"}})
    assert_error(response, 404, "not_found")
    response = unchanged.post(f"{tenant_url(C, 'zed')}/query", json={"vector": [1, 0, 0, 0]})
    assert_error(response, 404, "not_found")
    assert_error(unchanged.post(f"{points_url(C, 'zed')}/count", json={}), 404, "not_found")


# -- query parameters -------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, -1, 1001, 10**9])
def test_k_out_of_range_is_422(unchanged: TestClient, k: int) -> None:
    vector = [1, 0, 0, 0]
    query = f"{tenant_url(C, 'alice')}/query"
    assert_error(unchanged.post(query, json={"vector": vector, "k": k}), 422, "invalid", "k")
    response = unchanged.post(f"{collection_url(C)}/query", json={"vector": vector, "k": k})
    assert_error(response, 422, "invalid", "k")
    batch = {"queries": [{"vector": vector}, {"vector": vector, "k": k}]}
    response = unchanged.post(f"{query}/batch", json=batch)
    assert_error(response, 422, "invalid", "queries[1].k")


@pytest.mark.parametrize("k", [1.5, None, [10]])
def test_non_integer_k_is_422(unchanged: TestClient, k: Any) -> None:
    response = unchanged.post(
        f"{tenant_url(C, 'alice')}/query", json={"vector": [1, 0, 0, 0], "k": k}
    )
    assert_error(response, 422, "invalid", "k")


@pytest.mark.parametrize("k", [True, "10"])
def test_boolean_or_string_k_is_422(unchanged: TestClient, k: Any) -> None:
    response = unchanged.post(
        f"{tenant_url(C, 'alice')}/query", json={"vector": [1, 0, 0, 0], "k": k}
    )
    assert_error(response, 422, "invalid", "k")


def test_k_of_1000_is_accepted(api: TestClient) -> None:
    response = api.post(f"{tenant_url(C, 'alice')}/query", json={"vector": [1, 0, 0, 0], "k": 1000})
    assert response.status_code == 200
    assert len(response.json()["results"]) == 2  # alice's own; bob's b0 is not shared


def test_query_option_errors_are_422(unchanged: TestClient) -> None:
    url = f"{tenant_url(C, 'alice')}/query"
    vector = [1, 0, 0, 0]
    assert_error(
        unchanged.post(url, json={"vector": vector, "include": ["ids"]}),
        422,
        "invalid",
        "include[0]",
    )
    assert_error(unchanged.post(url, json={"vector": vector, "ef": 0}), 422, "invalid", "ef")
    assert_error(unchanged.post(url, json={"k": 3}), 422, "invalid", "vector")
    assert_error(unchanged.post(f"{url}/batch", json={"queries": []}), 422, "invalid", "queries")
    too_many = {"queries": [{"vector": vector}] * 101}
    assert_error(unchanged.post(f"{url}/batch", json=too_many), 422, "invalid", "queries")
    admin = {"vector": vector, "tenants": ["alice", "ghost"]}
    assert_error(unchanged.post(f"{collection_url(C)}/query", json=admin), 404, "not_found")


# -- malformed bodies and unknown fields ------------------------------------------------


def _body_routes() -> list[tuple[str, str]]:
    return [
        ("POST", "/v1/collections"),
        ("PUT", points_url(C, "alice")),
        ("PATCH", point_url(C, "alice", "p0")),
        ("POST", f"{points_url(C, 'alice')}/delete"),
        ("POST", f"{point_url(C, 'alice', 'p0')}/grants"),
        ("POST", f"{points_url(C, 'alice')}/scroll"),
        ("POST", f"{tenant_url(C, 'alice')}/query"),
        ("POST", f"{tenant_url(C, 'alice')}/query/batch"),
        ("POST", f"{collection_url(C)}/query"),
    ]


@pytest.mark.parametrize(
    "body", [b"{", b'{"points": [}', b"not json", b'{"a": 1}{', b"\xff\xfe", b"{'a': 1}"]
)
def test_malformed_json_is_400(unchanged: TestClient, body: bytes) -> None:
    for method, url in _body_routes():
        response = unchanged.request(method, url, content=body, headers=JSON)
        assert response.status_code == 400, (method, url, response.text)
        assert_error(response, 400, "malformed")


def test_empty_body_is_400(unchanged: TestClient) -> None:
    for method, url in _body_routes():
        response = unchanged.request(method, url, content=b"", headers=JSON)
        assert response.status_code == 400, (method, url, response.text)
        assert_error(response, 400, "malformed")


@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        ("PUT", points_url(C, "alice"), {"points": [good()], "filter": {}}, "filter"),
        ("PUT", points_url(C, "alice"), {"points": [good(payload={})]}, "points[0].payload"),
        ("POST", f"{points_url(C, 'alice')}/delete", {"ids": ["p0"], "where": {}}, "where"),
        ("PATCH", point_url(C, "alice", "p0"), {"attributes": {}, "vector": [1]}, "vector"),
        ("POST", f"{point_url(C, 'alice', 'p1')}/grants", {"tenant": "x", "role": "w"}, "role"),
        ("POST", f"{points_url(C, 'alice')}/scroll", {"where": {}}, "where"),
        ("POST", f"{points_url(C, 'alice')}/count", {"filters": {}}, "filters"),
        (
            "POST",
            f"{tenant_url(C, 'alice')}/query",
            {"vector": [1, 0, 0, 0], "where": {}},
            "where",
        ),
        (
            "POST",
            f"{tenant_url(C, 'alice')}/query/batch",
            {"queries": [{"vector": [1, 0, 0, 0], "top_k": 3}]},
            "queries[0].top_k",
        ),
        ("POST", f"{collection_url(C)}/query", {"vector": [1, 0, 0, 0], "tenant": "a"}, "tenant"),
    ],
)
def test_unknown_field_is_422(
    unchanged: TestClient, method: str, url: str, body: dict[str, Any], field: str
) -> None:
    response = unchanged.request(method, url, json=body)
    message = assert_error(response, 422, "invalid", field)
    assert "not permitted" in message


def test_delete_needs_exactly_one_of_ids_and_filter(unchanged: TestClient) -> None:
    url = f"{points_url(C, 'alice')}/delete"
    for body in ({}, {"ids": ["p0"], "filter": {"kw": "a"}}):
        message = assert_error(unchanged.post(url, json=body), 422, "invalid", "ids")
        assert "either `ids` or `filter`" in message


def test_body_of_the_wrong_json_type_is_422(unchanged: TestClient) -> None:
    assert_error(unchanged.put(points_url(C, "alice"), json=[good()]), 422, "invalid")
    response = unchanged.put(points_url(C, "alice"), json={"points": good()})
    assert_error(response, 422, "invalid", "points")
    assert_error(
        unchanged.put(points_url(C, "alice"), json={"points": []}), 422, "invalid", "points"
    )


# -- size limits ------------------------------------------------------------------------


def test_upsert_of_1001_points_is_413(unchanged: TestClient) -> None:
    batch = [good(f"n{i}") for i in range(1001)]
    message = assert_error(put_points(unchanged, batch), 413, "too_large", "points")
    assert "1001" in message and "1000" in message
    response = unchanged.post(
        f"{points_url(C, 'alice')}/delete", json={"ids": ["p0", *[f"n{i}" for i in range(1000)]]}
    )
    assert_error(response, 413, "too_large", "ids")


def test_upsert_of_1000_points_is_accepted(api: TestClient) -> None:
    response = put_points(api, [good(f"n{i}") for i in range(1000)])
    assert response.json() == {"created": 1000, "updated": 0}


@pytest.fixture
def small_client(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(tmp_path / "d", max_request_bytes=4096) as client:
        response = client.post("/v1/collections", json={"name": C, "dim": 4})
        assert response.status_code == 201
        client.put(points_url(C, "alice"), json={"points": [good("p0")]})
        yield client


def test_body_over_the_byte_limit_is_413(small_client: TestClient) -> None:
    before = state(small_client)
    big = {"points": [good(f"n{i}-{'x' * 40}") for i in range(60)]}
    response = small_client.put(points_url(C, "alice"), json=big)
    message = assert_error(response, 413, "too_large")
    assert "4096" in message

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        yield b'{"points": ['
        for i in range(60):
            yield b'{"id": "c%d", "vector": [1, 2, 3, 4], "attributes": {"pad": "%s"}},' % (
                i,
                b"y" * 40,
            )
        yield b'{"id": "last", "vector": [1, 2, 3, 4]}]}'

    response = small_client.put(points_url(C, "alice"), content=chunks(), headers=JSON)
    assert_error(response, 413, "too_large")
    response = small_client.post("/v1/collections", content=b" " * 5000, headers=JSON)
    assert_error(response, 413, "too_large")
    assert state(small_client) == before
    # Just under the limit still works.
    fits = {"points": [good(f"n{i}") for i in range(20)]}
    assert small_client.put(points_url(C, "alice"), json=fits).status_code == 200


# -- routes -----------------------------------------------------------------------------


def test_unknown_route_is_404_in_the_envelope(unchanged: TestClient) -> None:
    for method, url in [
        ("GET", "/"),
        ("GET", "/v2/collections"),
        ("GET", "/v1/collection"),
        ("POST", f"{points_url(C, 'alice')}/p0/nothing"),
        ("GET", f"{points_url(C, 'alice')}/a/b"),
    ]:
        message = assert_error(unchanged.request(method, url), 404, "not_found")
        assert "no route" in message


def test_wrong_method_is_405_in_the_envelope(unchanged: TestClient) -> None:
    for method, url in [
        ("DELETE", "/v1/collections"),
        ("PUT", collection_url(C)),
        ("POST", tenant_url(C, "alice")),
        ("DELETE", points_url(C, "alice")),
        ("GET", f"{tenant_url(C, 'alice')}/query"),
        ("PUT", f"{collection_url(C)}/query"),
    ]:
        response = unchanged.request(method, url)
        if response.status_code == 404:  # a route template this test assumed does not exist
            pytest.fail(f"{method} {url}: {response.text}")
        message = assert_error(response, 405, "method_not_allowed")
        assert method in message


def test_bad_query_parameters_are_422(unchanged: TestClient) -> None:
    response = unchanged.get(point_url(C, "alice", "p0"), params={"with_vector": "maybe"})
    assert_error(response, 422, "invalid", "with_vector")
    response = unchanged.get(f"{collection_url(C)}/tenants", params={"limit": "ten"})
    assert_error(response, 422, "invalid", "limit")


def test_scroll_cursor_that_is_not_a_cursor_is_422(unchanged: TestClient) -> None:
    response = unchanged.post(f"{points_url(C, 'alice')}/scroll", json={"cursor": "p0"})
    assert_error(response, 422, "invalid", "cursor")


def test_error_for_an_encoded_name_uses_the_decoded_name(unchanged: TestClient) -> None:
    name = "team/one+two@example.org"
    message = assert_error(unchanged.get(tenant_url(C, name)), 404, "not_found")
    assert name in message
    assert enc(name) not in message
