"""Tenant export/import as NDJSON on the in-process app: bit-exact round trips under a new
tenant name and into a new collection, header and line checks (422 naming the line, nothing
written), unknown tenants, chunked exports that skip points deleted meanwhile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from server.transfer import EXPORT_CHUNK_POINTS, export_tenant
from tests.api.helpers import create_collection, points_url, tenant_url
from tests.support import app_client

DIM = 6
SCHEMA = {"kind": "keyword", "n": "integer", "tags": "keyword[]"}
SOURCE = "acme/eu+ops@example.org"


def export_url(collection: str, tenant: str) -> str:
    return f"{tenant_url(collection, tenant)}/export"


def import_url(collection: str, tenant: str) -> str:
    return f"{tenant_url(collection, tenant)}/import"


def lines(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in body.splitlines()]


def tricky_vectors(n: int, seed: int = 0) -> np.ndarray:
    """float32 values whose decimal forms are easy to get wrong by one ulp."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    specials = np.array(
        [1e-38, 1e18, 1.1754944e-38, 0.1, 1 / 3, 16777217.0, -2.5e-45, 7e-45],
        dtype=np.float32,
    )
    vectors.flat[: len(specials)] = specials
    vectors[1] = np.nextafter(vectors[1], np.float32(np.inf))
    return vectors


def seed_tenant(client: TestClient, collection: str, tenant: str, n: int) -> np.ndarray:
    vectors = tricky_vectors(n)
    points = [
        {
            "id": f"doc/{i}" if i % 2 else f"p-{i:03d}",
            "vector": vectors[i].tolist(),
            "attributes": {"kind": f"k{i % 3}", "n": i, "tags": ["a", "b"], "nested": {"x": [i]}},
            "shared_with": ["team-b", "ü-reader"] if i % 3 == 0 else [],
        }
        for i in range(n)
    ]
    for start in range(0, n, 1000):
        response = client.put(
            points_url(collection, tenant), json={"points": points[start:][:1000]}
        )
        assert response.status_code == 200, response.text
    return vectors


def all_points(client: TestClient, collection: str, tenant: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        body = {"limit": 1000, "with_vector": True, "cursor": cursor}
        page = client.post(f"{points_url(collection, tenant)}/scroll", json=body).json()
        for point in page["points"]:
            if point["owner"] == tenant:
                found[point["id"]] = point
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def exported_points(client: TestClient, collection: str, tenant: str) -> list[bytes]:
    response = client.get(export_url(collection, tenant))
    assert response.status_code == 200, response.text
    return [line for line in response.content.splitlines() if b'"type":"point"' in line]


@pytest.fixture
def source(client: TestClient) -> bytes:
    create_collection(client, "docs", dim=DIM, schema=SCHEMA)
    seed_tenant(client, "docs", SOURCE, 40)
    response = client.get(export_url("docs", SOURCE))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    return response.content


def test_export_has_a_header_every_owned_point_and_an_end_line(
    client: TestClient, source: bytes
) -> None:
    records = lines(source)
    assert records[0] == {
        "type": "tenant",
        "version": 1,
        "collection": "docs",
        "tenant": SOURCE,
        "dim": DIM,
        "metric": "cosine",
        "points": 40,
    }
    assert records[-1] == {"type": "end", "points": 40}
    points = records[1:-1]
    assert [p["id"] for p in points] == sorted(p["id"] for p in points)
    assert {tuple(p) for p in points} == {("type", "id", "vector", "attributes", "shared_with")}
    # Points shared with the tenant are exported by their owner, not by it.
    client.put(
        points_url("docs", "other"),
        json={"points": [{"id": "x", "vector": [1.0] * DIM, "shared_with": [SOURCE]}]},
    )
    assert len(exported_points(client, "docs", SOURCE)) == 40


def test_round_trip_under_a_new_name_is_bit_exact(client: TestClient, source: bytes) -> None:
    response = client.post(import_url("docs", "copy"), content=source)
    assert response.status_code == 200, response.text
    assert response.json() == {"imported": 40}
    original, copy = all_points(client, "docs", SOURCE), all_points(client, "docs", "copy")
    assert original.keys() == copy.keys() and len(copy) == 40
    for point_id, point in original.items():
        twin = copy[point_id]
        a = np.asarray(point["vector"], dtype=np.float32)
        b = np.asarray(twin["vector"], dtype=np.float32)
        assert a.view(np.uint32).tolist() == b.view(np.uint32).tolist(), point_id
        assert twin["attributes"] == point["attributes"]
        assert twin["shared_with"] == point["shared_with"]
    assert exported_points(client, "docs", "copy") == exported_points(client, "docs", SOURCE)
    # Grants survive: the grantee reads the copy's point.
    shared = client.get(f"{points_url('docs', 'team-b')}/p-000", params={"owner": "copy"})
    assert shared.status_code == 200, shared.text
    # Re-running the import changes nothing (upserts).
    assert client.post(import_url("docs", "copy"), content=source).json() == {"imported": 40}
    assert client.get(tenant_url("docs", "copy")).json()["points"] == 40
    # And the same queries give the same answers.
    query = {"vector": [0.3, -1.0, 2.0, 0.5, 0.0, 1.5], "k": 10, "exact": True}
    a = client.post(f"{tenant_url('docs', SOURCE)}/query", json=query).json()["results"]
    b = client.post(f"{tenant_url('docs', 'copy')}/query", json=query).json()["results"]
    assert [(r["id"], r["distance"]) for r in a] == [(r["id"], r["distance"]) for r in b]


def test_round_trip_into_another_collection(client: TestClient, source: bytes) -> None:
    create_collection(client, "docs-2", dim=DIM, schema=SCHEMA)
    response = client.post(import_url("docs-2", SOURCE), content=source)
    assert response.status_code == 200, response.text
    assert exported_points(client, "docs-2", SOURCE) == exported_points(client, "docs", SOURCE)
    assert client.get(tenant_url("docs-2", SOURCE)).json()["points"] == 40


def test_header_must_match_the_collection(client: TestClient, source: bytes) -> None:
    create_collection(client, "wide", dim=DIM + 1)
    response = client.post(import_url("wide", SOURCE), content=source)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith(f"line 1: dim: the export has dim {DIM}")
    create_collection(client, "euclid", dim=DIM, metric="l2")
    response = client.post(import_url("euclid", SOURCE), content=source)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("line 1: metric")
    headless = b"\n".join(source.splitlines()[1:])
    response = client.post(import_url("docs", "t"), content=headless)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("line 1: expected the header")
    assert client.post(import_url("docs", "t"), content=b"").status_code == 422
    assert client.get(tenant_url("docs", "t")).status_code == 404


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r | {"vector": r["vector"][:-1]}, "vector: expected 6 dimensions, got 5"),
        (
            lambda r: r | {"vector": [*r["vector"][:-1], "x"]},
            "vector: expected an array of numbers",
        ),
        (lambda r: r | {"vector": [0.0] * DIM}, "vector: a zero vector"),
        (lambda r: r | {"attributes": {"n": "seven"}}, "attributes.n: expected integer"),
        (lambda r: r | {"id": ""}, "id: a point id must not be empty"),
        (lambda r: r | {"shared_with": ["copy"]}, "shared_with[0]: the point would be shared"),
        (lambda r: r | {"colour": "red"}, "colour: unknown field"),
        (lambda r: r | {"type": "pointe"}, 'type: expected "point" or "end"'),
        (lambda r: r | {"id": "doc/1"}, "id: duplicate id 'doc/1' (first on line 2)"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_imported(
    client: TestClient, source: bytes, mutate: Any, message: str
) -> None:
    raw = source.splitlines()
    raw[17] = orjson.dumps(mutate(orjson.loads(raw[17])))  # line 18
    response = client.post(import_url("docs", "copy"), content=b"\n".join(raw))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid"
    assert response.json()["error"]["message"].startswith(f"line 18: {message}")
    assert client.get(tenant_url("docs", "copy")).status_code == 404


def test_malformed_and_truncated_bodies(client: TestClient, source: bytes) -> None:
    raw = source.splitlines()
    cases = {
        b"\n".join([*raw[:5], b"{not json", *raw[5:]]): "line 6: not valid JSON",
        b"\n".join(raw[:-3]): "line 1: points: the header announces 40 points but 38 follow",
        b"\n".join([*raw[:-3], raw[-1]]): "line 40: the end line counts 40 points but 38",
        b"\n".join([*raw, raw[1]]): "line 43: nothing may follow the end line (line 42)",
        b"\n".join([raw[0], b"[1, 2]"]): "line 2: expected a JSON object",
    }
    for body, message in cases.items():
        response = client.post(import_url("docs", "copy"), content=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["message"].startswith(message)
    assert client.get(tenant_url("docs", "copy")).status_code == 404
    # Blank lines and CRLF are fine; without an end line, a matching header count is too.
    relaxed = b"\r\n".join([raw[0], b"", *raw[1:-1], b""])
    assert client.post(import_url("docs", "copy"), content=relaxed).json() == {"imported": 40}


def test_unknown_tenant_or_collection_is_404(client: TestClient, source: bytes) -> None:
    response = client.get(export_url("docs", "nobody"))
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "tenant 'nobody' not found in collection 'docs'",
    }
    assert client.get(export_url("nope", SOURCE)).status_code == 404
    assert client.post(import_url("nope", SOURCE), content=source).status_code == 404


def test_an_empty_tenant_round_trips(client: TestClient) -> None:
    create_collection(client, "docs", dim=DIM)
    assert client.put(tenant_url("docs", "empty")).status_code == 201
    body = client.get(export_url("docs", "empty")).content
    assert lines(body)[-1] == {"type": "end", "points": 0}
    assert client.post(import_url("docs", "empty-2"), content=body).json() == {"imported": 0}
    assert client.get(tenant_url("docs", "empty-2")).json()["points"] == 0


def test_large_imports_are_batched_and_validated_whole_first(tmp_path: Path) -> None:
    n = 2 * EXPORT_CHUNK_POINTS + 37
    with app_client(tmp_path / "data", max_batch_points=100) as client:
        create_collection(client, "docs", dim=DIM, schema=SCHEMA)
        seed_small = [
            orjson.dumps({"type": "point", "id": f"q{i}", "vector": [1.0] * DIM}) for i in range(n)
        ]
        header = orjson.dumps({"type": "tenant", "dim": DIM, "metric": "cosine"})
        bad = [header, *seed_small, b'{"type": "point", "id": "last", "vector": [1]}']
        response = client.post(import_url("docs", "big"), content=b"\n".join(bad))
        assert response.status_code == 422
        assert response.json()["error"]["message"].startswith(f"line {n + 2}: vector")
        assert client.get(tenant_url("docs", "big")).status_code == 404  # no batch was written
        good = b"\n".join([header, *seed_small])
        assert client.post(import_url("docs", "big"), content=good).json() == {"imported": n}
        assert client.get(tenant_url("docs", "big")).json()["points"] == n
        exported = lines(client.get(export_url("docs", "big")).content)
        assert len(exported) == n + 2 and exported[-1] == {"type": "end", "points": n}


def test_import_body_is_limited_by_max_request_bytes(tmp_path: Path) -> None:
    with app_client(tmp_path / "data", max_request_bytes=2048) as client:
        create_collection(client, "docs", dim=DIM)
        header = orjson.dumps({"type": "tenant", "dim": DIM, "metric": "cosine"})
        body = b"\n".join(
            [header]
            + [
                orjson.dumps({"type": "point", "id": f"p{i}", "vector": [1.0] * DIM})
                for i in range(60)
            ]
        )
        response = client.post(import_url("docs", "t"), content=body)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "too_large"


def test_export_reads_chunks_and_skips_points_deleted_meanwhile(client: TestClient) -> None:
    create_collection(client, "docs", dim=DIM)
    n = EXPORT_CHUNK_POINTS + 50
    points = [{"id": f"p{i:04d}", "vector": [1.0 + i] + [0.5] * (DIM - 1)} for i in range(n)]
    for start in range(0, n, 1000):
        client.put(points_url("docs", "t"), json={"points": points[start:][:1000]})
    collection = client.app.state.database.collection("docs")
    stream = export_tenant(collection, "t")
    header = orjson.loads(next(stream))
    assert header["points"] == n
    first = next(stream).splitlines()
    assert len(first) == EXPORT_CHUNK_POINTS  # one chunk per read lock
    # Delete points of the second chunk and add one before the stream reaches them.
    client.post(f"{points_url('docs', 't')}/delete", json={"ids": ["p0520", "p0521"]})
    client.put(points_url("docs", "t"), json={"points": [{"id": "zz", "vector": [1.0] * DIM}]})
    rest = [orjson.loads(line) for chunk in stream for line in chunk.splitlines()]
    assert rest[-1] == {"type": "end", "points": n - 2}
    ids = [r["id"] for r in rest[:-1]]
    assert len(ids) == n - EXPORT_CHUNK_POINTS - 2 and "p0520" not in ids and "zz" not in ids


def test_export_of_a_tenant_deleted_meanwhile_has_no_end_line(client: TestClient) -> None:
    create_collection(client, "docs", dim=DIM)
    n = EXPORT_CHUNK_POINTS + 10
    points = [{"id": f"p{i}", "vector": [1.0] * DIM} for i in range(n)]
    for start in range(0, n, 1000):
        client.put(points_url("docs", "t"), json={"points": points[start:][:1000]})
    stream = export_tenant(client.app.state.database.collection("docs"), "t")
    body = next(stream) + next(stream)
    assert client.delete(tenant_url("docs", "t")).status_code == 200
    body += b"".join(stream)
    assert b'"type":"end"' not in body
    response = client.post(import_url("docs", "t2"), content=body)
    assert response.status_code == 422
    assert "looks truncated" in response.json()["error"]["message"]


def test_routes_are_documented_in_openapi(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    tenant = "/v1/collections/{collection}/tenants/{tenant}"
    assert "application/x-ndjson" in paths[f"{tenant}/export"]["get"]["responses"]["200"]["content"]
    assert "application/x-ndjson" in paths[f"{tenant}/import"]["post"]["requestBody"]["content"]
