"""Tenants: explicit creation, counts, pagination, awkward names, and the delete cascade."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import (
    assert_error,
    count,
    create_collection,
    enc,
    get_point,
    points_url,
    query,
    scroll_all,
    tenant_url,
    upsert,
)

C = "docs"
AWKWARD_NAMES = [
    "team+perl@lists.example.org",
    "org/team",
    "/leading-and-trailing/",
    "a//b",
    "ünïcødé/名前",
    "with space ? # & =",
    "550e8400-e29b-41d4-a716-446655440000",
]


@pytest.fixture
def docs(client: TestClient) -> TestClient:
    create_collection(client, C, 3)
    return client


def tenant(client: TestClient, name: str) -> dict:
    response = client.get(tenant_url(C, name))
    assert response.status_code == 200, response.text
    return response.json()


def test_put_creates_a_tenant_then_confirms_it(docs: TestClient) -> None:
    first = docs.put(tenant_url(C, "acme"))
    assert first.status_code == 201, first.text
    assert first.json() == {"name": "acme", "points": 0, "shared_with_it": 0}
    second = docs.put(tenant_url(C, "acme"))
    assert second.status_code == 200, second.text
    assert second.json() == first.json()
    assert docs.get(f"/v1/collections/{C}").json()["tenants"] == 1


def test_put_on_a_tenant_with_points_keeps_them(docs: TestClient) -> None:
    upsert(docs, C, "acme", [{"id": "1", "vector": [1, 0, 0]}])
    response = docs.put(tenant_url(C, "acme"))
    assert response.status_code == 200
    assert response.json() == {"name": "acme", "points": 1, "shared_with_it": 0}


def test_get_counts_owned_and_shared_points(docs: TestClient) -> None:
    upsert(
        docs,
        C,
        "a",
        [
            {"id": "1", "vector": [1, 0, 0], "shared_with": ["b", "c"]},
            {"id": "2", "vector": [0, 1, 0], "shared_with": ["b"]},
            {"id": "3", "vector": [0, 0, 1]},
        ],
    )
    upsert(docs, C, "b", [{"id": "1", "vector": [1, 1, 0]}])
    assert tenant(docs, "a") == {"name": "a", "points": 3, "shared_with_it": 0}
    assert tenant(docs, "b") == {"name": "b", "points": 1, "shared_with_it": 2}
    assert tenant(docs, "c") == {"name": "c", "points": 0, "shared_with_it": 1}


def test_first_write_or_being_shared_with_creates_a_tenant(docs: TestClient) -> None:
    assert_error(docs.get(tenant_url(C, "owner")), 404, "not_found")
    upsert(docs, C, "owner", [{"id": "1", "vector": [1, 0, 0], "shared_with": ["reader"]}])
    response = docs.post(f"{points_url(C, 'owner')}/1/grants", json={"tenant": "granted"})
    assert response.status_code == 200, response.text
    names = [t["name"] for t in docs.get(f"/v1/collections/{C}/tenants").json()["tenants"]]
    assert names == ["granted", "owner", "reader"]


def test_list_paginates_with_limit_and_cursor_and_counts(docs: TestClient) -> None:
    names = [f"tenant-{i:02d}" for i in range(25)]
    for i, name in enumerate(reversed(names)):  # created out of order: the list sorts by name
        points = [{"id": f"p{j}", "vector": [1, j, i]} for j in range(i % 4)]
        if points:
            upsert(docs, C, name, points)
        else:
            assert docs.put(tenant_url(C, name)).status_code == 201
    # tenant-24 shares one point with each of tenant-00..04.
    upsert(docs, C, "tenant-24", [{"id": "s", "vector": [0, 0, 1], "shared_with": names[:5]}])
    expected = {}
    for i, name in enumerate(reversed(names)):
        owned = (i % 4) + (1 if name == "tenant-24" else 0)
        expected[name] = {"name": name, "points": owned, "shared_with_it": 0}
    for name in names[:5]:
        expected[name]["shared_with_it"] = 1

    pages = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 10}
        if cursor is not None:
            params["cursor"] = cursor
        response = docs.get(f"/v1/collections/{C}/tenants", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["tenants"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 10
    assert [len(page) for page in pages] == [10, 10, 5]
    listed = [t for page in pages for t in page]
    assert [t["name"] for t in listed] == names
    assert listed == [expected[name] for name in names]


def test_list_limit_exactly_the_count_ends_without_cursor(docs: TestClient) -> None:
    for name in ["a", "b", "c"]:
        docs.put(tenant_url(C, name))
    body = docs.get(f"/v1/collections/{C}/tenants", params={"limit": 3}).json()
    assert [t["name"] for t in body["tenants"]] == ["a", "b", "c"]
    assert body["next_cursor"] is None
    body = docs.get(f"/v1/collections/{C}/tenants", params={"limit": 2}).json()
    assert [t["name"] for t in body["tenants"]] == ["a", "b"]
    rest = docs.get(f"/v1/collections/{C}/tenants", params={"cursor": body["next_cursor"]})
    assert rest.json() == {
        "tenants": [{"name": "c", "points": 0, "shared_with_it": 0}],
        "next_cursor": None,
    }


@pytest.mark.parametrize("limit", [0, 1001, -1])
def test_list_limit_out_of_range_is_422(docs: TestClient, limit: int) -> None:
    response = docs.get(f"/v1/collections/{C}/tenants", params={"limit": limit})
    assert_error(response, 422, "invalid", "limit")


def test_awkward_names_round_trip_percent_encoded(docs: TestClient) -> None:
    for i, name in enumerate(AWKWARD_NAMES):
        created = docs.put(tenant_url(C, name))
        assert created.status_code == 201, (name, created.text)
        assert created.json()["name"] == name
        upsert(docs, C, name, [{"id": f"x/{i}", "vector": [1, i, 0]}])
        assert tenant(docs, name) == {"name": name, "points": 1, "shared_with_it": 0}
        fetched = get_point(docs, C, name, f"x/{i}")
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["owner"] == name
        hits = query(docs, C, name, [1, i, 0])["results"]
        assert [(h["id"], h["owner"]) for h in hits] == [(f"x/{i}", name)]
    listed = docs.get(f"/v1/collections/{C}/tenants").json()["tenants"]
    assert sorted(t["name"] for t in listed) == sorted(AWKWARD_NAMES)
    # Slash-named tenants are distinct from the path they would split into.
    assert_error(docs.get(f"/v1/collections/{C}/tenants/org"), 404, "not_found")
    for name in AWKWARD_NAMES:
        deleted = docs.delete(tenant_url(C, name))
        assert deleted.status_code == 200, (name, deleted.text)
        assert deleted.json() == {"deleted": True, "points_deleted": 1}
    assert docs.get(f"/v1/collections/{C}/tenants").json()["tenants"] == []


def test_list_cursor_works_with_slashes_in_names(docs: TestClient) -> None:
    names = sorted(["a/1", "a/2", "a/3", "b+c@d.org", "b/é"])
    for name in names:
        docs.put(tenant_url(C, name))
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        body = docs.get(f"/v1/collections/{C}/tenants", params=params).json()
        seen += [t["name"] for t in body["tenants"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == names


def test_delete_removes_owned_points(docs: TestClient) -> None:
    upsert(docs, C, "a", [{"id": str(i), "vector": [1, i, 0]} for i in range(5)])
    upsert(docs, C, "b", [{"id": "0", "vector": [1, 0, 0]}])
    response = docs.delete(tenant_url(C, "a"))
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": True, "points_deleted": 5}
    assert_error(docs.get(tenant_url(C, "a")), 404, "not_found")
    assert_error(get_point(docs, C, "a", "0"), 404, "not_found")
    info = docs.get(f"/v1/collections/{C}").json()
    assert (info["points"], info["tenants"]) == (1, 1)
    # Recreating the tenant does not bring the points back.
    assert docs.put(tenant_url(C, "a")).status_code == 201
    assert count(docs, C, "a") == 0
    assert_error(get_point(docs, C, "a", "0"), 404, "not_found")
    # The other tenant's point with the same id is untouched.
    assert get_point(docs, C, "b", "0").status_code == 200


def test_deleted_owners_shared_points_disappear_for_grantees(docs: TestClient) -> None:
    upsert(
        docs,
        C,
        "a",
        [
            {"id": "shared", "vector": [1, 0, 0], "shared_with": ["b", "c"]},
            {"id": "private", "vector": [1, 0.1, 0]},
        ],
    )
    upsert(docs, C, "b", [{"id": "own", "vector": [0, 1, 0]}])
    assert count(docs, C, "b") == 2
    assert {h["owner"] for h in query(docs, C, "b", [1, 0, 0])["results"]} == {"a", "b"}

    assert docs.delete(tenant_url(C, "a")).json() == {"deleted": True, "points_deleted": 2}

    for grantee, left in [("b", ["own"]), ("c", [])]:
        assert_error(get_point(docs, C, grantee, "shared", owner="a"), 404, "not_found")
        assert count(docs, C, grantee) == len(left)
        points, _ = scroll_all(docs, C, grantee)
        assert [p["id"] for p in points] == left
        hits = query(docs, C, grantee, [1, 0, 0], k=10)["results"]
        assert [h["id"] for h in hits] == left
        assert tenant(docs, grantee)["shared_with_it"] == 0
    admin = docs.post(f"/v1/collections/{C}/query", json={"vector": [1, 0, 0], "k": 10}).json()
    assert [(h["owner"], h["id"]) for h in admin["results"]] == [("b", "own")]


def test_deleting_a_grantee_removes_grants_to_it(docs: TestClient) -> None:
    upsert(
        docs,
        C,
        "a",
        [
            {"id": "1", "vector": [1, 0, 0], "shared_with": ["b", "c"]},
            {"id": "2", "vector": [0, 1, 0], "shared_with": ["b"]},
        ],
    )
    upsert(docs, C, "b", [{"id": "mine", "vector": [0, 0, 1], "shared_with": ["c"]}])
    response = docs.delete(tenant_url(C, "b"))
    assert response.json() == {"deleted": True, "points_deleted": 1}

    assert get_point(docs, C, "a", "1").json()["shared_with"] == ["c"]
    assert get_point(docs, C, "a", "2").json()["shared_with"] == []
    assert tenant(docs, "c") == {"name": "c", "points": 0, "shared_with_it": 1}
    assert_error(get_point(docs, C, "c", "mine", owner="b"), 404, "not_found")

    # A new tenant with the old name gets none of the old grants.
    assert docs.put(tenant_url(C, "b")).status_code == 201
    assert tenant(docs, "b") == {"name": "b", "points": 0, "shared_with_it": 0}
    assert count(docs, C, "b") == 0
    assert_error(get_point(docs, C, "b", "1", owner="a"), 404, "not_found")
    assert query(docs, C, "b", [1, 0, 0])["results"] == []
    scoped = docs.post(
        f"/v1/collections/{C}/query", json={"vector": [1, 0, 0], "k": 10, "tenants": ["b"]}
    )
    assert scoped.json()["results"] == []


def test_delete_cascade_with_encoded_names(docs: TestClient) -> None:
    reader = "org/readers"
    for owner in ["team+perl@lists.example.org", "org/unit+1"]:
        upsert(docs, C, owner, [{"id": "a/b", "vector": [1, 0, 0], "shared_with": [reader]}])
        assert get_point(docs, C, reader, "a/b", owner=owner).json()["owner"] == owner
    assert count(docs, C, reader) == 2
    for left, owner in enumerate(["team+perl@lists.example.org", "org/unit+1"]):
        response = docs.delete(tenant_url(C, owner))
        assert response.json() == {"deleted": True, "points_deleted": 1}
        assert_error(get_point(docs, C, reader, "a/b", owner=owner), 404, "not_found")
        assert count(docs, C, reader) == 1 - left


def test_unknown_tenant_is_404(docs: TestClient) -> None:
    docs.put(tenant_url(C, "known"))
    for name in ["ghost", "Known", "known/", "team+perl@lists.example.org"]:
        assert_error(docs.get(tenant_url(C, name)), 404, "not_found")
        assert_error(docs.delete(tenant_url(C, name)), 404, "not_found")
    assert docs.delete(tenant_url(C, "known")).status_code == 200
    assert_error(docs.delete(tenant_url(C, "known")), 404, "not_found")


def test_unknown_tenant_reads_are_404(docs: TestClient) -> None:
    upsert(docs, C, "a", [{"id": "1", "vector": [1, 0, 0]}])
    base = points_url(C, "ghost")
    assert_error(docs.get(f"{base}/1"), 404, "not_found")
    assert_error(docs.get(f"{base}/1", params={"owner": "a"}), 404, "not_found")
    assert_error(docs.post(f"{base}/scroll", json={}), 404, "not_found")
    assert_error(docs.post(f"{base}/count", json={}), 404, "not_found")
    assert_error(docs.post(f"{base}/delete", json={"ids": ["1"]}), 404, "not_found")
    assert_error(docs.patch(f"{base}/1", json={"attributes": {}}), 404, "not_found")
    assert_error(docs.post(f"{base}/1/grants", json={"tenant": "a"}), 404, "not_found")
    vector = {"vector": [1, 0, 0]}
    assert_error(docs.post(f"{tenant_url(C, 'ghost')}/query", json=vector), 404, "not_found")
    batch = {"queries": [vector]}
    assert_error(docs.post(f"{tenant_url(C, 'ghost')}/query/batch", json=batch), 404, "not_found")
    admin = {**vector, "tenants": ["a", "ghost"]}
    assert_error(docs.post(f"/v1/collections/{C}/query", json=admin), 404, "not_found")
    # None of these created the tenant.
    assert_error(docs.get(tenant_url(C, "ghost")), 404, "not_found")
    assert [t["name"] for t in docs.get(f"/v1/collections/{C}/tenants").json()["tenants"]] == ["a"]


def test_tenant_name_limits(docs: TestClient) -> None:
    longest = "t" * 256
    assert docs.put(tenant_url(C, longest)).status_code == 201
    assert_error(docs.put(tenant_url(C, longest + "t")), 422, "invalid", "tenant")
    assert_error(docs.put(tenant_url(C, "é" * 129)), 422, "invalid", "tenant")
    assert [t["name"] for t in docs.get(f"/v1/collections/{C}/tenants").json()["tenants"]] == [
        longest
    ]


def test_encoded_name_segment_is_decoded_once(docs: TestClient) -> None:
    # "%2F" inside a name must stay the three characters when sent as %252F.
    name = "literal%2Fslash/and-real"
    docs.put(tenant_url(C, name))
    assert tenant(docs, name)["name"] == name
    assert enc(name) == "literal%252Fslash%2Fand-real"
