"""Points: upsert, fetch, merge-patch, delete, scroll, count; ids that need encoding."""

from __future__ import annotations

import numpy as np
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
    upsert,
)

C = "docs"
SCHEMA = {"section": "keyword", "size": "integer", "tags": "keyword[]"}


@pytest.fixture
def docs(client: TestClient) -> TestClient:
    create_collection(client, C, 4, "cosine", SCHEMA)
    return client


def test_upsert_counts_created_and_updated(docs: TestClient) -> None:
    points = [{"id": f"p{i}", "vector": [1, i, 0, 0]} for i in range(3)]
    assert upsert(docs, C, "a", points) == {"created": 3, "updated": 0}
    again = [{"id": "p0", "vector": [1, 1, 1, 1]}, {"id": "p2", "vector": [1, 2, 2, 2]}]
    again.append({"id": "p3", "vector": [0, 0, 0, 1]})
    assert upsert(docs, C, "a", again) == {"created": 1, "updated": 2}
    assert count(docs, C, "a") == 4
    assert docs.get(f"/v1/collections/{C}").json()["points"] == 4


def test_same_id_under_two_owners_is_two_points(docs: TestClient) -> None:
    assert upsert(docs, C, "a", [{"id": "x", "vector": [1, 0, 0, 0]}])["created"] == 1
    assert upsert(docs, C, "b", [{"id": "x", "vector": [0, 1, 0, 0]}])["created"] == 1
    a = get_point(docs, C, "a", "x", with_vector=True).json()
    b = get_point(docs, C, "b", "x", with_vector=True).json()
    assert (a["owner"], a["vector"]) == ("a", [1, 0, 0, 0])
    assert (b["owner"], b["vector"]) == ("b", [0, 1, 0, 0])


def test_reupsert_replaces_vector_and_attributes(docs: TestClient) -> None:
    upsert(
        docs,
        C,
        "a",
        [{"id": "p", "vector": [1, 0, 0, 0], "attributes": {"section": "libs", "extra": 1}}],
    )
    upsert(docs, C, "a", [{"id": "p", "vector": [0, 0, 1, 0], "attributes": {"size": 3}}])
    point = get_point(docs, C, "a", "p", with_vector=True).json()
    assert point["vector"] == [0, 0, 1, 0]
    assert point["attributes"] == {"size": 3}  # replaced, not merged
    hits = query(docs, C, "a", [0, 0, 1, 0], k=1)["results"]
    assert hits[0]["id"] == "p"
    assert hits[0]["distance"] == pytest.approx(0.0, abs=1e-6)
    upsert(docs, C, "a", [{"id": "p", "vector": [0, 0, 1, 0]}])
    assert get_point(docs, C, "a", "p").json()["attributes"] == {}


def test_omitted_shared_with_keeps_grants(docs: TestClient) -> None:
    upsert(docs, C, "a", [{"id": "p", "vector": [1, 0, 0, 0], "shared_with": ["b", "c"]}])
    upsert(docs, C, "a", [{"id": "p", "vector": [0, 1, 0, 0], "attributes": {"size": 1}}])
    assert get_point(docs, C, "a", "p").json()["shared_with"] == ["b", "c"]
    shared = get_point(docs, C, "b", "p", owner="a", with_vector=True)
    assert shared.status_code == 200
    assert shared.json()["vector"] == [0, 1, 0, 0]
    assert shared.json()["attributes"] == {"size": 1}


def test_given_shared_with_replaces_grants(docs: TestClient) -> None:
    upsert(docs, C, "a", [{"id": "p", "vector": [1, 0, 0, 0], "shared_with": ["b", "c"]}])
    upsert(docs, C, "a", [{"id": "p", "vector": [1, 0, 0, 0], "shared_with": ["c", "d"]}])
    assert get_point(docs, C, "a", "p").json()["shared_with"] == ["c", "d"]
    assert_error(get_point(docs, C, "b", "p", owner="a"), 404, "not_found")
    assert get_point(docs, C, "d", "p", owner="a").status_code == 200
    assert count(docs, C, "b") == 0
    upsert(docs, C, "a", [{"id": "p", "vector": [1, 0, 0, 0], "shared_with": []}])
    assert get_point(docs, C, "a", "p").json()["shared_with"] == []
    for reader in ["b", "c", "d"]:
        assert_error(get_point(docs, C, reader, "p", owner="a"), 404, "not_found")
        assert count(docs, C, reader) == 0


def test_duplicate_grantees_in_shared_with_count_once(docs: TestClient) -> None:
    upsert(docs, C, "a", [{"id": "p", "vector": [1, 0, 0, 0], "shared_with": ["b", "b"]}])
    assert get_point(docs, C, "a", "p").json()["shared_with"] == ["b"]
    assert count(docs, C, "b") == 1


def test_get_without_vector_omits_it(docs: TestClient) -> None:
    upsert(docs, C, "a", [{"id": "p", "vector": [1, 2, 3, 4], "attributes": {"section": "s"}}])
    response = get_point(docs, C, "a", "p")
    assert response.status_code == 200
    assert response.json() == {
        "id": "p",
        "owner": "a",
        "attributes": {"section": "s"},
        "shared_with": [],
    }
    explicit = docs.get(point_url(C, "a", "p"), params={"with_vector": "false"})
    assert "vector" not in explicit.json()


def test_vector_round_trips_exactly_as_float32(docs: TestClient) -> None:
    rng = np.random.default_rng(7)
    sent = [
        [0.1, -0.2, 1 / 3, 1e-7],
        # -1.8e19: near the largest float32 whose square (the squared length) is finite.
        [123456.789, -1.8e19, 1.17549435e-38, 0.30000001192092896],
        rng.normal(size=4).tolist(),
        [1, -1, 2**24 + 1, 5e-45],  # ints, beyond float32 integer precision, a subnormal
    ]
    upsert(docs, C, "a", [{"id": str(i), "vector": v} for i, v in enumerate(sent)])
    for i, vector in enumerate(sent):
        got = get_point(docs, C, "a", str(i), with_vector=True).json()["vector"]
        expected = np.asarray(vector, dtype=np.float32)
        assert np.asarray(got, dtype=np.float64).tolist() == expected.astype(np.float64).tolist()
        assert np.array_equal(np.asarray(got, dtype=np.float32), expected)


def test_patch_merges_attributes_rfc7386(docs: TestClient) -> None:
    original = {
        "section": "libs",
        "size": 10,
        "tags": ["a", "b"],
        "meta": {"author": "x", "nested": {"keep": 1, "drop": 2}, "list": [1, 2]},
        "gone": "soon",
    }
    upsert(docs, C, "a", [{"id": "p", "vector": [1, 2, 3, 4], "attributes": original}])
    patch = {
        "size": 11,
        "gone": None,
        "missing": None,
        "tags": ["c"],
        "new": {"k": "v"},
        "meta": {"author": None, "nested": {"drop": None, "add": True}, "list": [3]},
    }
    response = docs.patch(point_url(C, "a", "p"), json={"attributes": patch})
    assert response.status_code == 200, response.text
    expected = {
        "section": "libs",
        "size": 11,
        "tags": ["c"],
        "meta": {"nested": {"keep": 1, "add": True}, "list": [3]},
        "new": {"k": "v"},
    }
    body = response.json()
    assert body["attributes"] == expected
    assert body["owner"] == "a"
    assert body["id"] == "p"
    fetched = get_point(docs, C, "a", "p", with_vector=True).json()
    assert fetched["attributes"] == expected
    assert fetched["vector"] == [1, 2, 3, 4]


def test_patch_replaces_a_scalar_with_an_object_and_back(docs: TestClient) -> None:
    upsert(docs, C, "a", [{"id": "p", "vector": [1, 0, 0, 0], "attributes": {"x": 1}}])
    url = point_url(C, "a", "p")
    body = docs.patch(url, json={"attributes": {"x": {"y": {"z": None, "w": 1}}}}).json()
    assert body["attributes"] == {"x": {"y": {"w": 1}}}
    body = docs.patch(url, json={"attributes": {"x": "flat"}}).json()
    assert body["attributes"] == {"x": "flat"}
    body = docs.patch(url, json={"attributes": {}}).json()
    assert body["attributes"] == {"x": "flat"}


def test_patch_keeps_grants_and_is_visible_to_grantees(docs: TestClient) -> None:
    upsert(docs, C, "a", [{"id": "p", "vector": [1, 0, 0, 0], "shared_with": ["b"]}])
    body = docs.patch(point_url(C, "a", "p"), json={"attributes": {"section": "s"}}).json()
    assert body["shared_with"] == ["b"]
    shared = get_point(docs, C, "b", "p", owner="a").json()
    assert shared["attributes"] == {"section": "s"}


def test_patch_of_unknown_point_is_404(docs: TestClient) -> None:
    upsert(docs, C, "a", [{"id": "p", "vector": [1, 0, 0, 0]}])
    response = docs.patch(point_url(C, "a", "q"), json={"attributes": {"x": 1}})
    assert_error(response, 404, "not_found")


def test_patch_contradicting_schema_is_422_and_changes_nothing(docs: TestClient) -> None:
    upsert(docs, C, "a", [{"id": "p", "vector": [1, 0, 0, 0], "attributes": {"size": 1}}])
    response = docs.patch(point_url(C, "a", "p"), json={"attributes": {"size": "big", "x": 1}})
    assert_error(response, 422, "invalid", "attributes.size")
    assert get_point(docs, C, "a", "p").json()["attributes"] == {"size": 1}


def test_delete_by_ids_reports_deleted_and_not_found(docs: TestClient) -> None:
    upsert(docs, C, "a", [{"id": f"p{i}", "vector": [1, i, 0, 0]} for i in range(4)])
    upsert(docs, C, "b", [{"id": "p0", "vector": [1, 0, 0, 0]}])
    url = f"{points_url(C, 'a')}/delete"
    response = docs.post(url, json={"ids": ["p1", "nope", "p3", "p1", "other"]})
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": 2, "not_found": ["nope", "other"]}
    assert_error(get_point(docs, C, "a", "p1"), 404, "not_found")
    assert_error(get_point(docs, C, "a", "p3"), 404, "not_found")
    assert count(docs, C, "a") == 2
    assert count(docs, C, "b") == 1
    # Idempotent: deleting again deletes nothing and reports them missing.
    again = docs.post(url, json={"ids": ["p1", "p3"]})
    assert again.json() == {"deleted": 0, "not_found": ["p1", "p3"]}
    assert docs.post(url, json={"ids": []}).json() == {"deleted": 0, "not_found": []}
    assert sorted(p["id"] for p in scroll_all(docs, C, "a")[0]) == ["p0", "p2"]
    assert docs.get(f"/v1/collections/{C}").json()["points"] == 3


def test_deleted_point_leaves_queries_and_grantees(docs: TestClient) -> None:
    upsert(docs, C, "a", [{"id": "p", "vector": [1, 0, 0, 0], "shared_with": ["b"]}])
    upsert(docs, C, "a", [{"id": "q", "vector": [0, 1, 0, 0]}])
    docs.post(f"{points_url(C, 'a')}/delete", json={"ids": ["p"]})
    assert [h["id"] for h in query(docs, C, "a", [1, 0, 0, 0])["results"]] == ["q"]
    assert query(docs, C, "b", [1, 0, 0, 0])["results"] == []
    assert_error(get_point(docs, C, "b", "p", owner="a"), 404, "not_found")
    # Re-created with the same id, it is a new point without the old grants.
    assert upsert(docs, C, "a", [{"id": "p", "vector": [1, 0, 0, 0]}])["created"] == 1
    assert get_point(docs, C, "a", "p").json()["shared_with"] == []
    assert count(docs, C, "b") == 0


def test_scroll_pages_through_every_readable_point_once(docs: TestClient) -> None:
    own = [{"id": f"own-{i}", "vector": [1, i, 0, 0], "attributes": {"n": i}} for i in range(23)]
    upsert(docs, C, "t", own)
    for owner in ["o1", "o2/x", "o3"]:
        points = [
            {"id": f"{owner}-{i}", "vector": [0, 1, i, 0], "shared_with": ["t"] if i % 2 else []}
            for i in range(10)
        ]
        upsert(docs, C, owner, points)
    # Deletions leave holes in the label space; the cursor must skip them.
    docs.post(f"{points_url(C, 't')}/delete", json={"ids": ["own-3", "own-4", "own-20"]})
    docs.post(f"{points_url(C, 'o1')}/delete", json={"ids": ["o1-5"]})

    points, pages = scroll_all(docs, C, "t", limit=7)
    keys = [(p["owner"], p["id"]) for p in points]
    assert len(keys) == len(set(keys)), "a point was returned twice"
    expected = {("t", f"own-{i}") for i in range(23) if i not in (3, 4, 20)}
    expected |= {(o, f"{o}-{i}") for o in ["o1", "o2/x", "o3"] for i in (1, 3, 5, 7, 9)}
    expected -= {("o1", "o1-5")}
    assert set(keys) == expected
    assert len(points) == count(docs, C, "t") == 34
    assert pages == 5
    for point in points:
        if point["owner"] == "t":
            assert point["shared_with"] == []
            assert point["attributes"] == {"n": int(point["id"].split("-")[1])}
        else:
            assert "shared_with" not in point
        assert "vector" not in point


def test_scroll_with_vector_and_single_page(docs: TestClient) -> None:
    upsert(docs, C, "t", [{"id": str(i), "vector": [i, 1, 0, 0]} for i in range(3)])
    response = docs.post(f"{points_url(C, 't')}/scroll", json={"with_vector": True})
    assert response.status_code == 200
    points = response.json()["points"]
    assert {p["id"]: p["vector"] for p in points} == {str(i): [i, 1, 0, 0] for i in range(3)}
    empty = docs.post(f"{points_url(C, 'u')}/scroll", json={})
    assert empty.status_code == 404  # unknown tenant
    docs.put(f"/v1/collections/{C}/tenants/u")
    assert docs.post(f"{points_url(C, 'u')}/scroll", json={}).json()["points"] == []


def test_last_scroll_page_has_a_null_next_cursor(docs: TestClient) -> None:
    upsert(docs, C, "t", [{"id": str(i), "vector": [i, 1, 0, 0]} for i in range(3)])
    first = docs.post(f"{points_url(C, 't')}/scroll", json={"limit": 2}).json()
    assert isinstance(first["next_cursor"], str)
    last = docs.post(
        f"{points_url(C, 't')}/scroll", json={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert len(last["points"]) == 1
    assert last["next_cursor"] is None


@pytest.mark.parametrize("limit", [0, 1001])
def test_scroll_limit_out_of_range_is_422(docs: TestClient, limit: int) -> None:
    upsert(docs, C, "t", [{"id": "p", "vector": [1, 0, 0, 0]}])
    response = docs.post(f"{points_url(C, 't')}/scroll", json={"limit": limit})
    assert_error(response, 422, "invalid", "limit")


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", ""])
def test_scroll_garbage_cursor_is_422(docs: TestClient, cursor: str) -> None:
    upsert(docs, C, "t", [{"id": "p", "vector": [1, 0, 0, 0]}])
    response = docs.post(f"{points_url(C, 't')}/scroll", json={"cursor": cursor})
    assert_error(response, 422, "invalid", "cursor")


def test_scroll_cursor_beyond_the_label_range_is_422(docs: TestClient) -> None:
    upsert(docs, C, "t", [{"id": "p", "vector": [1, 0, 0, 0]}])
    lenient = TestClient(docs.app, raise_server_exceptions=False)  # the app is already running
    response = lenient.post(f"{points_url(C, 't')}/scroll", json={"cursor": "9" * 20})
    assert_error(response, 422, "invalid", "cursor")


def test_count_is_owned_plus_shared(docs: TestClient) -> None:
    upsert(docs, C, "a", [{"id": str(i), "vector": [1, i, 0, 0]} for i in range(5)])
    upsert(docs, C, "b", [{"id": "x", "vector": [1, 0, 0, 0], "shared_with": ["a"]}])
    assert count(docs, C, "a") == 6
    assert count(docs, C, "b") == 1
    no_body = docs.post(f"{points_url(C, 'a')}/count")
    assert no_body.status_code == 200
    assert no_body.json() == {"count": 6}


IDS = [
    "docs/readme.md",
    "/leading",
    "trailing/",
    "a//b",
    "ü/ñ/中文",
    "emoji 🐟 fish",
    "team+perl@lists.example.org",
    "q?x=1&y=#frag",
    "delete",
    "scroll",
    "count",
    "é" * 128,  # 256 bytes: the longest id
]


def test_ids_needing_encoding_work_on_every_route(docs: TestClient) -> None:
    points = [
        {"id": pid, "vector": [1, i, 0, 0], "attributes": {"i": i}} for i, pid in enumerate(IDS)
    ]
    assert upsert(docs, C, "a", points) == {"created": len(IDS), "updated": 0}
    for i, pid in enumerate(IDS):
        response = get_point(docs, C, "a", pid, with_vector=True)
        assert response.status_code == 200, (pid, response.text)
        assert response.json()["id"] == pid
        assert response.json()["vector"] == [1, i, 0, 0]
        patched = docs.patch(point_url(C, "a", pid), json={"attributes": {"p": True}})
        assert patched.status_code == 200, (pid, patched.text)
        assert patched.json()["attributes"] == {"i": i, "p": True}
        granted = docs.post(f"{point_url(C, 'a', pid)}/grants", json={"tenant": "r/1"})
        assert granted.status_code == 200, (pid, granted.text)
        shared = get_point(docs, C, "r/1", pid, owner="a")
        assert shared.status_code == 200, (pid, shared.text)
        assert shared.json()["id"] == pid
        revoked = docs.delete(f"{point_url(C, 'a', pid)}/grants/{'r%2F1'}")
        assert revoked.status_code == 200, (pid, revoked.text)
    assert sorted(p["id"] for p in scroll_all(docs, C, "a")[0]) == sorted(IDS)
    hits = query(docs, C, "a", [1, 0, 0, 0], k=len(IDS))["results"]
    assert sorted(h["id"] for h in hits) == sorted(IDS)
    response = docs.post(f"{points_url(C, 'a')}/delete", json={"ids": IDS})
    assert response.json() == {"deleted": len(IDS), "not_found": []}
    assert count(docs, C, "a") == 0


def test_slash_id_is_distinct_from_its_parts(docs: TestClient) -> None:
    upsert(docs, C, "a", [{"id": "x/y", "vector": [1, 0, 0, 0]}])
    assert_error(docs.get(f"{points_url(C, 'a')}/x"), 404, "not_found")
    assert_error(docs.get(f"{points_url(C, 'a')}/x/y"), 404, "not_found")
    assert docs.get(f"{points_url(C, 'a')}/x%2Fy").json()["id"] == "x/y"
    assert docs.get(f"{points_url(C, 'a')}/x%2fy").json()["id"] == "x/y"
