"""Sharing: a grant gives read access only; revoking takes it away; nothing else leaks."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import (
    assert_error,
    count,
    create_collection,
    get_point,
    point_url,
    points_url,
    query,
    scroll_all,
    tenant_url,
    upsert,
)

C = "docs"
ATTRS = {"section": "libs", "meta": {"x": 1}}


@pytest.fixture
def shared(client: TestClient) -> TestClient:
    """A owns `doc` (shared with B) and `secret` (not shared); B owns `mine`."""
    create_collection(client, C, 3, "l2")
    upsert(
        client,
        C,
        "A",
        [
            {"id": "doc", "vector": [1, 0, 0], "attributes": ATTRS, "shared_with": ["B"]},
            {"id": "secret", "vector": [1, 0.1, 0], "attributes": {"s": 1}},
        ],
    )
    upsert(client, C, "B", [{"id": "mine", "vector": [0, 0, 5]}])
    return client


def a_doc(client: TestClient) -> dict:
    response = get_point(client, C, "A", "doc", with_vector=True)
    assert response.status_code == 200, response.text
    return response.json()


def test_grantee_gets_the_point_with_owner_param(shared: TestClient) -> None:
    response = get_point(shared, C, "B", "doc", owner="A", with_vector=True)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": "doc",
        "owner": "A",
        "attributes": ATTRS,
        "vector": [1, 0, 0],
    }


def test_grantee_without_owner_param_looks_in_its_own_namespace(shared: TestClient) -> None:
    assert_error(get_point(shared, C, "B", "doc"), 404, "not_found")


def test_grantee_query_returns_the_point_with_its_owner(shared: TestClient) -> None:
    hits = query(shared, C, "B", [1, 0, 0], k=10)["results"]
    assert [(h["id"], h["owner"]) for h in hits] == [("doc", "A"), ("mine", "B")]
    assert hits[0]["distance"] == pytest.approx(0.0, abs=1e-6)
    assert hits[0]["attributes"] == ATTRS
    assert "shared_with" not in hits[0]


def test_grantee_count_and_scroll_include_the_point(shared: TestClient) -> None:
    assert count(shared, C, "B") == 2
    points, _ = scroll_all(shared, C, "B", limit=1)
    assert sorted((p["owner"], p["id"]) for p in points) == [("A", "doc"), ("B", "mine")]
    tenant = shared.get(tenant_url(C, "B")).json()
    assert tenant == {"name": "B", "points": 1, "shared_with_it": 1}


def test_shared_with_is_shown_to_the_owner_only(shared: TestClient) -> None:
    assert a_doc(shared)["shared_with"] == ["B"]
    assert "shared_with" not in get_point(shared, C, "B", "doc", owner="A").json()
    for point in scroll_all(shared, C, "B")[0]:
        if point["owner"] == "A":
            assert "shared_with" not in point
        else:
            assert point["shared_with"] == []
    hits = query(shared, C, "B", [1, 0, 0], include=["attributes", "vector"])["results"]
    assert all("shared_with" not in h for h in hits)


def test_grantee_cannot_patch_the_point(shared: TestClient) -> None:
    before = a_doc(shared)
    response = shared.patch(point_url(C, "B", "doc"), json={"attributes": {"section": "x"}})
    assert_error(response, 404, "not_found")
    response = shared.patch(
        point_url(C, "B", "doc"), params={"owner": "A"}, json={"attributes": {"section": "x"}}
    )
    assert_error(response, 404, "not_found")
    assert a_doc(shared) == before


def test_grantee_cannot_delete_the_point(shared: TestClient) -> None:
    before = a_doc(shared)
    response = shared.post(f"{points_url(C, 'B')}/delete", json={"ids": ["doc"]})
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": 0, "not_found": ["doc"]}
    assert a_doc(shared) == before
    assert count(shared, C, "B") == 2


def test_grantee_cannot_reshare_or_revoke_the_point(shared: TestClient) -> None:
    before = a_doc(shared)
    response = shared.post(f"{point_url(C, 'B', 'doc')}/grants", json={"tenant": "C"})
    assert_error(response, 404, "not_found")
    assert_error(shared.delete(f"{point_url(C, 'B', 'doc')}/grants/B"), 404, "not_found")
    assert a_doc(shared) == before
    assert_error(shared.get(tenant_url(C, "C")), 404, "not_found")  # C was not created
    assert get_point(shared, C, "B", "doc", owner="A").status_code == 200


def test_grantee_reupsert_of_the_id_creates_its_own_point(shared: TestClient) -> None:
    before = a_doc(shared)
    assert upsert(shared, C, "B", [{"id": "doc", "vector": [0, 1, 0]}])["created"] == 1
    assert a_doc(shared) == before
    assert get_point(shared, C, "B", "doc").json()["owner"] == "B"
    assert get_point(shared, C, "B", "doc", owner="A").json()["owner"] == "A"
    assert count(shared, C, "B") == 3


def test_revoke_removes_access(shared: TestClient) -> None:
    response = shared.delete(f"{point_url(C, 'A', 'doc')}/grants/B")
    assert response.status_code == 200, response.text
    assert response.json()["shared_with"] == []
    assert response.json()["owner"] == "A"
    assert_error(get_point(shared, C, "B", "doc", owner="A"), 404, "not_found")
    assert [h["id"] for h in query(shared, C, "B", [1, 0, 0])["results"]] == ["mine"]
    assert count(shared, C, "B") == 1
    assert [p["id"] for p in scroll_all(shared, C, "B")[0]] == ["mine"]
    assert shared.get(tenant_url(C, "B")).json()["shared_with_it"] == 0
    # The owner still has it; the tenant B still exists.
    assert a_doc(shared)["shared_with"] == []
    assert shared.get(tenant_url(C, "B")).status_code == 200


def test_revoke_of_a_missing_grant_is_404(shared: TestClient) -> None:
    shared.put(tenant_url(C, "C"))
    assert_error(shared.delete(f"{point_url(C, 'A', 'doc')}/grants/C"), 404, "not_found")
    assert_error(shared.delete(f"{point_url(C, 'A', 'doc')}/grants/nobody"), 404, "not_found")
    assert_error(shared.delete(f"{point_url(C, 'A', 'secret')}/grants/B"), 404, "not_found")
    assert_error(shared.delete(f"{point_url(C, 'A', 'ghost')}/grants/B"), 404, "not_found")
    assert shared.delete(f"{point_url(C, 'A', 'doc')}/grants/B").status_code == 200
    assert_error(shared.delete(f"{point_url(C, 'A', 'doc')}/grants/B"), 404, "not_found")
    assert_error(shared.get(tenant_url(C, "nobody")), 404, "not_found")


def test_granting_to_self_is_422(shared: TestClient) -> None:
    before = a_doc(shared)
    response = shared.post(f"{point_url(C, 'A', 'doc')}/grants", json={"tenant": "A"})
    assert_error(response, 422, "invalid", "tenant")
    assert a_doc(shared) == before


def test_grant_shares_creates_the_tenant_and_is_idempotent(shared: TestClient) -> None:
    url = f"{point_url(C, 'A', 'secret')}/grants"
    for _ in range(2):
        response = shared.post(url, json={"tenant": "team+c@example.org"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == "secret"
        assert body["owner"] == "A"
        assert body["shared_with"] == ["team+c@example.org"]
    tenant = shared.get(tenant_url(C, "team+c@example.org")).json()
    assert tenant == {"name": "team+c@example.org", "points": 0, "shared_with_it": 1}
    response = get_point(shared, C, "team+c@example.org", "secret", owner="A")
    assert response.json()["attributes"] == {"s": 1}


def test_grant_of_an_unknown_point_is_404(shared: TestClient) -> None:
    response = shared.post(f"{point_url(C, 'A', 'ghost')}/grants", json={"tenant": "B"})
    assert_error(response, 404, "not_found")


def test_other_tenants_point_is_404_never_403(shared: TestClient) -> None:
    unshared = get_point(shared, C, "B", "secret", owner="A")
    missing = get_point(shared, C, "B", "no-such-id", owner="A")
    assert_error(unshared, 404, "not_found")
    assert_error(missing, 404, "not_found")
    # The answer for an existing unshared point looks like the one for a missing id.
    assert unshared.json()["error"]["message"].replace("secret", "X") == missing.json()["error"][
        "message"
    ].replace("no-such-id", "X")
    assert_error(get_point(shared, C, "B", "secret"), 404, "not_found")
    assert_error(get_point(shared, C, "A", "mine", owner="B"), 404, "not_found")
    assert_error(get_point(shared, C, "B", "doc", owner="nobody"), 404, "not_found")


def test_grants_to_several_tenants_are_independent(shared: TestClient) -> None:
    for reader in ["C", "D/x"]:
        response = shared.post(f"{point_url(C, 'A', 'doc')}/grants", json={"tenant": reader})
        assert response.status_code == 200
    assert a_doc(shared)["shared_with"] == ["B", "C", "D/x"]
    assert shared.delete(f"{point_url(C, 'A', 'doc')}/grants/D%2Fx").status_code == 200
    assert a_doc(shared)["shared_with"] == ["B", "C"]
    for reader, readable in [("B", True), ("C", True), ("D/x", False)]:
        response = get_point(shared, C, reader, "doc", owner="A")
        assert response.status_code == (200 if readable else 404)
        ids = [h["id"] for h in query(shared, C, reader, [1, 0, 0])["results"]]
        assert ("doc" in ids) is readable


def test_admin_query_scoped_to_a_grantee_includes_shared_points(shared: TestClient) -> None:
    body = {"vector": [1, 0, 0], "k": 10, "tenants": ["B"]}
    hits = shared.post(f"/v1/collections/{C}/query", json=body).json()["results"]
    assert [(h["owner"], h["id"]) for h in hits] == [("A", "doc"), ("B", "mine")]
