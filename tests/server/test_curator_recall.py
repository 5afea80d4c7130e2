"""Recall of the Curator index on the Debian set, through the in-process app, at default settings.

Load: every point but a held-out 1% (owner = `tenant`, `shared_with` = the point's debtags, so
each tag is a tenant that reads the points tagged with it), 1,000-point upserts, tenants in a
shuffled order. The default `curator_min_points` (10,000) is crossed early in the load, so the
tree trains in the background on the points present then, and the rest of the load goes through
the incremental path (place + insert per pair).

Queries: each held-out point's vector, as its owner and as each of its tags, for the tenants
that can read 1,000+ points (smaller ones are scanned exactly, by design), with the Curator
plan forced (the planner scans a tenant stored in runs of rows up to several thousand points:
`tests/index/test_planner.py`). The Curator's top-10 is compared with an exact query of the
same tenant; recall@10 is the mean over tenants of the
mean over their queries, and must be at least 0.95. The same after deleting 5% of the points and
revoking grants, and the answers must be the same, to the bit, after a restart.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
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
K = 10
BATCH = 1000
QUERY_BATCH = 100  # the batch endpoint's limit
MIN_TENANT = 1000  # the default curator_min_tenant_points
TARGET = 0.95

Key = tuple[str, str]  # (owner, id)


def tenant_url(tenant: str) -> str:
    return f"/v1/collections/{COLLECTION}/tenants/{quote(tenant, safe='')}"


def post(client: TestClient, url: str, body: dict[str, Any]) -> Any:
    response = client.post(
        url,
        content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def upsert(client: TestClient, tenant: str, rows: list[int], vectors, points) -> None:
    body = {
        "points": [
            {"id": points[i]["id"], "vector": vectors[i], "shared_with": points[i]["tags"]}
            for i in rows
        ]
    }
    response = client.put(
        f"{tenant_url(tenant)}/points",
        content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text


def run_queries(
    client: TestClient, tenant: str, vectors: np.ndarray, **options: Any
) -> list[dict[str, Any]]:
    """One response (hits and plan) per query vector, through the batch endpoint."""
    out = []
    for start in range(0, len(vectors), QUERY_BATCH):
        chunk = vectors[start : start + QUERY_BATCH]
        body = {
            "queries": [
                {"vector": v, "k": K, "include": [], "explain": True, **options} for v in chunk
            ]
        }
        out.extend(post(client, f"{tenant_url(tenant)}/query/batch", body)["queries"])
    return out


def keys_of(response: dict[str, Any]) -> list[Key]:
    return [(hit["owner"], hit["id"]) for hit in response["results"]]


class Debian:
    def __init__(self, debian_dir: Path):
        self.vectors, self.points = read_debian(debian_dir)
        rng = random.Random(20240611)
        self.held_out = sorted(rng.sample(range(len(self.points)), len(self.points) // 100))
        held = set(self.held_out)
        self.inserted = [i for i in range(len(self.points)) if i not in held]
        self.row_of: dict[Key, int] = {
            (self.points[i]["tenant"], self.points[i]["id"]): i for i in self.inserted
        }
        # Who may read each inserted row; kept in step with deletes and revokes.
        self.readable: dict[str, set[int]] = defaultdict(set)
        for i in self.inserted:
            for tenant in (self.points[i]["tenant"], *self.points[i]["tags"]):
                self.readable[tenant].add(i)
        self.pairs = sum(len(rows) for rows in self.readable.values())

    def scopes(self, i: int) -> list[str]:
        point = self.points[i]
        return [point["tenant"], *point["tags"]]

    def big_tenant_queries(self) -> dict[str, list[int]]:
        """Held-out rows to query, by tenant, for tenants that can read MIN_TENANT+ points."""
        queries: dict[str, list[int]] = defaultdict(list)
        for i in self.held_out:
            for tenant in self.scopes(i):
                if len(self.readable.get(tenant, ())) >= MIN_TENANT:
                    queries[tenant].append(i)
        return dict(queries)


def measure(
    client: TestClient, data: Debian, queries: dict[str, list[int]], what: str
) -> tuple[float, dict[str, list[dict[str, Any]]]]:
    """Recall@K (mean over tenants of the per-tenant mean); also the Curator responses."""
    per_tenant = {}
    every: list[float] = []
    responses = {}
    distances_computed = candidates = 0
    for tenant, rows in sorted(queries.items()):
        matrix = data.vectors[rows]
        curator = run_queries(client, tenant, matrix, strategy="curator")
        exact = run_queries(client, tenant, matrix, exact=True)
        readable = data.readable[tenant]
        recalls = []
        for got, truth in zip(curator, exact, strict=True):
            assert got["plan"]["strategy"] == "curator", (what, tenant)
            assert truth["plan"]["strategy"] == "exact", (what, tenant)
            assert got["plan"]["candidates"] == len(readable), (what, tenant)
            got_keys = keys_of(got)
            assert len(got_keys) == K and len(set(got_keys)) == K, (what, tenant)
            for key in got_keys:  # never a deleted, revoked or foreign point
                assert data.row_of.get(key) in readable, (what, tenant, key)
            truth_keys = set(keys_of(truth))
            recalls.append(len(truth_keys & set(got_keys)) / len(truth_keys))
            distances_computed += got["plan"]["distances_computed"]
            candidates += got["plan"]["candidates"]
        per_tenant[tenant] = float(np.mean(recalls))
        every.extend(recalls)
        responses[tenant] = curator
    recall = float(np.mean(list(per_tenant.values())))
    count = sum(len(rows) for rows in queries.values())
    worst = sorted(per_tenant.items(), key=lambda item: item[1])[:3]
    print(
        f"\n{what}: recall@{K} {recall:.4f} over {len(per_tenant)} tenants, {count} queries "
        f"(per query {np.mean(every):.4f}); distances computed "
        f"{distances_computed / candidates:.1%} of candidates; worst {worst}"
    )
    return recall, responses


def wait_trained(client: TestClient, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = client.get(f"/v1/collections/{COLLECTION}").json()
        if info["curator"]["trained"]:
            database = client.app.state.database  # type: ignore[attr-defined]
            assert database.collection(COLLECTION).curator.wait_trained(timeout_s)
            return client.get(f"/v1/collections/{COLLECTION}").json()
        time.sleep(0.05)
    raise TimeoutError("the Curator was not trained")


def test_curator_recall_on_debian(debian_dir: Path, tmp_path: Path) -> None:
    started = time.perf_counter()
    data = Debian(debian_dir)
    points = data.points
    by_owner: dict[str, list[int]] = defaultdict(list)
    for i in data.inserted:
        by_owner[points[i]["tenant"]].append(i)
    owners = sorted(by_owner)
    random.Random(5).shuffle(owners)  # not one maintainer after another: the tree trains early

    with app_client(tmp_path / "data") as client:
        # Curator defaults, and no HNSW graph: this test measures the Curator itself (with a
        # shared graph the planner would answer some big tenants from it instead).
        no_graphs = {"shared_graph_min_points": 10**9, "tenant_graph_min_points": 10**9}
        body = {
            "name": COLLECTION,
            "dim": data.vectors.shape[1],
            "metric": "cosine",
            "index": no_graphs,
        }
        response = client.post("/v1/collections", json=body)
        assert response.status_code == 201, response.text
        assert response.json()["index"]["curator_min_points"] == 10_000
        for owner in owners:
            rows = by_owner[owner]
            for start in range(0, len(rows), BATCH):
                upsert(client, owner, rows[start : start + BATCH], data.vectors, points)
        loaded = time.perf_counter()
        info = wait_trained(client)
        assert info["points"] == len(data.inserted)
        assert info["curator"]["pairs"] == data.pairs
        print(f"\nloaded {len(data.inserted)} points in {loaded - started:.1f} s; {info}")
        collection = client.app.state.database.collection(COLLECTION)  # type: ignore[attr-defined]

        queries = data.big_tenant_queries()
        assert len(queries) >= 20, sorted(queries)
        recall, _ = measure(client, data, queries, "loaded")
        assert recall >= TARGET

        # Tenants below the threshold are scanned exactly, whatever the tree holds for them.
        small = sorted({t for i in data.held_out for t in data.scopes(i)} - set(queries))
        small = [t for t in small if t in data.readable][:40]
        assert small
        for tenant in small:
            [response] = run_queries(client, tenant, data.vectors[data.held_out[:1]])
            assert response["plan"]["strategy"] == "exact", tenant
            assert len(response["results"]) == min(K, len(data.readable[tenant]))

        # Delete 5% of the points and revoke 2% of the grants on the remaining ones.
        rng = random.Random(99)
        deleted = sorted(rng.sample(data.inserted, len(data.inserted) // 20))
        deleted_by_owner: dict[str, list[int]] = defaultdict(list)
        for i in deleted:
            deleted_by_owner[points[i]["tenant"]].append(i)
        for owner, rows in deleted_by_owner.items():
            for start in range(0, len(rows), BATCH):
                ids = [points[i]["id"] for i in rows[start : start + BATCH]]
                result = post(client, f"{tenant_url(owner)}/points/delete", {"ids": ids})
                assert result["deleted"] == len(ids)
        deleted_set = set(deleted)
        for i in deleted:
            for tenant in data.scopes(i):
                data.readable[tenant].discard(i)
        grants = [
            (i, tag) for i in data.inserted if i not in deleted_set for tag in points[i]["tags"]
        ]
        big_tags = {t for t in queries if len(data.readable[t]) >= 2 * MIN_TENANT}
        revoked = rng.sample([g for g in grants if g[1] in big_tags], 300)
        revoked += rng.sample(grants, 100)
        revoked = sorted(set(revoked))
        for i, tag in revoked:
            owner, pid = points[i]["tenant"], points[i]["id"]
            url = f"{tenant_url(owner)}/points/{quote(pid, safe='')}/grants/{quote(tag, safe='')}"
            response = client.delete(url)
            assert response.status_code == 200, response.text
            data.readable[tag].discard(i)
        pairs_after = sum(len(rows) for rows in data.readable.values())
        assert client.get(f"/v1/collections/{COLLECTION}").json()["curator"]["pairs"] == (
            pairs_after
        )
        assert collection.curator.wait_trained(60)

        # A deleted point queried with its own vector as its owner, a revoked one as the tag
        # it was revoked from: the point would be the nearest; it must not come back.
        probes: dict[str, list[int]] = defaultdict(list)
        for i in deleted:
            owner = points[i]["tenant"]
            if len(data.readable.get(owner, ())) >= MIN_TENANT:
                probes[owner].append(i)
        for i, tag in revoked:
            probes[tag].append(i)
        probed = 0
        for tenant, rows in probes.items():
            big = len(data.readable.get(tenant, ())) >= MIN_TENANT  # still has the Curator plan
            options = {"strategy": "curator"} if big else {}
            for i, response in zip(
                rows, run_queries(client, tenant, data.vectors[rows], **options), strict=True
            ):
                gone = (points[i]["tenant"], points[i]["id"])
                assert gone not in keys_of(response), (tenant, gone)
                for key in keys_of(response):
                    assert data.row_of[key] in data.readable[tenant], (tenant, key)
                probed += response["plan"]["strategy"] == "curator"
        assert probed > 300, probed

        queries = data.big_tenant_queries()
        recall_after, before_restart = measure(client, data, queries, "after deletes/revokes")
        assert recall_after >= TARGET
        pairs = client.get(f"/v1/collections/{COLLECTION}").json()["curator"]["pairs"]
        tree = collection.curator.curator.tree.to_bytes()

    with app_client(tmp_path / "data") as client:
        info = client.get(f"/v1/collections/{COLLECTION}").json()
        assert info["curator"]["trained"] is True  # the persisted tree, not a new training
        assert info["curator"]["pairs"] == pairs == pairs_after
        assert info["points"] == len(data.inserted) - len(deleted)
        restored = client.app.state.database.collection(COLLECTION)  # type: ignore[attr-defined]
        assert restored.curator.curator.tree.to_bytes() == tree
        for tenant, rows in sorted(queries.items()):
            after_restart = run_queries(client, tenant, data.vectors[rows], strategy="curator")
            for before, after in zip(before_restart[tenant], after_restart, strict=True):
                assert after["plan"]["strategy"] == "curator"
                assert after["results"] == before["results"], tenant
                assert after["plan"]["distances_computed"] == before["plan"]["distances_computed"]
    print(f"total {time.perf_counter() - started:.1f} s")
