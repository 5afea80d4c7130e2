"""Tenant-scoped queries on the real Debian set match a numpy brute force, id for id.

Load (in-process app): the points of the 300 largest maintainer tenants (about 55,000 of the
63,666 points, 87%; the remaining 1,800 tenants own one to a few points each and would cost
one request apiece), owner = `tenant`, `shared_with` = the point's debtags (every tag becomes a
tenant that can read the points tagged with it), attributes section / priority /
installed_size_kb; upserts of at most 1,000 points per request. 200 of those points are held
out (not inserted) and used as queries, as the held-out point's own tenant and as one of its
tags; the answer must be the exact top-k over exactly the points that tenant can read.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from tests.support import app_client, read_debian

pytestmark = pytest.mark.slow

COLLECTION = "debian"
SCHEMA = {"section": "keyword", "priority": "keyword", "installed_size_kb": "integer"}
ATTRIBUTES = tuple(SCHEMA)
LARGEST_TENANTS = 300
HELD_OUT = 200
K = 10
BATCH = 1000


def tenant_url(tenant: str) -> str:
    return f"/v1/collections/{COLLECTION}/tenants/{quote(tenant, safe='')}"


def upsert(client: TestClient, tenant: str, rows: list[int], vectors, points) -> None:
    body = {
        "points": [
            {
                "id": points[i]["id"],
                "vector": vectors[i],
                "attributes": {name: points[i][name] for name in ATTRIBUTES},
                "shared_with": points[i]["tags"],
            }
            for i in rows
        ]
    }
    response = client.put(
        f"{tenant_url(tenant)}/points",
        content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"created": len(rows), "updated": 0}


def check_hits(
    hits: list[dict[str, Any]],
    readable: np.ndarray,
    query: np.ndarray,
    vectors: np.ndarray,
    norms: np.ndarray,
    points: list[dict[str, Any]],
    row_of: dict[tuple[str, str], int],
    what: str,
) -> None:
    """`hits` are the exact top-K of `query` among rows `readable` (ties in any order)."""
    distances = 1.0 - (vectors[readable] @ query) / (norms[readable] * np.linalg.norm(query))
    true = dict(zip(readable.tolist(), distances.tolist(), strict=True))
    order = np.argsort(distances, kind="stable")
    assert len(hits) == min(K, len(readable)), what
    rows = []
    for hit in hits:
        row = row_of.get((hit["owner"], hit["id"]))
        assert row is not None and row in true, f"{what}: {hit['owner']}/{hit['id']} unreadable"
        rows.append(row)
        assert hit["attributes"] == {name: points[row][name] for name in ATTRIBUTES}, what
    assert len(set(rows)) == len(rows), f"{what}: duplicate hits"
    got = np.asarray([hit["distance"] for hit in hits])
    np.testing.assert_allclose(got, [true[r] for r in rows], atol=2e-5, err_msg=what)
    np.testing.assert_allclose(got, distances[order[: len(hits)]], atol=2e-5, err_msg=what)
    # Every point strictly closer than the k-th (beyond float noise) must be among the hits.
    kth = distances[order[len(hits) - 1]]
    must = {int(readable[i]) for i in order if distances[i] < kth - 1e-4}
    assert must <= set(rows), f"{what}: missing {sorted(must - set(rows))}"


def test_tenant_queries_match_brute_force(debian_dir: Path, tmp_path: Path) -> None:
    vectors, points = read_debian(debian_dir)
    sizes = Counter(point["tenant"] for point in points)
    largest = {tenant for tenant, _ in sizes.most_common(LARGEST_TENANTS)}
    subset = [i for i, point in enumerate(points) if point["tenant"] in largest]
    rng = random.Random(1234)
    held_out = sorted(rng.sample(subset, HELD_OUT))
    held = set(held_out)
    inserted = np.asarray([i for i in subset if i not in held], dtype=np.int64)

    by_tenant: dict[str, list[int]] = defaultdict(list)
    readable_rows: dict[str, list[int]] = defaultdict(list)
    for i in inserted.tolist():
        tenant = points[i]["tenant"]
        by_tenant[tenant].append(i)
        readable_rows[tenant].append(i)
        for tag in points[i]["tags"]:
            readable_rows[tag].append(i)
    readable = {t: np.asarray(rows, dtype=np.int64) for t, rows in readable_rows.items()}
    row_of = {(points[i]["tenant"], points[i]["id"]): i for i in inserted.tolist()}
    norms = np.linalg.norm(vectors, axis=1)

    with app_client(tmp_path / "data") as client:
        # Exact queries only: no index would be used, so none is built in the background.
        no_indexes = {
            "curator_min_points": 10**9,
            "shared_graph_min_points": 10**9,
            "tenant_graph_min_points": 10**9,
        }
        body = {
            "name": COLLECTION,
            "dim": vectors.shape[1],
            "metric": "cosine",
            "schema": SCHEMA,
            "index": no_indexes,
        }
        assert client.post("/v1/collections", json=body).status_code == 201
        for tenant, rows in by_tenant.items():
            for start in range(0, len(rows), BATCH):
                upsert(client, tenant, rows[start : start + BATCH], vectors, points)
        info = client.get(f"/v1/collections/{COLLECTION}").json()
        assert info["points"] == len(inserted)
        assert info["tenants"] == len(readable)

        checked = {"owner": 0, "tag": 0, "admin": 0}
        for n, i in enumerate(held_out):
            query = vectors[i]
            owner = points[i]["tenant"]
            if owner not in readable:  # every point of the tenant was held out
                response = client.post(f"{tenant_url(owner)}/query", json={"vector": [0.1] * 384})
                assert response.status_code == 404, response.text
                continue
            scopes = [("owner", owner)]
            tags = [tag for tag in points[i]["tags"] if tag in readable]
            if tags:
                scopes.append(("tag", rng.choice(tags)))
            for kind, tenant in scopes:
                response = client.post(
                    f"{tenant_url(tenant)}/query",
                    json={
                        "vector": query.tolist(),
                        "k": K,
                        "include": ["attributes"],
                        "exact": True,
                    },
                )
                assert response.status_code == 200, response.text
                what = f"held-out {points[i]['id']} as {kind} {tenant}"
                check_hits(
                    response.json()["results"],
                    readable[tenant],
                    query,
                    vectors,
                    norms,
                    points,
                    row_of,
                    what,
                )
                checked[kind] += 1
            if n % 10 == 0:  # admin query over the union of the scopes
                tenants = [tenant for _, tenant in scopes]
                response = client.post(
                    f"/v1/collections/{COLLECTION}/query",
                    json={"vector": query.tolist(), "k": K, "tenants": tenants},
                )
                assert response.status_code == 200, response.text
                union = np.unique(np.concatenate([readable[t] for t in tenants]))
                check_hits(
                    response.json()["results"],
                    union,
                    query,
                    vectors,
                    norms,
                    points,
                    row_of,
                    f"admin {tenants}",
                )
                checked["admin"] += 1
        counts = {
            t: client.post(f"{tenant_url(t)}/points/count", json={}).json()["count"]
            for t in rng.sample(sorted(readable), 50)
        }
        assert counts == {t: len(readable[t]) for t in counts}
    assert checked["owner"] >= HELD_OUT - 5, checked
    assert checked["tag"] > 50, checked
